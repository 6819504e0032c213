"""Keras 3 `.keras` archives, read as data: config.json with json, model.weights.h5 with h5py.

Nothing in the file is deserialized or run. A layer is known by its class_name and config; a
Lambda layer or a custom class is refused by name. The archive holds

  metadata.json     {"keras_version": ...}
  config.json       {"class_name": "Sequential" | "Functional", "config": {"layers": [...]}}
  model.weights.h5  layers/<group>/vars/0..n (LSTM/GRU: layers/<group>/cell/vars/,
                    TimeDistributed: layers/<group>/layer/vars/)

where <group> is not the layer's name but its class in snake case, numbered in the order the
model lists its layers ("dense", "dense_1"); Keras 3 also writes the layer's name as attribute
`name` of each vars group, which is what is matched first.

Keras keeps (in, out) kernels. LSTM gates are i, f, c, o (PyTorch's order) with one bias;
GRU gates are z, r, h, and with reset_after=True (the default since TF 2) the bias is
(2, 3H) = [input bias; recurrent bias], which is PyTorch's GRU. Both are transposed and
reordered here into spec.RecurrentLayer's PyTorch layout. A recurrent layer with
return_sequences=False still yields an output every step when streamed: what the model would
say if the sequence ended there.

The helpers that map Keras-layout arrays (lstm_from_keras, gru_from_keras, ...) and assemble
a chain of layers into a ModelSpec are shared with the RTNeural JSON reader.
"""

from __future__ import annotations

import io
import json
import os
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import ModelFormatError
from .layers import Activation, Affine, CausalConv1d, LayerNorm, Linear
from .spec import ModelSpec, RecurrentLayer

MAX_UNITS = 1 << 20                 # the largest size layers.py accepts
MAX_ELEMENTS = 1 << 26              # per array: 256 MiB of float32, far above any edge model
MAX_JSON_BYTES = 64 << 20
MAX_WEIGHTS_BYTES = 1 << 30
INSTALL = "pip install 'edgelstm[keras]'"

# ---- shared with rtneural_json: Keras-layout arrays to edgelstm layers ---------------------

# Keras activation name -> (edgelstm kind, alpha); None = the identity
KERAS_ACTIVATIONS = {
    "linear": None, "relu": ("relu", 0.0), "tanh": ("tanh", 0.0), "sigmoid": ("sigmoid", 0.0),
    "softmax": ("softmax", 0.0), "log_softmax": ("log_softmax", 0.0), "elu": ("elu", 1.0),
    "gelu": ("gelu", 0.0), "silu": ("silu", 0.0), "swish": ("silu", 0.0), "leaky_relu": ("leaky_relu", 0.2),
}
_HARD_SIGMOID = ("'hard_sigmoid' (clip(0.2x + 0.5) in Keras 2, clip(x/6 + 0.5) in Keras 3) is not computed by "
                 "edgelstm's kernels; retrain with 'sigmoid' (the Keras default since TF 2.0)")


def checked_size(n, what: str) -> int:
    """A layer size from the file: an integer in 1..MAX_UNITS, else a ModelFormatError."""
    if isinstance(n, bool) or not isinstance(n, int) or not 0 < n <= MAX_UNITS:
        raise ModelFormatError(f"{what} must be an integer in 1..{MAX_UNITS}, got {n!r:.40}; the file is damaged "
                               f"or declares a model far too large for edgelstm")
    return n


def checked_shape(shape: tuple[int, ...], what: str) -> tuple[int, ...]:
    """`shape` if its element count is below MAX_ELEMENTS (checked before anything is read)."""
    if int(np.prod(shape, dtype=np.float64)) > MAX_ELEMENTS:
        raise ModelFormatError(f"{what}: shape {shape} has more than {MAX_ELEMENTS:,} values; edgelstm refuses "
                               f"arrays that large (is the file damaged?)")
    return shape


