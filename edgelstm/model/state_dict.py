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
from . import arch as arch_text
from .layers import Activation, Affine, AttentionPool, CausalConv1d, Head, LayerNorm, Linear
from .spec import ModelSpec, RecurrentLayer

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
        self.arrays = arrays
        self.used: set[str] = set()

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
        elif cell := _CELL_KEY.match(key):
            cells.append(cell["prefix"])
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


def _module_of(prefix: str) -> str:
    """'encoder.lstm.' -> 'encoder.': the module the recurrent block belongs to."""
    parts = prefix.rstrip(".").split(".")
    parts = parts[:-2] if parts[-1].isdigit() else parts[:-1]   # a cell in a ModuleList: the list's owner
    return ".".join(parts) + "." if parts else ""


def _linear(reader: _Reader, prefix: str, n_in: int | None = None) -> Linear:
    w = reader.take(prefix + "weight")
    if w.ndim != 2 or (n_in is not None and w.shape[1] != n_in):
        raise ModelFormatError(f"linear {prefix.rstrip('.')!r}: weight has shape {tuple(w.shape)}"
                               + (f"; it should take {n_in} inputs here" if n_in is not None else ""))
    b = reader.take(prefix + "bias", (w.shape[0],), required=False)
    return Linear(w, np.zeros(w.shape[0], np.float32) if b is None else b, prefix.rstrip("."))


def _linear_candidates(reader: _Reader, n_in: int, within: str) -> list[str]:
    return sorted((k[: -len("weight")] for k, a in reader.arrays.items()
                   if k.endswith("weight") and k.startswith(within) and k not in reader.used
                   and a.ndim == 2 and a.shape[1] == n_in), key=_natural_key)


def _choose_head(reader: _Reader, last_out: int, head, within: str, kind: str) -> Linear | None:
    if head is False:
        return None
    candidates = _linear_candidates(reader, last_out, within)
    if head is not None:
        head = head if head.endswith(".") else head + "."
        if head not in candidates:
            raise ModelFormatError(f"no linear head {head!r} taking {last_out} inputs; candidates: {candidates}")
        candidates = [head]
    if not candidates:
        return None
    if len(candidates) > 1:
        options = " or ".join(f"head='{c}'" for c in candidates)
        both = ", ".join(f"{c.rstrip('.').replace('.', '_')}: linear({c.rstrip('.')})" for c in candidates)
        raise ModelFormatError(f"several Linear layers could be the head: {candidates}. Choose one with {options} "
                               f"(CLI: --head PREFIX), all of them with arch='{kind} > {{{both}}}', "
                               f"or head=False for none")
    return _linear(reader, candidates[0])
def _norm(reader: _Reader, which: str, given) -> Affine | None:
    make = Affine.normalise if which == "input" else Affine.denormalise
    if given is not None:
        return given if isinstance(given, Affine) else make(*given)
    keys = {name: [k for k in reader.arrays if k.endswith(f"{which}_{name}")] for name in ("mean", "std")}
    if not keys["mean"] and not keys["std"]:
        return None
    if len(keys["mean"]) != 1 or len(keys["std"]) != 1:
        raise ModelFormatError(f"expected one {which}_mean and one {which}_std buffer, found {keys}")
    return make(reader.take(keys["mean"][0]), reader.take(keys["std"][0]))


def _recurrent_block(reader: _Reader, modules, kind_prefix: tuple[str, str], below: int | None) -> list:
    kind, prefix = kind_prefix
    if kind == "cell":
        return [_layer(reader, prefix, "", below)]
    numbers = sorted(modules[prefix])
    if numbers != list(range(len(numbers))):
        missing = sorted(set(range(max(numbers) + 1)) - set(numbers))
        raise ModelFormatError(f"missing key '{prefix}weight_ih_l{missing[0]}': layers {numbers} of "
                               f"'{prefix}' are not numbered 0..n-1")
    layers = []
    for k in numbers:
        layers.append(_layer(reader, prefix, f"_l{k}", below))
        below = layers[-1].output_size
    return layers


