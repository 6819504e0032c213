"""The layers around the recurrent core: small frozen classes, one per kind, PyTorch's layout.

A model is `pre` layers (on each input), the recurrent stack, `post` layers (on its output)
and optional named heads (each a chain on post's output, concatenated in order). Every layer
maps a vector to a vector, one step at a time; the two with per-stream state keep it in the
stream's state row after the recurrent layers' h and c:

  CausalConv1d   the last (K-1)*dilation inputs, oldest first          ((K-1)*d*C_in floats)
  AttentionPool  running max m, denominator d, weighted sum acc (n)    (n + 2 floats)

Dropout is the identity at inference and is never represented.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import ModelFormatError

# Elementwise activations, and the two that normalise over the vector.
ELEMENTWISE = ("relu", "leaky_relu", "elu", "tanh", "sigmoid", "gelu", "gelu_tanh", "silu")
VECTOR_WISE = ("softmax", "log_softmax")
ACTIVATIONS = ELEMENTWISE + VECTOR_WISE


def frozen_f32(a, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """A read-only float32 copy of `a`, refusing the wrong shape and NaN/Inf."""
    arr = np.array(a, dtype=np.float32)
    if shape is not None and arr.shape != tuple(shape):
        raise ModelFormatError(f"{name}: expected shape {tuple(shape)}, got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ModelFormatError(f"{name}: holds NaN or Inf; the model file is damaged or the training diverged")
    arr.flags.writeable = False
    return arr


def _size(n, name: str) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 0 < n <= 1 << 20:
        raise ModelFormatError(f"{name} must be an integer in 1..{1 << 20}, got {n!r}")
    return int(n)


@dataclass(frozen=True)
class Linear:
    """y = weight @ x + bias."""

    weight: np.ndarray          # (O, I)
    bias: np.ndarray            # (O,)   zeros for bias=False
    name: str = field(default="", compare=False)   # where it came from, e.g. 'head.0.'

    def __post_init__(self):
        w = np.asarray(self.weight)
        if w.ndim != 2 or 0 in w.shape:
            raise ModelFormatError(f"linear {self.name!r}: weight must be 2-D (out, in), got shape {w.shape}")
        object.__setattr__(self, "weight", frozen_f32(w, f"linear {self.name!r} weight"))
        object.__setattr__(self, "bias", frozen_f32(self.bias, f"linear {self.name!r} bias", (w.shape[0],)))

    in_size = property(lambda self: int(self.weight.shape[1]))
    out_size = property(lambda self: int(self.weight.shape[0]))


@dataclass(frozen=True)
class Affine:
    """y = (x - offset) * scale + shift, per feature: input normalisation, output
    de-normalisation and an eval-mode BatchNorm1d, each computed as its own formula reads."""

    offset: np.ndarray          # (n,)
    scale: np.ndarray           # (n,)
    shift: np.ndarray           # (n,)
    name: str = field(default="", compare=False)

    def __post_init__(self):
        values = [np.atleast_1d(np.asarray(getattr(self, a), dtype=np.float64)) for a in ("offset", "scale", "shift")]
        try:
            n = np.broadcast_shapes(*(v.shape for v in values))
        except ValueError:
            raise ModelFormatError(f"affine {self.name!r}: offset, scale and shift differ in length") from None
        if len(n) != 1 or not n[0]:
            raise ModelFormatError(f"affine {self.name!r}: expected a vector, got shape {n}")
        for attr, v in zip(("offset", "scale", "shift"), values):
            object.__setattr__(self, attr, frozen_f32(np.broadcast_to(v, n), f"affine {self.name!r} {attr}", n))

    @classmethod
    def normalise(cls, mean, std, name="input normalisation") -> Affine:
        """(x - mean) / std."""
        std = np.asarray(std, dtype=np.float64)
        if not (std > 0).all():
            raise ModelFormatError(f"{name}: std must be > 0 for every feature")
        return cls(mean, 1.0 / std, np.asarray(0.0), name)

    @classmethod
    def denormalise(cls, mean, std, name="output de-normalisation") -> Affine:
        """y * std + mean."""
        return cls(np.asarray(0.0), std, mean, name)

    @classmethod
    def batch_norm(cls, running_mean, running_var, weight, bias, eps: float, name="") -> Affine:
        """BatchNorm1d in eval mode: (x - mean) / sqrt(var + eps) * weight + bias."""
        var = np.asarray(running_var, dtype=np.float64)
        if (var < 0).any() or eps < 0:
            raise ModelFormatError(f"batch norm {name!r}: running_var and eps must be >= 0")
        return cls(running_mean, np.asarray(weight, np.float64) / np.sqrt(var + eps), bias, name)

    in_size = out_size = property(lambda self: int(self.offset.shape[0]))


@dataclass(frozen=True)
class LayerNorm:
    """(x - mean(x)) / sqrt(var(x) + eps) * weight + bias over the whole vector."""

    weight: np.ndarray          # (n,)
    bias: np.ndarray            # (n,)
    eps: float = 1e-5
    name: str = field(default="", compare=False)

    def __post_init__(self):
        w = np.atleast_1d(np.asarray(self.weight, dtype=np.float64))
        if w.ndim != 1 or not w.size:
            raise ModelFormatError(f"layer norm {self.name!r}: normalized_shape must be one dimension, got {w.shape}")
        object.__setattr__(self, "weight", frozen_f32(w, f"layer norm {self.name!r} weight"))
        b = np.broadcast_to(np.asarray(self.bias, dtype=np.float64), w.shape)
        object.__setattr__(self, "bias", frozen_f32(b, f"layer norm {self.name!r} bias", w.shape))
        if not (np.isfinite(self.eps) and self.eps > 0):
            raise ModelFormatError(f"layer norm {self.name!r}: eps must be > 0, got {self.eps}")
        object.__setattr__(self, "eps", float(self.eps))

    in_size = out_size = property(lambda self: int(self.weight.shape[0]))


@dataclass(frozen=True)
class Activation:
    """An activation over the vector: elementwise, or softmax / log-softmax over all of it.
    alpha is LeakyReLU's negative slope or ELU's alpha; size is the vector's length."""

    kind: str
    size: int
    alpha: float = 0.0

    def __post_init__(self):
        if self.kind not in ACTIVATIONS:
            raise ModelFormatError(f"unknown activation {self.kind!r}; supported: {', '.join(ACTIVATIONS)}")
        object.__setattr__(self, "size", _size(self.size, f"{self.kind} size"))
        if not np.isfinite(self.alpha):
            raise ModelFormatError(f"{self.kind}: alpha must be finite")
        object.__setattr__(self, "alpha", float(self.alpha))

    in_size = out_size = property(lambda self: self.size)


