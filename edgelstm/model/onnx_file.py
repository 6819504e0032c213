"""Read an .onnx file into a ModelSpec, with no onnx package and no code from the file run.

    read_onnx("model.onnx") -> ModelSpec          (also edgelstm.load / load_spec / `edgelstm convert`)

onnx_proto decodes the protobuf, onnx_fold evaluates the exporters' constant subgraphs (gate
shuffles, zero initial states, shape arithmetic) and onnx_graph walks the ops on the input:
onnx_layers turns them into layers, recurrent() here turns each LSTM/GRU node into a
RecurrentLayer. The graph outputs become the model's outputs, per step: an output that is only
the last step (out[:, -1], h_n[-1]) streams as every step's value. Several outputs (or a Concat
of several chains) become named heads.

Gate order. ONNX LSTM W/R/B blocks are i, o, f, c; PyTorch's (ours) are i, f, g, o. ONNX GRU
is z, r, h; ours r, z, n. Peepholes P are i, o, f; ours i, f, o. B = [Wb, Rb] = [b_ih, b_hh].
"""

from __future__ import annotations

import os
import re
from dataclasses import replace

import numpy as np

from ..errors import ModelFormatError
from .layers import Affine, Head, describe
from .onnx_graph import ONE, SHAPE_OPS, Branches, F, Refused, Stacked, Stream, T, Walker, same_path
from .onnx_layers import LAYER_OPS
from .onnx_proto import parse_model
from .spec import ModelSpec, RecurrentLayer

MAX_FILE_BYTES = 2**31          # protobuf's own limit; bigger weights must be external data

_LSTM_FROM_ONNX = [0, 2, 3, 1]   # ONNX blocks (i, o, f, c) -> ours (i, f, g, o)
_GRU_FROM_ONNX = [1, 0, 2]       # ONNX (z, r, h) -> ours (r, z, n)
_PEEP_FROM_ONNX = [0, 2, 1]      # ONNX P (i, o, f) -> our w_peep rows (i, f, o)
_DEFAULT_ACTIVATIONS = {"lstm": ["sigmoid", "tanh", "tanh"], "gru": ["sigmoid", "tanh"]}
_FLOAT_TYPES = (1, 10, 11, 16)   # float, float16, double, bfloat16


class _WrongTimeAxis(Exception):
    """The recurrent node found time where this reading of the input put the batch."""


def read_onnx(path, *, input_norm=None, output_norm=None, **options) -> ModelSpec:
    """The streaming model in an ONNX file.

    input_norm/output_norm: (mean, std) or Affine, added before / after the graph (as for
    state_dicts); the state_dict-only options (arch, rnn, head) are refused.
    """
    for key in ("arch", "rnn", "head"):
        if options.pop(key, None) is not None:
            raise ModelFormatError(f"{key}= chooses layers in a state_dict; an ONNX file's graph already says how "
                                   f"its layers connect, so drop it (CLI: --{key}/--no-head)")
    options.pop("allow_unused", None)
    if options:
        raise ModelFormatError(f"unknown option(s) for an ONNX file: {', '.join(sorted(options))}")
    path = os.fspath(path)
    model = parse_model(_read(path), os.path.dirname(os.path.abspath(path)))
    spec = _spec_from_model(model, {"file": os.path.basename(path), "format": "onnx"})
    return _with_norms(spec, input_norm, output_norm)


def _read(path: str) -> bytes:
    size = os.path.getsize(path)
    if size > MAX_FILE_BYTES:
        raise ModelFormatError(f"{path}: {size:,} bytes is over protobuf's 2 GiB limit for one file; export with "
                               f"external data (torch.onnx.export(..., external_data=True))")
    with open(path, "rb") as fh:
        return fh.read()


