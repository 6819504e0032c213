"""RTNeural's model JSON (what RTNeural's python/model_utils.py `save_model` writes from Keras).

    {"in_shape": [null, null, I],
     "layers": [{"type": "dense" | "time-distributed-dense" | "lstm" | "gru" | "conv1d" |
                         "batchnorm" | "prelu" | "activation" | ...,
                 "activation": "tanh" | "relu" | "sigmoid" | "softmax" | "elu" | "",
                 "shape": [null, null, O],      # the layer's output shape; O is its size
                 "weights": layer.get_weights(),  # Keras layout, as nested lists
                 ...}]}                           # conv1d: kernel_size, dilation, groups; batchnorm: epsilon

Read as RTNeural's own model_loader.h reads it: dense weights [kernel (I, O), bias (O)?] then
the activation; lstm [kernel (I, 4H), recurrent (H, 4H), bias (4H)] in gate order i, f, c, o;
gru [kernel (I, 3H), recurrent (H, 3H), bias (2, 3H)] in gate order z, r, h with the reset
gate applied after the recurrent matmul (Keras reset_after=True, PyTorch's GRU); the
"activation" of an lstm/gru entry is not applied by RTNeural (its gates are always
sigmoid/tanh); conv1d is a causal, stateful convolution (kernel (K, I, O)); batchnorm weights
are [gamma, beta, mean, variance] or [mean, variance]; prelu weights[0][0] are the slopes.

Where RTNeural would skip, crash on or silently misread an entry (an 'unknown' layer type, an
unknown activation, a GRU bias of shape (3H,) from reset_after=False, three batchnorm arrays),
this reader refuses it by name instead.
"""

from __future__ import annotations

import os

import numpy as np

from ..errors import ModelFormatError
from .keras_file import (
    MAX_JSON_BYTES,
    activation_layers,
    assemble,
    checked_number,
    checked_shape,
    checked_size,
    conv1d_from_keras,
    dense_from_keras,
    gru_from_keras,
    lstm_from_keras,
    parse_json,
    with_options,
)
from .layers import Activation, Affine
from .spec import ModelSpec

RTNEURAL_ACTIVATIONS = ("tanh", "relu", "sigmoid", "softmax", "elu")
_WHITESPACE = b" \t\r\n\xef\xbb\xbf"


def is_rtneural_json(path, head: bytes) -> bool:
    """Whether the file looks like RTNeural JSON: a JSON object naming "in_shape" and "layers"
    (a byte scan; read_rtneural checks the structure)."""
    if head.lstrip(_WHITESPACE)[:1] != b"{" or os.path.getsize(path) > MAX_JSON_BYTES:
        return False
    with open(path, "rb") as fh:
        data = fh.read()
    return b'"in_shape"' in data and b'"layers"' in data


def _read_document(path) -> dict:
    if os.path.getsize(path) > MAX_JSON_BYTES:
        raise ModelFormatError(f"{path}: over {MAX_JSON_BYTES >> 20} MiB, far larger than any RTNeural model; "
                               f"edgelstm refuses it")
    with open(path, "rb") as fh:
        doc = parse_json(fh.read(), f"{path}")
    if not isinstance(doc, dict) or not isinstance(doc.get("layers"), list) or "in_shape" not in doc:
        raise ModelFormatError(f"{path}: not an RTNeural model: expected a JSON object with \"in_shape\" and a "
                               f"\"layers\" list (RTNeural's model_utils.save_model output)")
    return doc


def _last_dim(shape, what: str) -> int:
    """The size RTNeural takes from a shape list: its last entry (4-D shapes are conv2d's)."""
    if not isinstance(shape, list) or not shape:
        raise ModelFormatError(f"{what}: shape {shape!r:.60} must be a non-empty list such as [null, null, 8]")
    if len(shape) == 4:
        raise ModelFormatError(f"{what}: a 4-D shape {shape} belongs to a 2-D (conv2d) model; edgelstm streams "
                               f"vectors of features")
    return checked_size(shape[-1], f"{what}: size (last entry of the shape)")