def checked_number(value, what: str, positive: bool = False) -> float:
    """A finite number from the file (an epsilon, a slope), else a ModelFormatError."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)
    if not ok or (positive and value <= 0):
        raise ModelFormatError(f"{what} must be a finite{' positive' if positive else ''} number, got {value!r:.40}; "
                               f"the file is damaged")
    return float(value)


def activation_layers(name, size: int, where: str) -> list:
    """The edgelstm layers for a Keras activation name ([] for 'linear')."""
    if name in (None, "", "linear"):
        return []
    if name == "hard_sigmoid":
        raise ModelFormatError(f"{where}: activation {_HARD_SIGMOID}")
    if not isinstance(name, str) or name not in KERAS_ACTIVATIONS:
        known = ", ".join(k for k in KERAS_ACTIVATIONS)
        raise ModelFormatError(f"{where}: activation {name!r:.60} is not supported; edgelstm computes {known}")
    entry = KERAS_ACTIVATIONS[name]
    if entry is None:                               # "linear", answered above
        return []
    kind, alpha = entry
    return [Activation(kind, size, alpha)]


def _zrh_to_rzn(a: np.ndarray) -> np.ndarray:
    """Rows (3H, ...) in Keras' gate order z, r, h -> PyTorch's r, z, n."""
    h = a.shape[0] // 3
    return np.concatenate([a[h:2 * h], a[:h], a[2 * h:]])


def lstm_from_keras(kernel, recurrent, bias=None) -> RecurrentLayer:
    """kernel (I, 4H), recurrent (H, 4H), bias (4H,) or None, gates i, f, c, o -> PyTorch layout
    (the same gate order; the single bias becomes b_ih and b_hh is zeros)."""
    n_in, g = kernel.shape
    zeros = np.zeros(g, np.float32)
    return RecurrentLayer("lstm", n_in, g // 4, kernel.T, recurrent.T, zeros if bias is None else bias, zeros)


def gru_from_keras(kernel, recurrent, bias=None) -> RecurrentLayer:
    """kernel (I, 3H), recurrent (H, 3H), bias (2, 3H) = [input; recurrent] or None, gates
    z, r, h, reset_after=True -> PyTorch's r, z, n (b_hn stays inside r * (...), as in PyTorch)."""
    n_in, g = kernel.shape
    b_ih, b_hh = (np.zeros(g, np.float32),) * 2 if bias is None else (bias[0], bias[1])
    return RecurrentLayer("gru", n_in, g // 3, _zrh_to_rzn(kernel.T), _zrh_to_rzn(recurrent.T),
                          _zrh_to_rzn(b_ih), _zrh_to_rzn(b_hh))


def dense_from_keras(kernel, bias=None, name: str = "") -> Linear:
    """kernel (I, O), bias (O,) or None -> Linear with weight (O, I)."""
    return Linear(kernel.T, np.zeros(kernel.shape[1], np.float32) if bias is None else bias, name)


def conv1d_from_keras(kernel, bias, dilation: int, name: str = "") -> CausalConv1d:
    """A causal Conv1D: kernel (K, C_in, C_out) -> weight (C_out, C_in, K). Keras' causal output
    y_t = sum_k kernel[k] x[t - (K-1-k)d] is CausalConv1d's formula with the same k."""
    bias = np.zeros(kernel.shape[2], np.float32) if bias is None else bias
    return CausalConv1d(np.transpose(kernel, (2, 1, 0)), bias, dilation, name)


def assemble(pieces: list[tuple[str, object]], source: dict) -> ModelSpec:
    """[(label, layer or RecurrentLayer)] in data-flow order -> ModelSpec(pre, stack, post)."""
    rec = [k for k, (_, x) in enumerate(pieces) if isinstance(x, RecurrentLayer)]
    if not rec:
        raise ModelFormatError("the model has no LSTM or GRU layer; edgelstm streams recurrent models only")
    for label, x in pieces[rec[0]:rec[-1] + 1]:
        if not isinstance(x, RecurrentLayer):
            raise ModelFormatError(f"{label} sits between two recurrent layers; edgelstm runs other layers only "
                                   f"before the first and after the last LSTM/GRU. Move it, or stream the parts "
                                   f"as separate models")
    stack = tuple(x for _, x in pieces[rec[0]:rec[-1] + 1] if isinstance(x, RecurrentLayer))     # all are, checked
    pre = tuple(x for _, x in pieces[:rec[0]])
    post = tuple(x for _, x in pieces[rec[-1] + 1:])
    return ModelSpec(stack, pre, post, (), source)


def with_options(spec: ModelSpec, fmt: str, *, arch=None, rnn=None, head=None, input_norm=None, output_norm=None,
                 allow_unused: bool = False) -> ModelSpec:
    """load_spec's options for a file that holds its whole graph: normalisation is added around
    it; arch/rnn/head (which choose layers out of a state_dict) make no sense and are refused."""
    del allow_unused                     # every array of the file is used
    if arch is not None or rnn is not None or head is not None:
        raise ModelFormatError(f"a {fmt} file holds its whole graph; drop arch=/rnn=/head= "
                               f"(CLI: --arch/--rnn/--head/--no-head)")
    if input_norm is None and output_norm is None:
        return spec
    pre, post = spec.pre, spec.post
    if input_norm is not None:
        pre = (input_norm if isinstance(input_norm, Affine) else Affine.normalise(*input_norm),) + pre
    if output_norm is not None:
        post = post + (output_norm if isinstance(output_norm, Affine) else Affine.denormalise(*output_norm),)
    return ModelSpec(spec.layers, pre, post, spec.heads, spec.source)