def _spec_from_model(model, source: dict) -> ModelSpec:
    g = model.graph
    if not g.outputs:
        raise ModelFormatError("the ONNX graph has no outputs")
    x = _model_input(g)
    width, candidates, static = _input_layout(x)
    outputs = [o.name for o in g.outputs]
    for k, axes in enumerate(candidates):
        try:
            values = Walker(model, x.name, axes, width, OPS, static[k]).run(outputs)
            break
        except _WrongTimeAxis:
            if k == len(candidates) - 1:
                raise ModelFormatError(f"input {x.name!r}: the recurrent layer reads its axes in an order that "
                                       f"does not match the input's shape {x.shape}") from None
    source.update(producer=model.producer, opset=int(model.opsets.get("", model.opsets.get("ai.onnx", 0))),
                  outputs=outputs, last_step_outputs=[o for o, v in zip(outputs, values)
                                                      if isinstance(v, Stream) and v.last])
    return _assemble(outputs, values, source)


def _model_input(g):
    real = [i for i in g.inputs if i.name not in g.initializers]
    if len(real) != 1:
        names = ", ".join(repr(i.name) for i in real) or "none"
        raise ModelFormatError(f"the model has {len(real)} inputs ({names}); edgelstm streams one input, a vector "
                               f"of readings per step, and keeps the recurrent state itself. Export with the input "
                               f"sequence only (no h0/c0 arguments)")
    x = real[0]
    if x.elem_type not in _FLOAT_TYPES:
        raise ModelFormatError(f"input {x.name!r} has element type {x.elem_type}; expected float readings")
    return x


def _input_layout(x) -> tuple[int, list[tuple], list]:
    """(features, candidate axis labels, the static sequence length of each) from the declared shape:
    (batch, time, features) is tried first, (time, batch, features) second."""
    shape = x.shape
    if shape is None or len(shape) not in (2, 3) or not isinstance(shape[-1], int) or shape[-1] <= 0:
        raise ModelFormatError(f"input {x.name!r} has shape {shape}; expected (batch, time, features) or "
                               f"(time, features) with a fixed number of features")
    if len(shape) == 2:
        return shape[-1], [(T, F)], [shape[0] if isinstance(shape[0], int) else None]
    order = [1, 0] if not (shape[1] == 1 and shape[0] != 1) else [0, 1]
    candidates = [tuple(T if k == t else F if k == 2 else ONE for k in range(3)) for t in order]
    return shape[-1], candidates, [shape[t] if isinstance(shape[t], int) else None for t in order]


# --- LSTM / GRU nodes ---

def recurrent(walker, node, ins) -> list:
    """The outputs (Y, Y_h, Y_c) of an ONNX LSTM/GRU node as streams through a RecurrentLayer."""
    kind = node.op_type.lower()
    ins = list(ins) + [None] * (8 - len(ins))
    x = ins[0]
    if isinstance(x, Stacked) or not isinstance(x, Stream):
        _fail(node, "its input X must be computed from the model input")
    if x.last:
        _fail(node, "it runs on the last step only (a sequence of one step); streaming needs every step")
    layout = node.attr("layout", 0)
    expect = (T, ONE, F) if layout == 0 else (ONE, T, F)
    if x.axes != expect:
        if sorted(x.axes) == sorted(expect):
            raise _WrongTimeAxis
        _fail(node, f"X has axes {x.axes}; expected (time, batch, features) for layout={layout}")
    _check_attributes(node, kind)
    layer = _layer(node, kind, x.width, [_constant(node, v, k) for k, v in enumerate(ins[:4] + ins[7:8])])
    _check_initial_states(node, ins, layer.hidden_size)
    y = x.push(layer, axes=(T, ONE, ONE, F) if layout == 0 else (ONE, T, ONE, F), width=layer.hidden_size)
    return [y, replace(y, axes=(ONE, ONE, F), last=True),
            Refused(f"it uses the cell state Y_c of {node.label}; edgelstm keeps it internally and outputs h only")]


def _fail(node, why: str):
    raise ModelFormatError(f"{node.label}: {why}")


def _constant(node, v, k: int):
    if v is None or (isinstance(v, np.ndarray) and v.dtype != object):
        return v
    if k == 0:
        return None
    name = {1: "W", 2: "R", 3: "B", 4: "P"}[min(k, 4)]
    _fail(node, f"its weight {name} must be a constant (an initializer), but it is computed at run time")