def _array(value, what: str, shape: tuple | None) -> np.ndarray:
    """A nested list as float32, of exactly `shape` unless that is None."""
    try:
        arr = np.asarray(value, dtype=np.float32)
    except (ValueError, TypeError, OverflowError):
        raise ModelFormatError(f"{what}: not a rectangular array of numbers; the file is damaged") from None
    if shape is not None and arr.shape != tuple(shape):
        raise ModelFormatError(f"{what}: has shape {arr.shape}, expected {tuple(shape)} from the layer sizes; the "
                               f"file is damaged or was edited by hand")
    return arr


def _weights(layer: dict, label: str, counts: tuple[int, ...]) -> list:
    w = layer.get("weights")
    if not isinstance(w, list) or len(w) not in counts:
        n = len(w) if isinstance(w, list) else "no"
        raise ModelFormatError(f"{label}: has {n} weight arrays, expected {' or '.join(map(str, counts))}; the "
                               f"file is damaged or the layer is not one RTNeural reads")
    return w


def _activation(layer: dict, size: int, label: str) -> list:
    name = layer.get("activation", "")
    if name not in ("",) + RTNEURAL_ACTIVATIONS:
        raise ModelFormatError(f"{label}: activation {name!r:.40} is not one RTNeural knows "
                               f"({', '.join(RTNEURAL_ACTIVATIONS)}, or \"\" for none)")
    return activation_layers(name or None, size, label)


def _name(label: str) -> str:
    """'layer 3 (dense)' -> 'layer 3': the name `inspect` shows next to the layer."""
    return label.split(" (")[0]


def _dense(layer: dict, label: str, n_in: int, out: int) -> list:
    w = _weights(layer, label, (1, 2))
    kernel = _array(w[0], f"{label} kernel", checked_shape((n_in, out), label))
    bias = _array(w[1], f"{label} bias", (out,)) if len(w) == 2 else None
    return [dense_from_keras(kernel, bias, _name(label))] + _activation(layer, out, label)


def _recurrent(layer: dict, label: str, n_in: int, out: int, kind: str) -> list:
    if layer.get("activation", "") not in ("", "tanh"):
        raise ModelFormatError(f"{label}: activation {layer.get('activation')!r} was exported, but RTNeural's "
                               f"{kind} always uses tanh; retrain with activation='tanh' so both agree")
    g = (4 if kind == "lstm" else 3) * out
    w = _weights(layer, label, (2, 3))
    shapes = checked_shape((n_in, g), label), checked_shape((out, g), label)      # both before reading either
    kernel = _array(w[0], f"{label} kernel", shapes[0])
    recurrent = _array(w[1], f"{label} recurrent kernel", shapes[1])
    bias = _array(w[2], f"{label} bias", None) if len(w) == 3 else None   # 2: use_bias=False (RTNeural needs 3)
    if kind == "gru" and bias is not None and bias.shape == (g,):
        raise ModelFormatError(f"{label}: a GRU bias of shape ({g},) comes from Keras reset_after=False, the original "
                               f"GRU that resets before the recurrent matmul; RTNeural and edgelstm run "
                               f"reset_after=True. Retrain with reset_after=True")
    if bias is not None:
        bias = _array(bias, f"{label} bias", (g,) if kind == "lstm" else (2, g))
    return [(lstm_from_keras if kind == "lstm" else gru_from_keras)(kernel, recurrent, bias)]


def _int_or_last(value, what: str) -> int:
    """RTNeural reads kernel_size/dilation as lists and takes the last entry."""
    return checked_size(value[-1] if isinstance(value, list) and value else value, what)


def _conv1d(layer: dict, label: str, n_in: int, out: int) -> list:
    size = _int_or_last(layer.get("kernel_size"), f"{label}: kernel_size")
    dilation = _int_or_last(layer.get("dilation"), f"{label}: dilation")
    if layer.get("groups", 1) != 1:
        raise ModelFormatError(f"{label}: groups={layer.get('groups')!r}; edgelstm's causal convolution has "
                               f"groups=1 only")
    w = _weights(layer, label, (2,))
    kernel = _array(w[0], f"{label} kernel", checked_shape((size, n_in, out), label))
    return [conv1d_from_keras(kernel, _array(w[1], f"{label} bias", (out,)), dilation, _name(label))] + \
        _activation(layer, out, label)