# ---- the archive --------------------------------------------------------------------------

def is_keras_archive(names) -> bool:
    """Whether a zip's member names are those of a Keras 3 `.keras` file."""
    return "config.json" in names and "metadata.json" in names


def _member(z: zipfile.ZipFile, name: str, limit: int) -> bytes:
    if z.getinfo(name).file_size > limit:
        raise ModelFormatError(f"{name} in the archive is over {limit >> 20} MiB; edgelstm refuses it (damaged?)")
    with z.open(name) as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise ModelFormatError(f"{name} in the archive is over {limit >> 20} MiB; edgelstm refuses it (damaged?)")
    return data


def parse_json(data: bytes, what: str):
    """json.loads, with every failure (bad text, too deep, not UTF-8) as a ModelFormatError."""
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise ModelFormatError(f"{what} is not valid JSON ({str(exc)[:120]}); the file is damaged") from None


def _read_archive(path) -> tuple[dict, dict, zipfile.ZipFile]:
    """(config, metadata, the open archive) of a .keras file."""
    try:
        z = zipfile.ZipFile(path)
        names = set(z.namelist())
        if not is_keras_archive(names):
            raise ModelFormatError(f"{path}: not a Keras 3 .keras archive (no config.json and metadata.json)")
        config = parse_json(_member(z, "config.json", MAX_JSON_BYTES), f"{path}: config.json")
        metadata = parse_json(_member(z, "metadata.json", MAX_JSON_BYTES), f"{path}: metadata.json")
    except (zipfile.BadZipFile, OSError, EOFError, KeyError, NotImplementedError, ValueError) as exc:
        raise ModelFormatError(f"{path}: damaged .keras archive ({exc})") from None
    if not isinstance(config, dict) or not isinstance(metadata, dict):
        raise ModelFormatError(f"{path}: config.json and metadata.json must each hold a JSON object")
    return config, metadata, z


def _weights_file(z: zipfile.ZipFile, path):
    """model.weights.h5 as an open h5py.File (read into memory; h5py is imported only here)."""
    names = set(z.namelist())
    if "model.weights.h5" not in names:
        sharded = " (this archive's weights are sharded; save it again without max_shard_size)" \
            if any(n.endswith(".weights.json") for n in names) else ""
        raise ModelFormatError(f"{path}: the archive has no model.weights.h5{sharded}; save the model again with "
                               f"model.save('model.keras')")
    try:
        import h5py
    except ImportError:
        raise ModelFormatError(f"reading a .keras file's weights needs h5py: {INSTALL}") from None
    try:
        data = _member(z, "model.weights.h5", MAX_WEIGHTS_BYTES)
        return h5py.File(io.BytesIO(data), "r")
    except (OSError, zipfile.BadZipFile, EOFError, ValueError) as exc:
        raise ModelFormatError(f"{path}: model.weights.h5 is damaged ({str(exc)[:120]})") from None


# ---- config.json: the chain of layers -----------------------------------------------------

def _name(layer: dict) -> str:
    cfg = layer.get("config")
    name = layer.get("name") or (cfg.get("name") if isinstance(cfg, dict) else None)
    return str(name) if name is not None else "?"


def _dict_at(obj: dict, key: str) -> dict:
    """obj[key] when it is a JSON object, else {}."""
    value = obj.get(key)
    return value if isinstance(value, dict) else {}


def _endpoints(value, what: str) -> list[tuple[str, int]]:
    """[(layer name, tensor index)] of input_layers / output_layers, in either Keras form."""
    if isinstance(value, list) and value and isinstance(value[0], str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, list) and len(v) >= 3 and isinstance(v[0], str)
                                              for v in value):
        raise ModelFormatError(f"config.json: {what} {value!r:.80} is malformed; the file is damaged")
    return [(v[0], v[2]) for v in value]


def _tensors(obj, found: list) -> None:
    """Every Keras tensor (its source layer and tensor index) in a Keras 3 inbound node."""
    if isinstance(obj, dict):
        if obj.get("class_name") == "__keras_tensor__":
            cfg = obj.get("config")
            history = cfg.get("keras_history") if isinstance(cfg, dict) else None
            if not isinstance(history, list) or len(history) < 3 or not isinstance(history[0], str):
                raise ModelFormatError(f"config.json: tensor {obj!r:.80} has no keras_history; the file is damaged")
            found.append((history[0], history[2]))
            return
        for v in obj.values():
            _tensors(v, found)
    elif isinstance(obj, list):
        for v in obj:
            _tensors(v, found)