def _check_attributes(node, kind: str) -> None:
    direction = node.attr("direction", "forward")
    if direction != "forward":
        _fail(node, f"direction={direction!r}: a {direction} layer needs future inputs and cannot stream; train "
                    f"with bidirectional=False for streaming use")
    if "clip" in node.attrs:
        _fail(node, f"clip={node.attrs['clip']:g} clips the gate inputs, which PyTorch and edgelstm do not; export "
                    f"without cell clipping")
    if node.attr("input_forget", 0):
        _fail(node, "input_forget=1 couples the input and forget gates (f = 1 - i), which edgelstm does not "
                    "implement")
    acts = [a.lower() for a in node.attr("activations", [])]
    if acts and acts not in (_DEFAULT_ACTIVATIONS[kind], _DEFAULT_ACTIVATIONS[kind] * 2):
        _fail(node, f"activations {node.attr('activations')}: only the defaults "
                    f"({', '.join(_DEFAULT_ACTIVATIONS[kind])}) are supported")
    if kind == "gru" and not node.attr("linear_before_reset", 0):
        _fail(node, "linear_before_reset=0 applies the reset gate before the recurrent matrix "
                    "(n = tanh(W x + R (r * h) + b)); edgelstm's GRU, like PyTorch's and Keras' reset_after=True, "
                    "applies it after (n = tanh(W x + r * (R h + b))). Re-export with linear_before_reset=1 "
                    "(torch.onnx.export always does)")


def _layer(node, kind: str, n_in: int, arrays: list) -> RecurrentLayer:
    _, w, r, b, p = arrays
    gates = 4 if kind == "lstm" else 3
    if w is None or r is None:
        _fail(node, "W and R are required")
    hidden = node.attr("hidden_size", r.shape[-1] if r.ndim == 3 else 0)
    g = gates * hidden
    _shape(node, "W", w, (1, g, n_in))
    _shape(node, "R", r, (1, g, hidden))
    b = np.zeros((1, 2 * g), np.float32) if b is None else b
    _shape(node, "B", b, (1, 2 * g))
    order = _LSTM_FROM_ONNX if kind == "lstm" else _GRU_FROM_ONNX

    def ours(a):                                        # (G*H, ...) in ONNX order -> ours
        return a.reshape((gates, hidden) + a.shape[1:])[order].reshape(a.shape)

    peep = None
    if p is not None:
        _shape(node, "P", p, (1, 3 * hidden))
        if np.asarray(p).any():
            peep = np.asarray(p[0]).reshape(3, hidden)[_PEEP_FROM_ONNX]
    return RecurrentLayer(kind, n_in, hidden, ours(w[0]), ours(r[0]), ours(b[0, :g]), ours(b[0, g:]),
                          w_peep=peep)


def _shape(node, name: str, a, shape: tuple) -> None:
    if tuple(a.shape) != shape:
        extra = " (two directions: a bidirectional layer cannot stream)" if a.ndim and a.shape[0] == 2 else ""
        _fail(node, f"{name} has shape {tuple(a.shape)}; expected {shape}{extra}")


def _check_initial_states(node, ins, hidden: int) -> None:
    lens = ins[4]
    if lens is not None and not (isinstance(lens, np.ndarray) and lens.dtype == object
                                 and all(repr(v) == "T" for v in lens.reshape(-1))):
        _fail(node, "sequence_lens masks or fixes the sequence length; streaming has no end of sequence, so export "
                    "without packed sequences")
    for k, name in ((5, "initial_h"), (6, "initial_c")):
        v = ins[k]
        if v is None:
            continue
        if not isinstance(v, np.ndarray) or v.dtype == object:
            _fail(node, f"{name} is computed at run time; edgelstm starts every stream from zero state, so export "
                        f"calling the layer without an initial state")
        if v.ndim != 3 or v.shape[-1] != hidden or 1 not in v.shape[:2]:
            _fail(node, f"{name} has shape {v.shape} but hidden_size is {hidden}: the node is inconsistent. "
                        f"ONNX's LSTM has no projection; torch.onnx.export(dynamo=True) writes such a node for "
                        f"nn.LSTM(proj_size=...), which no ONNX runtime can run. Export without proj_size, or load "
                        f"the state_dict (.pt) instead")
        if np.asarray(v, np.float64).any():
            _fail(node, f"{name} is a non-zero constant (a learned initial state); edgelstm starts every stream "
                        f"from zeros, so the outputs would differ")


