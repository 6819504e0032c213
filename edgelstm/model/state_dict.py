"""Turn a PyTorch state_dict (as NumPy arrays) into a ModelSpec.

Finds the recurrent layers (nn.LSTM / nn.GRU modules, or a stack of LSTMCell / GRUCell) and
an optional nn.Linear head by key pattern and shape. Anything ambiguous, missing, mis-shaped
or left over is an error that names the keys and says how to choose.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np

from ..errors import ModelFormatError
from .spec import Dense, ModelSpec, Normalisation, RecurrentLayer

_MODULE_KEY = re.compile(r"^(?P<prefix>.*?)weight_ih_l(?P<layer>\d+)(?P<reverse>_reverse)?$")
_CELL_KEY = re.compile(r"^(?P<prefix>.*?)weight_ih$")
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "module")
_STRIP_PREFIXES = ("module.", "_orig_mod.")        # DataParallel, torch.compile
_NORM_NAMES = ("input_mean", "input_std", "output_mean", "output_std")


def _is_weights(obj) -> bool:
    return isinstance(obj, Mapping) and any(isinstance(v, np.ndarray) for v in obj.values())


def find_state_dict(obj) -> dict[str, np.ndarray]:
    """The arrays of a state_dict, unwrapping common checkpoint layouts and key prefixes."""
    if not isinstance(obj, Mapping):
        raise ModelFormatError(f"expected a state_dict or checkpoint dict, found {type(obj).__name__}")
    for key in _WRAPPER_KEYS:
        if _is_weights(obj.get(key)):
            obj = obj[key]
            break
    arrays = {str(k): v for k, v in obj.items() if isinstance(v, np.ndarray)}
    if not arrays:
        raise ModelFormatError(f"no tensors found; top-level keys are {sorted(map(str, obj))[:12]}. "
                               f"Save model.state_dict() or a dict holding it under 'state_dict'.")
    for prefix in _STRIP_PREFIXES:
        if all(k.startswith(prefix) for k in arrays):
            arrays = {k[len(prefix):]: v for k, v in arrays.items()}
    return arrays


def _natural_key(text: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


class _Reader:
    """Takes arrays out of the state dict by key, recording which were used."""

    def __init__(self, arrays: dict[str, np.ndarray]):
        self.arrays, self.used = arrays, set()

    def take(self, key: str, shape: tuple | None = None, required: bool = True):
        if key not in self.arrays:
            if required:
                raise ModelFormatError(f"missing key {key!r}" + (f" (expected shape {shape})" if shape else ""))
            return None
        arr = self.arrays[key]
        if shape is not None and tuple(arr.shape) != tuple(shape):
            raise ModelFormatError(f"{key!r} has shape {tuple(arr.shape)}; expected {tuple(shape)}")
        self.used.add(key)
        return arr


def _layer(reader: _Reader, prefix: str, suffix: str, input_size: int | None) -> RecurrentLayer:
    """One layer from keys `{prefix}weight_ih{suffix}` etc.; input_size None = take from weights."""
    w_hh = reader.take(f"{prefix}weight_hh{suffix}")
    w_hr = reader.take(f"{prefix}weight_hr{suffix}", required=False)
    if w_hh.ndim != 2:
        raise ModelFormatError(f"{prefix}weight_hh{suffix!r} must be 2-D, has shape {w_hh.shape}")
    hidden = w_hr.shape[1] if w_hr is not None else w_hh.shape[1]
    gates, rem = divmod(w_hh.shape[0], hidden)
    if rem or gates not in (3, 4):
        raise ModelFormatError(f"{prefix}weight_hh{suffix} has {w_hh.shape[0]} rows for hidden size "
                               f"{hidden}: neither LSTM (4H) nor GRU (3H)")
    kind = "lstm" if gates == 4 else "gru"
    if w_hr is not None:
        reader.take(f"{prefix}weight_hr{suffix}", (w_hh.shape[1], hidden))
    ih_key = f"{prefix}weight_ih{suffix}"
    w_ih = reader.arrays.get(ih_key)
    n_in = input_size if input_size is not None else (w_ih.shape[1] if w_ih is not None and w_ih.ndim == 2 else -1)
    w_ih = reader.take(ih_key, (gates * hidden, n_in))
    b_ih = reader.take(f"{prefix}bias_ih{suffix}", (gates * hidden,), required=False)
    b_hh = reader.take(f"{prefix}bias_hh{suffix}", (gates * hidden,), required=(b_ih is not None))
    if b_hh is not None and b_ih is None:
        raise ModelFormatError(f"{prefix}bias_hh{suffix} exists but {prefix}bias_ih{suffix} is missing")
    zeros = np.zeros(gates * hidden, np.float32)
    return RecurrentLayer(kind, n_in, hidden, w_ih, w_hh,
                          zeros if b_ih is None else b_ih, zeros if b_hh is None else b_hh, w_hr)


def _blocks(arrays) -> tuple[dict[str, list[int]], list[str]]:
    """Recurrent modules (prefix -> layer numbers) and cells (prefixes) found by key pattern."""
    modules: dict[str, list[int]] = {}
    cells = []
    for key in arrays:
        m = _MODULE_KEY.match(key)
        if m:
            if m["reverse"]:
                raise ModelFormatError(
                    f"{key!r}: the model is bidirectional. A bidirectional layer needs future inputs "
                    f"and cannot stream; train with bidirectional=False for streaming use.")
            modules.setdefault(m["prefix"], []).append(int(m["layer"]))
        elif _CELL_KEY.match(key):
            cells.append(_CELL_KEY.match(key)["prefix"])
    return modules, sorted(cells, key=_natural_key)


def _choose_blocks(modules, cells, rnn) -> list[tuple[str, str]]:
    """[(kind 'module'|'cell', prefix)] in stacking order."""
    found = [("module", p) for p in sorted(modules, key=_natural_key)] + [("cell", p) for p in cells]
    if not found:
        raise ModelFormatError("no recurrent layers found (no weight_ih_l0 or weight_ih keys): is this "
                               "an LSTM/GRU state_dict?")
    if rnn is not None:
        wanted = [rnn] if isinstance(rnn, str) else list(rnn)
        by_prefix = {p: kind for kind, p in found}
        for p in wanted:
            if p not in by_prefix:
                raise ModelFormatError(f"no recurrent block with prefix {p!r}; found {[p for _, p in found]}")
        return [(by_prefix[p], p) for p in wanted]
    if len(modules) == 1 and not cells:
        return found
    if not modules:
        return found            # a stack of cells, in natural order of their names
    raise ModelFormatError(
        f"several recurrent blocks found: {[p for _, p in found]}. Say which to stream, in order: "
        f"rnn=['{found[0][1]}', ...] (CLI: --rnn PREFIX, repeatable)")


def _choose_head(reader: _Reader, last_out: int, head) -> Dense | None:
    if head is False:
        return None
    candidates = sorted(
        k[: -len("weight")] for k, a in reader.arrays.items()
        if k.endswith("weight") and k not in reader.used and a.ndim == 2 and a.shape[1] == last_out
    )
    if head is not None:
        if head not in candidates:
            raise ModelFormatError(f"no linear head {head!r} taking {last_out} inputs; candidates: {candidates}")
        candidates = [head]
    if not candidates:
        return None
    if len(candidates) > 1:
        raise ModelFormatError(f"several possible linear heads {candidates}; choose one with head='{candidates[0]}' "
                               f"(CLI: --head PREFIX) or head=False for none")
    prefix = candidates[0]
    w = reader.take(prefix + "weight")
    b = reader.take(prefix + "bias", (w.shape[0],), required=False)
    return Dense(w, np.zeros(w.shape[0], np.float32) if b is None else b)


def _norm(reader: _Reader, which: str, given) -> Normalisation | None:
    if given is not None:
        return given if isinstance(given, Normalisation) else Normalisation(*given)
    keys = {name: [k for k in reader.arrays if k.endswith(f"{which}_{name}")] for name in ("mean", "std")}
    if not keys["mean"] and not keys["std"]:
        return None
    if len(keys["mean"]) != 1 or len(keys["std"]) != 1:
        raise ModelFormatError(f"expected one {which}_mean and one {which}_std buffer, found {keys}")
    return Normalisation(reader.take(keys["mean"][0]), reader.take(keys["std"][0]))


def spec_from_state_dict(obj, *, rnn=None, head=None, input_norm=None, output_norm=None,
                         allow_unused: bool = False, source: dict | None = None) -> ModelSpec:
    """Build a ModelSpec from a state_dict or checkpoint.

    rnn: prefix (or ordered list of prefixes) of the recurrent blocks, when not unambiguous.
    head: prefix of the nn.Linear head (e.g. 'fc.'), False for none, None to detect.
    input_norm/output_norm: Normalisation or (mean, std); by default taken from buffers named
      *input_mean/*input_std/*output_mean/*output_std when present.
    allow_unused: accept tensors that are not part of the streaming path (else an error).
    """
    reader = _Reader(find_state_dict(obj))
    modules, cells = _blocks(reader.arrays)
    layers: list[RecurrentLayer] = []
    for kind, prefix in _choose_blocks(modules, cells, rnn):
        below = layers[-1].output_size if layers else None
        if kind == "cell":
            layers.append(_layer(reader, prefix, "", below))
            continue
        numbers = sorted(modules[prefix])
        if numbers != list(range(len(numbers))):
            missing = sorted(set(range(max(numbers) + 1)) - set(numbers))
            raise ModelFormatError(f"missing key '{prefix}weight_ih_l{missing[0]}': layers {numbers} of "
                                   f"'{prefix}' are not numbered 0..n-1")
        for k in numbers:
            layers.append(_layer(reader, prefix, f"_l{k}", below))
            below = layers[-1].output_size
    head_layer = _choose_head(reader, layers[-1].output_size, head)
    in_norm, out_norm = _norm(reader, "input", input_norm), _norm(reader, "output", output_norm)
    unused = sorted(k for k, a in reader.arrays.items()
                    if k not in reader.used and a.dtype.kind == "f" and a.size)
    if unused and not allow_unused:
        raise ModelFormatError(
            f"tensors not used by the streaming model: {unused[:10]}{' ...' if len(unused) > 10 else ''}. "
            f"Running without them could silently give wrong outputs (e.g. a skipped input layer). "
            f"If they are not on the streaming path, pass allow_unused=True (CLI: --allow-unused).")
    return ModelSpec(tuple(layers), head_layer, in_norm, out_norm, source=dict(source or {}))