def _node_sources(node) -> list[tuple[str, int]]:
    """(layer, tensor index) of each input of one call: Keras 3 {"args", "kwargs"} or Keras 2
    [[name, node, tensor, kwargs], ...]."""
    found: list = []
    if isinstance(node, dict):
        _tensors([node.get("args"), node.get("kwargs")], found)
    elif isinstance(node, list):
        found = [(e[0], e[2]) for e in node if isinstance(e, list) and len(e) >= 3 and isinstance(e[0], str)]
    return found


def _functional_chain(body: dict) -> list[dict]:
    """The layers of a functional model from its input to its output; refuses any branching."""
    layers = body.get("layers")
    if not isinstance(layers, list) or not all(isinstance(x, dict) for x in layers):
        raise ModelFormatError("config.json: the model's layers are not a list of objects; the file is damaged")
    by_name = {_name(x): x for x in layers}
    inputs, outputs = _endpoints(body.get("input_layers"), "input_layers"), \
        _endpoints(body.get("output_layers"), "output_layers")
    if len(inputs) != 1 or len(outputs) != 1 or outputs[0][1] != 0:
        raise ModelFormatError(f"the model has {len(inputs)} inputs and {len(outputs)} outputs; edgelstm streams a "
                               f"chain with one input and one output")
    chain: list[dict] = []
    name = outputs[0][0]
    while True:
        layer = by_name.get(name)
        if layer is None or any(layer is x for x in chain):
            raise ModelFormatError(f"config.json: layer {name!r} is missing or in a cycle; the file is damaged")
        chain.append(layer)
        if layer.get("class_name") == "InputLayer":
            break
        nodes = layer.get("inbound_nodes") or []
        nodes = nodes if isinstance(nodes, list) else [None, None]      # damaged: report as "called 2 times"
        sources = _node_sources(nodes[0]) if len(nodes) == 1 else []
        if len(nodes) != 1 or len(sources) != 1 or sources[0][1] != 0:
            what = f"is called {len(nodes)} times" if len(nodes) != 1 else f"takes {len(sources)} inputs"
            raise ModelFormatError(f"layer {name!r} ({layer.get('class_name')}) {what}; edgelstm streams only a "
                                   f"simple chain of layers (no shared layers, branches, merges or initial_state)")
        name = sources[0][0]
    if name != inputs[0][0] or len(chain) != len(layers):
        off = sorted(set(by_name) - {_name(x) for x in chain})
        raise ModelFormatError(f"layers {off} are not on the path from the input to the output; edgelstm streams "
                               f"only a simple chain of layers")
    return chain[::-1]


def layer_chain(config: dict) -> tuple[list[dict], list[dict]]:
    """(the layers in data-flow order, the layers in the order model.weights.h5 numbers them)."""
    cls, body = config.get("class_name"), config.get("config")
    if not isinstance(body, dict):
        raise ModelFormatError("config.json has no model config; the file is damaged")
    if cls == "Sequential":
        layers = body.get("layers")
        if not isinstance(layers, list) or not layers or not all(isinstance(x, dict) for x in layers):
            raise ModelFormatError("config.json: the Sequential model has no list of layers; the file is damaged")
        return layers, [x for x in layers if x.get("class_name") != "InputLayer"]
    if cls in ("Functional", "Model"):
        return _functional_chain(body), body["layers"]
    raise ModelFormatError(f"the model is a {cls!r:.60}: edgelstm reads keras.Sequential and functional models "
                           f"(keras.Model(inputs, outputs)); a subclassed Model is Python code, never run from a "
                           f"file. Rebuild it as a Sequential or functional model and save that")


def _input_size(first: dict) -> int:
    """Features per step, from the InputLayer's batch_shape or the first layer's build_config."""
    cfg, build = _dict_at(first, "config"), _dict_at(first, "build_config")
    shape = cfg.get("batch_shape") or cfg.get("batch_input_shape") or build.get("input_shape")
    if not isinstance(shape, list):
        raise ModelFormatError("the model does not declare its input shape; build it with "
                               "keras.Input(shape=(None, features)) before saving")
    if len(shape) != 3:
        raise ModelFormatError(f"the model's input shape is {shape}; a streamed model takes (batch, time, "
                               f"features) sequences")
    return checked_size(shape[-1], "the input's feature count")


# ---- one layer: its config checked, the arrays it needs, and how to build it ---------------