OPS = {**SHAPE_OPS, **LAYER_OPS, "LSTM": recurrent, "GRU": recurrent}


# --- the ModelSpec ---

def _flatten_outputs(names: list[str], values: list) -> list[tuple[str, tuple]]:
    """(name, path) per output; a Concat of several chains counts as one output per chain."""
    out = []
    for name, v in zip(names, values):
        if isinstance(v, Refused):
            raise ModelFormatError(f"graph output {name!r}: {v.reason}")
        if isinstance(v, Stacked):
            raise ModelFormatError(f"graph output {name!r} is the hidden state of every layer (h_n); output "
                                   f"h_n[-1] or the output sequence instead")
        if not isinstance(v, Stream):
            raise ModelFormatError(f"graph output {name!r} is a constant; it does not depend on the input")
        if v.pad:
            raise ModelFormatError(f"graph output {name!r} is padded input, not a layer's output")
        if v.path and isinstance(v.path[-1], Branches):
            out += [(f"{name}_{k}", v.path[:-1] + part) for k, part in enumerate(v.path[-1].parts)]
        else:
            out.append((name, v.path))
    return out


def _split(name: str, path: tuple) -> tuple[int, int]:
    """(first, last + 1) index of the recurrent layers in `path`, refusing what a ModelSpec cannot hold."""
    where = [k for k, x in enumerate(path) if isinstance(x, RecurrentLayer)]
    if not where:
        raise ModelFormatError(f"graph output {name!r} does not pass through an LSTM or GRU layer")
    for k in range(where[0], where[-1]):
        if not isinstance(path[k], RecurrentLayer):
            raise ModelFormatError(f"graph output {name!r}: {describe(path[k])} between recurrent layers is not "
                                   f"supported; only layers before the first and after the last")
    for x in path:
        if isinstance(x, Branches):
            raise ModelFormatError(f"graph output {name!r}: layers after concatenating several outputs are not "
                                   f"supported; concatenate last")
    return where[0], where[-1] + 1


def _assemble(names: list[str], values: list, source: dict) -> ModelSpec:
    outs = _flatten_outputs(names, values)
    splits = [_split(n, p) for n, p in outs]
    trunk = outs[0][1][:splits[0][1]]
    for (name, path), (_, end) in zip(outs, splits):
        if not same_path(path[:end], trunk):
            raise ModelFormatError(f"graph outputs {outs[0][0]!r} and {name!r} come from different recurrent "
                                   f"layers or input layers; edgelstm needs one shared trunk")
    tails = [p[end:] for (_, p), (_, end) in zip(outs, splits)]
    start = splits[0][0]
    pre, layers = trunk[:start], trunk[start:]
    if len(tails) == 1:
        return ModelSpec(layers, pre, tails[0], (), source)
    n = 0
    while all(len(t) > n for t in tails) and all(t[n] is tails[0][n] for t in tails):
        n += 1
    heads = tuple(Head(h, t[n:]) for h, t in zip(_head_names([o for o, _ in outs]), tails))
    return ModelSpec(layers, pre, tails[0][:n], heads, source)


def _head_names(names: list[str]) -> list[str]:
    """Output names as unique identifiers: '/out/y.0' -> 'out_y_0', '0' -> 'y_0'."""
    out = []
    for name in names:
        ident = re.sub(r"\W+", "_", name).strip("_") or "y"
        ident = ident if not ident[0].isdigit() else f"y_{ident}"
        base, k = ident, 1
        while ident in out:
            k += 1
            ident = f"{base}_{k}"
        out.append(ident)
    return out


def _with_norms(spec: ModelSpec, input_norm, output_norm) -> ModelSpec:
    def affine(v, make):
        return v if v is None or isinstance(v, Affine) else make(*v)

    pre, post = list(spec.pre), list(spec.post)
    if input_norm is not None:
        pre.insert(0, affine(input_norm, Affine.normalise))
    if output_norm is not None:
        if spec.heads:
            raise ModelFormatError("output_norm applies to a single output; this model has named heads")
        post.append(affine(output_norm, Affine.denormalise))
    if input_norm is None and output_norm is None:
        return spec
    return ModelSpec(spec.layers, tuple(pre), tuple(post), spec.heads, spec.source)