def _graph_layer(reader: _Reader, item: arch_text.Item, size: int):
    """The layer `item` names, taking a vector of `size`."""
    p = item.prefix or ""
    if item.kind == "linear":
        return _linear(reader, p, size)
    if item.kind == "batchnorm":
        reader.take(p + "num_batches_tracked", required=False)
        w = reader.take(p + "weight", (size,), required=False)
        b = reader.take(p + "bias", (size,), required=False)
        return Affine.batch_norm(reader.take(p + "running_mean", (size,)), reader.take(p + "running_var", (size,)),
                                 1.0 if w is None else w, 0.0 if b is None else b,
                                 1e-5 if item.value is None else item.value, p.rstrip("."))
    if item.kind == "layernorm":
        w = reader.take(p + "weight", (size,), required=False)
        b = reader.take(p + "bias", (size,), required=False)
        return LayerNorm(np.ones(size) if w is None else w, np.zeros(size) if b is None else b,
                         1e-5 if item.value is None else item.value, p.rstrip("."))
    if item.kind == "conv":
        w = reader.take(p + "weight")
        if w.ndim != 3 or w.shape[1] != size:
            raise ModelFormatError(f"conv {p.rstrip('.')!r}: weight has shape {tuple(w.shape)}; expected "
                                   f"(out, {size}, kernel) (groups=1)")
        b = reader.take(p + "bias", (w.shape[0],), required=False)
        return CausalConv1d(w, np.zeros(w.shape[0]) if b is None else b,
                            1 if item.value is None else int(item.value), p.rstrip("."))
    if item.kind == "attention":
        score, n = [], size
        for s in item.score:
            score.append(_graph_layer(reader, s, n))
            n = score[-1].out_size
        return AttentionPool(tuple(score), "attention")
    return Activation(item.kind, size, 0.0 if item.value is None else item.value)


def _chain(reader: _Reader, items, size: int) -> tuple[tuple, int]:
    out = []
    for item in items:
        out.append(_graph_layer(reader, item, size))
        size = out[-1].out_size
    return tuple(out), size


def _from_arch(reader: _Reader, graph: arch_text.Graph, modules, cells) -> tuple:
    """(pre, recurrent layers, post, heads) as `graph` says, weights from the reader."""
    kinds = [i.kind in arch_text.RECURRENT for i in graph.chain]
    first, last = kinds.index(True), len(kinds) - 1 - kinds[::-1].index(True)
    blocks = _choose_blocks(modules, cells, [i.prefix for i in graph.chain[first:last + 1]]
                            if all(i.prefix for i in graph.chain[first:last + 1]) else None)
    pre_items, post_items = graph.chain[:first], graph.chain[last + 1:]
    in_size = None
    if pre_items:      # the input size is the first weighted layer's
        w = reader.arrays.get((pre_items[0].prefix or "") + ("running_mean" if pre_items[0].kind == "batchnorm"
                                                             else "weight"))
        if w is None:
            raise ModelFormatError(f"arch: the first item {pre_items[0].text()!r} must be a layer with weights")
        in_size = w.shape[-2] if pre_items[0].kind == "conv" else w.shape[-1]
    pre, size = _chain(reader, pre_items, in_size) if in_size is not None else ((), None)   # set iff pre_items
    layers: list = []
    for block in blocks:
        layers += _recurrent_block(reader, modules, block, layers[-1].output_size if layers else size)
    post, trunk = _chain(reader, post_items, layers[-1].output_size)
    heads = tuple(Head(name, _chain(reader, items, trunk)[0]) for name, items in graph.heads)
    return pre, layers, post, heads


def _suspects(reader: _Reader, in_size: int, out_sizes: set[int]) -> list[tuple[str, str, str]]:
    """Unused tensors that look like a layer on the path: (prefix, what, 'before'|'after') for a
    Linear, norm or convolution whose shapes chain with the model's input or output."""
    found = []
    for k, a in sorted(reader.arrays.items(), key=lambda kv: _natural_key(kv[0])):
        if k in reader.used or not k.endswith(("weight", "running_mean")) or a.dtype.kind != "f":
            continue
        prefix = k.rsplit(".", 1)[0] if "." in k else ""
        if a.ndim == 2 and a.shape[1] in out_sizes:
            found.append((prefix, f"Linear {a.shape[1]} -> {a.shape[0]}", "after"))
        elif a.ndim == 2 and a.shape[0] == in_size:
            found.append((prefix, f"Linear {a.shape[1]} -> {a.shape[0]}", "before"))
        elif a.ndim == 1 and (a.shape[0] == in_size or a.shape[0] in out_sizes and k.endswith("weight")):
            kind = "batchnorm" if prefix + ".running_mean" in reader.arrays else "layernorm"
            found.append((prefix, f"{kind} over {a.shape[0]}", "before" if a.shape[0] == in_size else "after"))
        elif a.ndim == 3 and a.shape[0] == in_size:
            found.append((prefix, f"Conv1d {a.shape[1]} -> {a.shape[0]}", "before"))
    return list(dict.fromkeys(found))