def _batchnorm(layer: dict, label: str, n_in: int, out: int) -> list:
    w = layer.get("weights")
    if isinstance(w, list) and len(w) == 3:
        raise ModelFormatError(f"{label}: 3 arrays come from a Keras BatchNormalization with only one of "
                               f"center/scale, which RTNeural misreads; export with both or neither")
    w = _weights(layer, label, (2, 4))
    eps = checked_number(layer.get("epsilon"), f"{label}: \"epsilon\"")
    a = [_array(v, f"{label} array {k}", (n_in,)) for k, v in enumerate(w)]
    gamma, beta = (a[0], a[1]) if len(a) == 4 else (1.0, 0.0)
    return [Affine.batch_norm(a[-2], a[-1], gamma, beta, eps, _name(label))]


def _prelu(layer: dict, label: str, n_in: int, out: int) -> list:
    w = _weights(layer, label, (1,))
    first = w[0][0] if isinstance(w[0], list) and w[0] else None
    if first is None:
        raise ModelFormatError(f"{label}: weights[0][0] must hold the slopes; the file is damaged")
    alpha = np.atleast_1d(_array(first, f"{label} slopes", None))
    if alpha.size not in (1, n_in) or alpha.ndim != 1:
        raise ModelFormatError(f"{label}: {alpha.size} slopes for {n_in} features; the file is damaged")
    if not (alpha == alpha[0]).all():
        raise ModelFormatError(f"{label}: PReLU with a slope per feature; edgelstm's leaky_relu has one slope "
                               f"(train with PReLU(shared_axes=[1, 2]) or LeakyReLU)")
    return [Activation("leaky_relu", n_in, float(alpha[0]))]


def _activation_entry(layer: dict, label: str, n_in: int, out: int) -> list:
    return _activation(layer, n_in, label)


_READERS = {
    "dense": _dense, "time-distributed-dense": _dense, "conv1d": _conv1d, "batchnorm": _batchnorm,
    "prelu": _prelu, "activation": _activation_entry,
    "lstm": lambda layer, label, n, out: _recurrent(layer, label, n, out, "lstm"),
    "gru": lambda layer, label, n, out: _recurrent(layer, label, n, out, "gru"),
}
_REFUSED = {
    "conv2d": "a 2-D convolution works on (time, feature) planes; edgelstm streams vectors of features",
    "batchnorm2d": "a 2-D batch norm belongs to a conv2d model; edgelstm streams vectors of features",
    "unknown": "RTNeural's exporter writes 'unknown' for a Keras layer it does not know, and RTNeural then "
               "silently skips it, so the file does not hold the whole model; export without that layer",
}
_SAME_SIZE = ("batchnorm", "prelu", "activation")


def _layer(layer, k: int, n_in: int) -> tuple[list, int]:
    """The edgelstm layers of entry k and its output size."""
    if not isinstance(layer, dict):
        raise ModelFormatError(f"layer {k}: expected a JSON object, found {type(layer).__name__}")
    kind = layer.get("type")
    if not isinstance(kind, str):
        raise ModelFormatError(f"layer {k}: \"type\" must be a string such as \"lstm\", found {kind!r:.40}")
    label = f"layer {k} ({kind})"
    if kind in _REFUSED:
        raise ModelFormatError(f"{label}: {_REFUSED[kind]}")
    if kind not in _READERS:
        raise ModelFormatError(f"layer {k}: type {kind!r:.40} is not one edgelstm reads "
                               f"({', '.join(sorted(_READERS))})")
    out = _last_dim(layer.get("shape"), label)
    if kind in _SAME_SIZE and out != n_in:
        raise ModelFormatError(f"{label}: declares size {out} but receives {n_in}; the file is damaged")
    return _READERS[kind](layer, label, n_in, out), out


def read_rtneural(path, **options) -> ModelSpec:
    """The ModelSpec of an RTNeural JSON model; options as for loader.load_spec (normalisation)."""
    path = os.fspath(path)
    doc = _read_document(path)
    size = _last_dim(doc["in_shape"], "in_shape")
    pieces = []
    for k, layer in enumerate(doc["layers"]):
        made, size = _layer(layer, k, size)
        pieces += [(f"layer {k} ({layer.get('type')})", x) for x in made]
    source = {"file": os.path.basename(path), "format": "rtneural"}
    return with_options(assemble(pieces, source), "RTNeural", **options)