@dataclass
class _Step:
    """A layer planned from config.json alone, before any weight is read."""

    layer: dict                          # the layer's entry in config.json
    label: str                           # "LSTM 'lstm'", for messages
    expected: list                       # [(what, shape or None for any)] of vars/0, vars/1, ... in order
    build: Callable                      # arrays -> [(label, edgelstm layer)]
    out_size: int
    sub: str = ""                        # "cell/" (LSTM/GRU), "layer/" (TimeDistributed) or ""


_DROPOUTS = ("Dropout", "SpatialDropout1D", "GaussianDropout", "GaussianNoise", "AlphaDropout",
             "ActivityRegularization")
_REFUSED = {
    "Lambda": "a Lambda layer is Python code stored in the file, and edgelstm never runs code from a model file; "
              "replace it with built-in layers",
    "Bidirectional": "a bidirectional layer also reads the sequence backwards, from readings that have not come "
                     "yet, so it cannot stream; train a unidirectional LSTM/GRU",
    "RNN": "a generic RNN wrapper runs a cell object; build the model with keras.layers.LSTM / GRU instead",
    "SimpleRNN": "edgelstm runs LSTM and GRU layers only",
    "Masking": "masking skips time steps by value, which a stream cannot do; drop it for streaming",
}


def _activation_name(value, label: str):
    """An activation as a name: a string, or Keras 3's {"class_name": "function", "config": name}."""
    if isinstance(value, dict) and value.get("class_name") == "function" \
            and str(value.get("module", "keras")).startswith("keras") and isinstance(value.get("config"), str):
        return value["config"]
    if value is None or isinstance(value, str):
        return value
    raise ModelFormatError(f"{label}: activation {value!r:.80} is a custom object; edgelstm never runs code from a "
                           f"model file; use a built-in activation")


def _check_custom(layer: dict, label: str) -> None:
    cls = layer.get("class_name")
    if cls in _REFUSED:
        raise ModelFormatError(f"{label}: {_REFUSED[cls]}")
    module, registered = layer.get("module"), layer.get("registered_name")
    if registered not in (None, cls) or (module is not None and not str(module).startswith("keras")):
        raise ModelFormatError(f"{label} is a custom class ({registered or module}); edgelstm never imports or runs "
                               f"code from a model file; rebuild the model from built-in Keras layers")
    cfg = layer.get("config")
    dtype = cfg.get("dtype") if isinstance(cfg, dict) else None
    if isinstance(dtype, dict) and "Quantized" in str(dtype.get("class_name")):
        raise ModelFormatError(f"{label} is quantized ({dtype.get('class_name')}); save the float model")


def _feature_axis(axis, label: str) -> None:
    """Normalisation layers must work over the feature axis of (batch, time, features)."""
    if axis not in (-1, 2, [-1], [2]):
        raise ModelFormatError(f"{label}: axis {axis} normalises across time or batch; edgelstm normalises each "
                               f"step's features (axis=-1) only")


def _recurrent(layer: dict, cfg: dict, label: str, n_in: int, kind: str) -> _Step:
    gates = 4 if kind == "lstm" else 3
    if _activation_name(cfg.get("activation", "tanh"), label) != "tanh":
        raise ModelFormatError(f"{label}: activation {cfg.get('activation')!r} is not supported; edgelstm's "
                               f"kernels use tanh (the Keras default)")
    rec = _activation_name(cfg.get("recurrent_activation", "sigmoid"), label)
    if rec != "sigmoid":
        why = _HARD_SIGMOID if rec == "hard_sigmoid" else f"{rec!r} is not supported; edgelstm's kernels use sigmoid"
        raise ModelFormatError(f"{label}: recurrent_activation {why}")
    if cfg.get("go_backwards"):
        raise ModelFormatError(f"{label}: go_backwards=True reads the sequence from its end, which a stream "
                               f"never reaches; train with go_backwards=False")
    if cfg.get("return_state"):
        raise ModelFormatError(f"{label}: return_state=True makes the states extra outputs; save a model whose "
                               f"output is the layer's output alone")
    if kind == "gru" and not cfg.get("reset_after", True):
        raise ModelFormatError(f"{label}: reset_after=False is the original GRU, which applies the reset gate "
                               f"before the recurrent matmul; edgelstm runs PyTorch's GRU (reset_after=True, the "
                               f"Keras default since TF 2). Retrain with reset_after=True")
    units = checked_size(cfg.get("units"), f"{label}: units")
    g = gates * units
    expected = [("kernel", checked_shape((n_in, g), label)), ("recurrent_kernel", checked_shape((units, g), label))]
    if cfg.get("use_bias", True):
        expected.append(("bias", (g,) if kind == "lstm" else (2, g)))
    make = lstm_from_keras if kind == "lstm" else gru_from_keras
    return _Step(layer, label, expected, lambda a: [(label, make(*a))], units, "cell/")