@dataclass(frozen=True)
class CausalConv1d:
    """A Conv1d over time that sees only the present and the past (left padding (K-1)*dilation,
    stride 1, groups 1): out_t = bias + sum_k weight[:, :, k] @ x[t - (K-1-k)*dilation]."""

    weight: np.ndarray          # (C_out, C_in, K) as nn.Conv1d stores it
    bias: np.ndarray            # (C_out,)
    dilation: int = 1
    name: str = field(default="", compare=False)

    def __post_init__(self):
        w = np.asarray(self.weight)
        if w.ndim != 3 or 0 in w.shape:
            raise ModelFormatError(f"conv1d {self.name!r}: weight must be (out, in, kernel), got shape {w.shape}")
        object.__setattr__(self, "weight", frozen_f32(w, f"conv1d {self.name!r} weight"))
        object.__setattr__(self, "bias", frozen_f32(self.bias, f"conv1d {self.name!r} bias", (w.shape[0],)))
        object.__setattr__(self, "dilation", _size(self.dilation, f"conv1d {self.name!r} dilation"))

    in_size = property(lambda self: int(self.weight.shape[1]))
    out_size = property(lambda self: int(self.weight.shape[0]))
    kernel_size = property(lambda self: int(self.weight.shape[2]))

    @property
    def history(self) -> int:
        """Past inputs kept per stream."""
        return (self.kernel_size - 1) * self.dilation

    @property
    def state_size(self) -> int:
        return self.history * self.in_size


@dataclass(frozen=True)
class AttentionPool:
    """Attention pooling over every output seen so far, computed online:
    s_t = score(v_t) (a chain of Linear/elementwise layers ending in one value),
    out_t = sum_{u<=t} softmax(s)_u v_u, kept as a running max, denominator and weighted sum."""

    score: tuple                # (Linear | Activation(elementwise) | ..., ...) mapping n -> 1
    name: str = field(default="", compare=False)

    def __post_init__(self):
        score = tuple(self.score)
        if not score or not all(isinstance(s, Linear) or (isinstance(s, Activation) and s.kind in ELEMENTWISE)
                                for s in score):
            raise ModelFormatError(f"attention pooling {self.name!r}: the score must be Linear layers and "
                                   f"elementwise activations")
        check_chain(score, score[0].in_size, f"attention score {self.name!r}")
        if score[-1].out_size != 1:
            raise ModelFormatError(f"attention pooling {self.name!r}: the score must end in one value, "
                                   f"ends in {score[-1].out_size}")
        object.__setattr__(self, "score", score)

    in_size = out_size = property(lambda self: self.score[0].in_size)

    @property
    def state_size(self) -> int:
        return self.in_size + 2


@dataclass(frozen=True)
class Head:
    """A named output: a chain of layers on the trunk's output."""

    name: str
    layers: tuple

    def __post_init__(self):
        if not self.name or not self.name.isidentifier():
            raise ModelFormatError(f"head name {self.name!r} must be a non-empty identifier")
        object.__setattr__(self, "layers", tuple(self.layers))


