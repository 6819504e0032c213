"""The in-memory model: recurrent layers, an optional linear head and normalisation.

Weights keep PyTorch's layout and gate order (LSTM rows i, f, g, o; GRU rows r, z, n), so a
spec can be checked against a state_dict by eye. Kernels pack their own layout from it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np

from ..errors import ModelFormatError

GATES = {"lstm": 4, "gru": 3}


def _frozen_f32(a: np.ndarray, name: str, shape: tuple[int, ...]) -> np.ndarray:
    arr = np.ascontiguousarray(a, dtype=np.float32)
    if arr.shape != shape:
        raise ModelFormatError(f"{name}: expected shape {shape}, got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ModelFormatError(f"{name}: holds NaN or Inf; the model file is damaged or the training diverged")
    arr = arr.copy()
    arr.flags.writeable = False
    return arr


@dataclass(frozen=True)
class RecurrentLayer:
    """One unidirectional LSTM or GRU layer in PyTorch's layout (G = 4 for LSTM, 3 for GRU)."""

    kind: str                   # "lstm" | "gru"
    input_size: int             # I
    hidden_size: int            # H
    w_ih: np.ndarray            # (G*H, I)
    w_hh: np.ndarray            # (G*H, P or H)
    b_ih: np.ndarray            # (G*H,)  zeros for bias=False
    b_hh: np.ndarray            # (G*H,)
    w_hr: np.ndarray | None = None  # (P, H) LSTM projection (proj_size=P), else None

    def __post_init__(self):
        if self.kind not in GATES:
            raise ModelFormatError(f"unknown layer kind {self.kind!r}; expected 'lstm' or 'gru'")
        if self.w_hr is not None and self.kind != "lstm":
            raise ModelFormatError("a projection (weight_hr) exists only for LSTM layers")
        g = GATES[self.kind] * self.hidden_size
        out = self.output_size
        object.__setattr__(self, "w_ih", _frozen_f32(self.w_ih, "weight_ih", (g, self.input_size)))
        object.__setattr__(self, "w_hh", _frozen_f32(self.w_hh, "weight_hh", (g, out)))
        object.__setattr__(self, "b_ih", _frozen_f32(self.b_ih, "bias_ih", (g,)))
        object.__setattr__(self, "b_hh", _frozen_f32(self.b_hh, "bias_hh", (g,)))
        if self.w_hr is not None:
            object.__setattr__(self, "w_hr", _frozen_f32(self.w_hr, "weight_hr", (out, self.hidden_size)))

    @property
    def proj_size(self) -> int:
        return 0 if self.w_hr is None else int(self.w_hr.shape[0])

    @property
    def output_size(self) -> int:
        """Size of h, the layer's output: proj_size when projected, else hidden_size."""
        return self.proj_size or self.hidden_size

    @property
    def state_sizes(self) -> tuple[int, int]:
        """(size of h, size of c); c is empty for a GRU."""
        return self.output_size, (self.hidden_size if self.kind == "lstm" else 0)

    def arrays(self) -> dict[str, np.ndarray]:
        out = {"w_ih": self.w_ih, "w_hh": self.w_hh, "b_ih": self.b_ih, "b_hh": self.b_hh}
        if self.w_hr is not None:
            out["w_hr"] = self.w_hr
        return out


@dataclass(frozen=True)
class Dense:
    """The linear head: y = weight @ h + bias."""

    weight: np.ndarray          # (O, H_last)
    bias: np.ndarray            # (O,)

    def __post_init__(self):
        w = np.asarray(self.weight)
        if w.ndim != 2:
            raise ModelFormatError(f"head weight must be 2-D (out, in), got shape {w.shape}")
        object.__setattr__(self, "weight", _frozen_f32(w, "head weight", w.shape))
        object.__setattr__(self, "bias", _frozen_f32(self.bias, "head bias", (w.shape[0],)))