def _dense(layer: dict, cfg: dict, label: str, n_in: int, sub: str = "") -> _Step:
    units = checked_size(cfg.get("units"), f"{label}: units")
    act = activation_layers(_activation_name(cfg.get("activation"), label), units, label)
    expected = [("kernel", checked_shape((n_in, units), label))] + ([("bias", (units,))] if cfg.get("use_bias", True)
                                                                   else [])
    name = _name(layer)
    return _Step(layer, label, expected, lambda a: [(label, dense_from_keras(a[0], a[1] if len(a) > 1 else None,
                                                                             name=name))] +
                 [(label, x) for x in act], units, sub)


def _time_distributed(layer: dict, cfg: dict, label: str, n_in: int) -> _Step:
    inner = _dict_at(cfg, "layer")
    if inner.get("class_name") != "Dense":
        raise ModelFormatError(f"{label}: edgelstm reads TimeDistributed(Dense) only, found "
                               f"TimeDistributed({inner.get('class_name')!r:.40})")
    _check_custom(inner, label)
    inner_cfg = _dict_at(inner, "config")
    step = _dense(inner, inner_cfg, label, n_in, "layer/")
    step.layer = layer
    return step


def _conv1d(layer: dict, cfg: dict, label: str, n_in: int) -> _Step:
    if cfg.get("padding") != "causal":
        raise ModelFormatError(f"{label}: padding={cfg.get('padding')!r} needs readings that have not come yet "
                               f"(or drops the first ones); edgelstm streams padding='causal' only")
    for key, accepted in (("strides", (1, [1])), ("groups", (1,)), ("data_format", ("channels_last",))):
        if cfg.get(key, accepted[0]) not in accepted:
            raise ModelFormatError(f"{label}: {key}={cfg.get(key)!r} is not supported; edgelstm streams "
                                   f"stride 1, groups 1, channels_last convolutions")
    size, dilation = cfg.get("kernel_size"), cfg.get("dilation_rate", [1])
    size, dilation = (v[0] if isinstance(v, list) and len(v) == 1 else v for v in (size, dilation))
    size, dilation = checked_size(size, f"{label}: kernel_size"), checked_size(dilation, f"{label}: dilation_rate")
    filters = checked_size(cfg.get("filters"), f"{label}: filters")
    act = activation_layers(_activation_name(cfg.get("activation"), label), filters, label)
    expected = [("kernel", checked_shape((size, n_in, filters), label))] + \
        ([("bias", (filters,))] if cfg.get("use_bias", True) else [])
    name = _name(layer)
    return _Step(layer, label, expected, lambda a: [(label, conv1d_from_keras(a[0], a[1] if len(a) > 1 else None,
                                                                              dilation, name))] +
                 [(label, x) for x in act], filters)


def _layer_norm(layer: dict, cfg: dict, label: str, n_in: int) -> _Step:
    _feature_axis(cfg.get("axis", -1), label)
    if cfg.get("rms_scaling"):
        raise ModelFormatError(f"{label}: rms_scaling=True is RMS normalisation; edgelstm runs LayerNorm only")
    scale, center = cfg.get("scale", True), cfg.get("center", True)
    eps = checked_number(cfg.get("epsilon", 1e-3), f"{label}: epsilon", positive=True)
    expected = [("gamma", (n_in,))] * bool(scale) + [("beta", (n_in,))] * bool(center)

    def build(a):
        gamma = a[0] if scale else np.ones(n_in)
        beta = a[-1] if center else np.zeros(n_in)
        return [(label, LayerNorm(gamma, beta, eps, _name(layer)))]
    return _Step(layer, label, expected, build, n_in)


def _batch_norm(layer: dict, cfg: dict, label: str, n_in: int) -> _Step:
    _feature_axis(cfg.get("axis", -1), label)
    scale, center = cfg.get("scale", True), cfg.get("center", True)
    eps = checked_number(cfg.get("epsilon", 1e-3), f"{label}: epsilon")
    expected = [("gamma", (n_in,))] * bool(scale) + [("beta", (n_in,))] * bool(center) + \
        [("moving_mean", (n_in,)), ("moving_variance", (n_in,))]

    def build(a):
        gamma = a[0] if scale else 1.0
        beta = a[int(bool(scale))] if center else 0.0
        return [(label, Affine.batch_norm(a[-2], a[-1], gamma, beta, eps, _name(layer)))]
    return _Step(layer, label, expected, build, n_in)