Layer = Linear | Affine | LayerNorm | Activation | CausalConv1d | AttentionPool
STATEFUL = (CausalConv1d, AttentionPool)


def state_size(layer) -> int:
    return layer.state_size if isinstance(layer, STATEFUL) else 0


def check_chain(chain, size: int, where: str) -> int:
    """The output size of `chain` applied to a vector of `size`; refuses a mismatch."""
    for k, layer in enumerate(chain):
        if not isinstance(layer, (Linear, Affine, LayerNorm, Activation, CausalConv1d, AttentionPool)):
            raise ModelFormatError(f"{where}: item {k} is a {type(layer).__name__}, not a layer")
        if layer.in_size != size:
            raise ModelFormatError(f"{where}: layer {k} ({describe(layer)}) takes {layer.in_size} values "
                                   f"but receives {size}")
        size = layer.out_size
    return size


def describe(layer) -> str:
    """One short line, as `inspect` prints it."""
    label = f" ({layer.name})" if getattr(layer, "name", "") else ""
    if isinstance(layer, Linear):
        return f"Linear {layer.in_size} -> {layer.out_size}{label}"
    if isinstance(layer, Affine):
        return f"Affine {layer.in_size}{label or ''}"
    if isinstance(layer, LayerNorm):
        return f"LayerNorm {layer.in_size}, eps {layer.eps:g}{label}"
    if isinstance(layer, Activation):
        return layer.kind + (f"({layer.alpha:g})" if layer.kind in ("leaky_relu", "elu") else "")
    if isinstance(layer, CausalConv1d):
        return (f"CausalConv1d {layer.in_size} -> {layer.out_size}, kernel {layer.kernel_size}, "
                f"dilation {layer.dilation}{label}")
    return f"AttentionPool {layer.in_size} (score: {' > '.join(describe(s) for s in layer.score)}){label}"


# --- how a layer is written down: a JSON-ready config and its arrays under stable names ---

_ARRAYS = {Linear: ("weight", "bias"), Affine: ("offset", "scale", "shift"), LayerNorm: ("weight", "bias"),
           CausalConv1d: ("weight", "bias"), Activation: (), AttentionPool: ()}
_KINDS = {"linear": Linear, "affine": Affine, "layer_norm": LayerNorm, "activation": Activation,
          "causal_conv1d": CausalConv1d, "attention_pool": AttentionPool}
_KIND_OF = {cls: kind for kind, cls in _KINDS.items()}


def config(layer) -> dict:
    """The hyper-parameters of `layer` (no weights)."""
    out: dict = {"kind": _KIND_OF[type(layer)], "in": layer.in_size, "out": layer.out_size}
    if getattr(layer, "name", ""):
        out["name"] = layer.name
    if isinstance(layer, Activation):
        out.update(activation=layer.kind, alpha=layer.alpha)
    elif isinstance(layer, LayerNorm):
        out["eps"] = layer.eps
    elif isinstance(layer, CausalConv1d):
        out.update(kernel_size=layer.kernel_size, dilation=layer.dilation)
    elif isinstance(layer, AttentionPool):
        out["score"] = [config(s) for s in layer.score]
    return out


def arrays(layer, prefix: str) -> dict[str, np.ndarray]:
    """Every array of `layer`, named `prefix + field` (nested score layers included)."""
    out = {prefix + name: getattr(layer, name) for name in _ARRAYS[type(layer)]}
    if isinstance(layer, AttentionPool):
        for k, s in enumerate(layer.score):
            out.update(arrays(s, f"{prefix}score.{k}."))
    return out


def from_config(cfg: dict, tensors: dict, prefix: str):
    """The inverse of config() + arrays(); raises ModelFormatError on anything malformed."""
    if not isinstance(cfg, dict) or cfg.get("kind") not in _KINDS:
        raise ModelFormatError(f"unknown layer {cfg!r:.80}; this edgelstm may be too old for the file")
    cls, name = _KINDS[cfg["kind"]], str(cfg.get("name", ""))
    if cls is Activation:
        return Activation(cfg["activation"], cfg["in"], cfg.get("alpha", 0.0))
    if cls is AttentionPool:
        return AttentionPool(tuple(from_config(s, tensors, f"{prefix}score.{k}.")
                                   for k, s in enumerate(cfg["score"])), name)
    try:
        values = [tensors[prefix + f] for f in _ARRAYS[cls]]
    except KeyError as exc:
        raise ModelFormatError(f"the file lacks tensor {exc}; it is damaged") from None
    if cls is LayerNorm:
        return LayerNorm(values[0], values[1], eps=cfg["eps"], name=name)       # _ARRAYS: weight, bias
    if cls is CausalConv1d:
        return CausalConv1d(values[0], values[1], dilation=cfg["dilation"], name=name)
    return cls(*values, name=name)