def spec_from_state_dict(obj, *, rnn=None, head=None, input_norm=None, output_norm=None, arch: str | None = None,
                         allow_unused: bool = False, source: dict | None = None) -> ModelSpec:
    """Build a ModelSpec from a state_dict or checkpoint.

    arch: the graph in the text form of edgelstm.model.arch, e.g.
      "lstm > linear(head.0) > relu > linear(head.3) > softmax"; without it, the model is the
      recurrent block(s) and at most one Linear head, and anything that looks like another
      layer on the path is an error that proposes an arch.
    rnn: prefix (or ordered list of prefixes) of the recurrent blocks, when not unambiguous.
    head: prefix of the nn.Linear head (e.g. 'fc.'), False for none, None to detect.
    input_norm/output_norm: Affine or (mean, std); by default taken from buffers named
      *input_mean/*input_std/*output_mean/*output_std when present.
    allow_unused: accept tensors that are not part of the streaming path (else an error).
    """
    reader = _Reader(find_state_dict(obj))
    modules, cells = _blocks(reader.arrays)
    if arch is not None:
        if rnn is not None or head is not None:
            raise ModelFormatError("arch= already says which recurrent blocks and heads to use; drop rnn=/head= "
                                   "(CLI: --rnn/--head/--no-head)")
        graph = arch_text.parse(arch)
        pre, layers, post, heads = _from_arch(reader, graph, modules, cells)
    else:
        blocks = _choose_blocks(modules, cells, rnn)
        layers = []
        for block in blocks:
            layers += _recurrent_block(reader, modules, block, layers[-1].output_size if layers else None)
        head_layer = _choose_head(reader, layers[-1].output_size, head, _module_of(blocks[-1][1]), layers[0].kind)
        pre, post, heads = (), (head_layer,) if head_layer is not None else (), ()
    in_norm, out_norm = _norm(reader, "input", input_norm), _norm(reader, "output", output_norm)
    if out_norm is not None and heads:
        raise ModelFormatError("output de-normalisation with several heads: put an affine in each head instead")
    spec = ModelSpec(tuple(layers), ((in_norm,) if in_norm else ()) + pre, post + ((out_norm,) if out_norm else ()),
                     heads, source=dict(source or {}))
    _refuse_unused(reader, spec, allow_unused, arch is not None)
    return spec


def _refuse_unused(reader: _Reader, spec: ModelSpec, allow_unused: bool, had_arch: bool) -> None:
    outs = {spec.layers[-1].output_size, spec.output_size}
    suspects = [] if had_arch else _suspects(reader, spec.layers[0].input_size, outs)
    if suspects and not allow_unused:
        listed = ", ".join(f"{p} ({what})" for p, what, _ in suspects[:6])
        raise ModelFormatError(
            f"the state_dict holds layers this model would skip: {listed}. A state_dict cannot say how they "
            f"connect or which activations sit between them; describe the model with arch=, e.g. "
            f"arch='{_proposal(reader, spec, suspects)}' (CLI: --arch '...'; put the activations your forward() uses "
            f"between the layers), or load the whole module or an ONNX file, which carry the graph.")
    unused = sorted(k for k, a in reader.arrays.items()
                    if k not in reader.used and a.dtype.kind == "f" and a.size)
    if unused and not allow_unused:
        hint = ("add them to arch=" if had_arch else
                "if they are not on the streaming path, pass allow_unused=True (CLI: --allow-unused)")
        raise ModelFormatError(
            f"tensors not used by the streaming model: {unused[:10]}{' ...' if len(unused) > 10 else ''}. "
            f"Running without them could silently give wrong outputs (e.g. a skipped input layer); {hint}.")


def _proposal(reader: _Reader, spec: ModelSpec, suspects: list[tuple[str, str, str]]) -> str:
    """A starting arch for the user to complete: the layers chained by their shapes,
    size-keeping norms first, so that every item gets the size it takes."""
    def item(prefix, what):
        return f"{what.split(' ', 1)[0].lower()}({prefix})".replace("conv1d(", "conv(")

    before = [item(p, w) for p, w, where in suspects if where == "before"]
    left = [(x.name, f"Linear {x.in_size} -> {x.out_size}") for x in spec.post if isinstance(x, Linear)]
    left += [(p, w) for p, w, where in suspects if where == "after"]
    after, size = [], spec.layers[-1].output_size
    while left:
        fits = [(p, w) for p, w in left if _takes(reader, p, w) == size]
        if not fits:
            after += [item(p, w) for p, w in left]
            break
        p, w = min(fits, key=lambda pw: not pw[1].endswith(f"over {size}"))   # a norm keeps the size: first
        after.append(item(p, w))
        left.remove((p, w))
        size = int(w.rsplit(" ", 1)[-1])
    return " > ".join(before + [spec.layers[0].kind] + after)


def _takes(reader: _Reader, prefix: str, what: str) -> int:
    w = reader.arrays[prefix + ".weight"]
    return int(w.shape[-1] if w.ndim == 2 else w.shape[0])