def _prelu(layer: dict, cfg: dict, label: str, n_in: int) -> _Step:
    """PReLU with one slope for every feature (shared_axes covering them, or all slopes equal)
    is leaky_relu; the slopes' shape follows shared_axes, so any shape is read and checked."""
    def build(a):
        alpha = a[0].ravel()
        if not alpha.size or not (alpha == alpha[0]).all():
            raise ModelFormatError(f"{label}: PReLU with a slope per feature; edgelstm's leaky_relu has one slope "
                                   f"(train with PReLU(shared_axes=[1, 2]) or LeakyReLU)")
        return [(label, Activation("leaky_relu", n_in, float(alpha[0])))]
    return _Step(layer, label, [("alpha", None)], build, n_in)


def _no_weights(layer: dict, label: str, n_in: int, pieces: list) -> _Step:
    return _Step(layer, label, [], lambda a: [(label, x) for x in pieces], n_in)


def _activation_layer(layer: dict, cfg: dict, label: str, n_in: int) -> _Step:
    cls = layer.get("class_name")
    if cls == "Activation":
        return _no_weights(layer, label, n_in,
                           activation_layers(_activation_name(cfg.get("activation"), label), n_in, label))
    if cls == "Softmax":
        if cfg.get("axis", -1) not in (-1, [-1], 2, [2]):
            raise ModelFormatError(f"{label}: softmax over axis {cfg.get('axis')} mixes time steps; edgelstm's "
                                   f"softmax is over each step's features (axis=-1)")
        return _no_weights(layer, label, n_in, [Activation("softmax", n_in)])
    if cls == "ELU":
        alpha = checked_number(cfg.get("alpha", 1.0), f"{label}: alpha")
        return _no_weights(layer, label, n_in, [Activation("elu", n_in, alpha)])
    if cls == "LeakyReLU":
        slope = cfg.get("negative_slope", cfg.get("alpha", 0.3))
        return _no_weights(layer, label, n_in, [Activation("leaky_relu", n_in, checked_number(slope, label))])
    # ReLU: only max_value=None and threshold=0 map onto relu / leaky_relu
    if cfg.get("max_value") is not None or cfg.get("threshold") not in (None, 0, 0.0):
        raise ModelFormatError(f"{label}: ReLU with max_value or threshold is not supported; edgelstm computes "
                               f"relu and leaky_relu")
    slope = checked_number(cfg.get("negative_slope") or 0.0, f"{label}: negative_slope")
    act = Activation("leaky_relu", n_in, slope) if slope else Activation("relu", n_in)
    return _no_weights(layer, label, n_in, [act])


_CONVERTERS = {
    "LSTM": lambda layer, cfg, label, n: _recurrent(layer, cfg, label, n, "lstm"),
    "GRU": lambda layer, cfg, label, n: _recurrent(layer, cfg, label, n, "gru"),
    "Dense": _dense, "TimeDistributed": _time_distributed, "Conv1D": _conv1d,
    "LayerNormalization": _layer_norm, "BatchNormalization": _batch_norm,
    "Activation": _activation_layer, "Softmax": _activation_layer, "ReLU": _activation_layer,
    "LeakyReLU": _activation_layer, "ELU": _activation_layer, "PReLU": _prelu,
    "InputLayer": lambda layer, cfg, label, n: _no_weights(layer, label, n, []),
    **{cls: (lambda layer, cfg, label, n: _no_weights(layer, label, n, [])) for cls in _DROPOUTS},
}


def plan(flow: list[dict]) -> list[_Step]:
    """Check every layer's config and work out the arrays each needs, before reading any."""
    steps, size = [], _input_size(flow[0])
    for layer in flow:
        cls = layer.get("class_name")
        if not isinstance(cls, str):
            raise ModelFormatError(f"layer {_name(layer)!r} has no class_name; the file is damaged")
        label = f"{cls} {_name(layer)!r}"
        _check_custom(layer, label)
        if cls not in _CONVERTERS:
            if cls in ("Sequential", "Functional", "Model"):
                raise ModelFormatError(f"{label} is a model nested in the model; build one flat Sequential or "
                                       f"functional model and save that")
            raise ModelFormatError(f"{label}: unsupported Keras layer; edgelstm reads "
                                   f"{', '.join(sorted(_CONVERTERS))}")
        cfg = layer.get("config")
        if not isinstance(cfg, dict):
            raise ModelFormatError(f"{label} has no config; the file is damaged")
        step = _CONVERTERS[cls](layer, cfg, label, size)
        steps.append(step)
        size = step.out_size
    return steps