@dataclass(frozen=True)
class Normalisation:
    """Per-feature affine map: normalise as (v - mean) / std, de-normalise as v * std + mean."""

    mean: np.ndarray            # (n,)
    std: np.ndarray             # (n,)

    def __post_init__(self):
        mean = np.atleast_1d(np.asarray(self.mean, dtype=np.float64))
        std = np.broadcast_to(np.atleast_1d(np.asarray(self.std, dtype=np.float64)), mean.shape)
        if not (std > 0).all():
            raise ModelFormatError("normalisation std must be > 0 for every feature")
        object.__setattr__(self, "mean", _frozen_f32(mean, "normalisation mean", mean.shape))
        object.__setattr__(self, "std", _frozen_f32(std, "normalisation std", mean.shape))


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to run the model; hyper-parameters follow from the array shapes."""

    layers: tuple[RecurrentLayer, ...]
    head: Dense | None = None
    input_norm: Normalisation | None = None
    output_norm: Normalisation | None = None
    source: dict = field(default_factory=dict, compare=False)  # provenance, not part of the hash

    def __post_init__(self):
        object.__setattr__(self, "layers", tuple(self.layers))
        if not self.layers:
            raise ModelFormatError("a model needs at least one recurrent layer")
        for k in range(1, len(self.layers)):
            below, layer = self.layers[k - 1], self.layers[k]
            if layer.input_size != below.output_size:
                raise ModelFormatError(
                    f"layer {k} expects input size {layer.input_size} but layer {k - 1} outputs "
                    f"{below.output_size}; the layers are not a stack"
                )
        if self.head is not None and self.head.weight.shape[1] != self.layers[-1].output_size:
            raise ModelFormatError(
                f"head expects {self.head.weight.shape[1]} inputs but the last layer outputs "
                f"{self.layers[-1].output_size}"
            )
        if self.input_norm is not None and self.input_norm.mean.shape != (self.input_size,):
            raise ModelFormatError(f"input normalisation must have {self.input_size} features")
        if self.output_norm is not None and self.output_norm.mean.shape != (self.output_size,):
            raise ModelFormatError(f"output normalisation must have {self.output_size} features")

    @property
    def input_size(self) -> int:
        return self.layers[0].input_size

    @property
    def output_size(self) -> int:
        return self.head.weight.shape[0] if self.head is not None else self.layers[-1].output_size

    @property
    def state_size(self) -> int:
        """Floats of recurrent state per stream (h and c of every layer)."""
        return sum(sum(layer.state_sizes) for layer in self.layers)

    def named_arrays(self) -> dict[str, np.ndarray]:
        """Every array under a stable name; the deploy file and the content hash use these names."""
        out = {}
        for k, layer in enumerate(self.layers):
            out.update({f"layers.{k}.{name}": a for name, a in layer.arrays().items()})
        if self.head is not None:
            out["head.weight"], out["head.bias"] = self.head.weight, self.head.bias
        for which, norm in (("input_norm", self.input_norm), ("output_norm", self.output_norm)):
            if norm is not None:
                out[f"{which}.mean"], out[f"{which}.std"] = norm.mean, norm.std
        return out

    def architecture(self) -> dict:
        """The hyper-parameters as JSON-ready data."""
        return {
            "layers": [
                {"kind": layer.kind, "input_size": layer.input_size, "hidden_size": layer.hidden_size,
                 "proj_size": layer.proj_size}
                for layer in self.layers
            ],
            "head": None if self.head is None else {"output_size": int(self.head.weight.shape[0])},
            "input_norm": self.input_norm is not None,
            "output_norm": self.output_norm is not None,
            "input_size": self.input_size,
            "output_size": self.output_size,
        }

    @property
    def parameter_count(self) -> int:
        return sum(a.size for a in self.named_arrays().values())

    def content_hash(self) -> str:
        """SHA-256 over the architecture and every weight: equal hash, equal model."""
        h = hashlib.sha256(json.dumps(self.architecture(), sort_keys=True).encode())
        for name, a in sorted(self.named_arrays().items()):
            h.update(name.encode())
            h.update(np.ascontiguousarray(a, dtype="<f4").tobytes())
        return h.hexdigest()

    def describe(self) -> str:
        """A short human-readable summary, one line per layer."""
        lines = []
        for k, layer in enumerate(self.layers):
            proj = f", proj {layer.proj_size}" if layer.proj_size else ""
            lines.append(f"  layer {k}: {layer.kind.upper()} {layer.input_size} -> {layer.hidden_size}{proj}")
        if self.head is not None:
            lines.append(f"  head:    Linear {self.head.weight.shape[1]} -> {self.head.weight.shape[0]}")
        if self.input_norm is not None:
            lines.append("  input normalisation: yes")
        if self.output_norm is not None:
            lines.append("  output de-normalisation: yes")
        return "\n".join(lines)