# ---- model.weights.h5 ---------------------------------------------------------------------

def _snake_case(name: str) -> str:
    """Keras' naming.to_snake_case: the group name a layer's weights get in model.weights.h5."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


class _Weights:
    """The vars groups of model.weights.h5, found by the layer name Keras 3 records on each
    (attribute `name`), else by the group name Keras derives from the class and position."""

    def __init__(self, h5, saved: list[dict]):
        root = h5.get("layers") or h5.get("_layer_checkpoint_dependencies")   # the latter: Keras 2.13
        self.root = root if hasattr(root, "keys") else None
        self.groups: dict[str, str] = {}             # layer name -> its group in model.weights.h5
        used: dict[str, int] = {}
        for layer in saved:
            base = _snake_case(str(layer.get("class_name")))
            used[base] = used.get(base, -1) + 1
            self.groups[_name(layer)] = base if used[base] == 0 else f"{base}_{used[base]}"
        if self.root is not None:
            for group in self.root.keys():
                item = self.root.get(group)
                attrs = getattr(item.get("vars"), "attrs", {}) if hasattr(item, "get") else {}
                name = attrs.get("name")
                if name is not None:
                    self.groups[name.decode() if isinstance(name, bytes) else str(name)] = group

    def arrays(self, step: _Step) -> list[np.ndarray]:
        """The step's arrays, each checked against the shape its config implies before reading."""
        if not step.expected:
            return []
        group = self.groups.get(_name(step.layer))
        found = self.root.get(f"{group}/{step.sub}vars") if self.root is not None and group else None
        if found is None or not hasattr(found, "keys"):
            raise ModelFormatError(f"{step.label}: its weights are missing from model.weights.h5; the file is "
                                   f"damaged: save the model again with model.save('model.keras')")
        keys, want = set(found.keys()), [w for w, _ in step.expected]
        if keys != {str(k) for k in range(len(want))}:
            raise ModelFormatError(f"{step.label}: model.weights.h5 holds {len(keys)} arrays for it, expected "
                                   f"{len(want)} ({', '.join(want)}); a quantized or otherwise modified layer is "
                                   f"not supported, save the float model")
        return [self._read(found[str(k)], step.label, what, shape) for k, (what, shape) in enumerate(step.expected)]

    @staticmethod
    def _read(ds, label: str, what: str, shape: tuple | None) -> np.ndarray:
        """One dataset as float32; shape None = any shape of at most MAX_ELEMENTS values."""
        if hasattr(ds, "shape") and shape is None:
            shape = checked_shape(tuple(ds.shape), f"{label}: {what}")
        if not hasattr(ds, "dtype") or shape is None or tuple(ds.shape) != tuple(shape):
            got = tuple(ds.shape) if hasattr(ds, "shape") else type(ds).__name__
            raise ModelFormatError(f"{label}: {what} has shape {got}; its config implies {shape}. The config and "
                                   f"the weights disagree: the file is damaged")
        if ds.attrs.get("dtype") in ("bfloat16", b"bfloat16") or ds.dtype.kind != "f":
            raise ModelFormatError(f"{label}: {what} is stored as {ds.attrs.get('dtype') or ds.dtype}; edgelstm "
                                   f"reads float16/32/64 weights: cast the model to float32 before saving")
        return np.asarray(ds[()], dtype=np.float32)


def read_keras(path, **options) -> ModelSpec:
    """The ModelSpec of a Keras 3 `.keras` file; options as for loader.load_spec (normalisation).

    config.json is checked in full before any weight is read, so a refused layer is named even
    where h5py is not installed.
    """
    path = os.fspath(path)
    config, metadata, z = _read_archive(path)
    with z:
        try:
            flow, saved = layer_chain(config)
            steps = plan(flow)
        except RecursionError:
            raise ModelFormatError(f"{path}: config.json is nested too deeply; the file is damaged") from None
        with _weights_file(z, path) as h5:
            try:
                weights = _Weights(h5, saved)
                pieces = [piece for step in steps for piece in step.build(weights.arrays(step))]
            except (OSError, KeyError, RuntimeError, ValueError, TypeError) as exc:     # h5py on a damaged file
                raise ModelFormatError(f"{path}: model.weights.h5 is damaged ({str(exc)[:120]})") from None
    source = {"file": os.path.basename(path), "format": "keras",
              "keras_version": str(metadata.get("keras_version", "?"))}
    return with_options(assemble(pieces, source), "Keras", **options)
