"""Walk an ONNX graph symbolically, turning the ops on the model's input into edgelstm layers.

Every value in the graph is one of:
  np.ndarray  a constant (initializers, Constant nodes, whatever onnx_fold computes from them)
  Stream      a tensor computed from the model input: a vector of `width` features per step
  Stacked     streams concatenated along a size-1 axis (h_n of several layers), to be indexed
  Refused     something that cannot be streamed; using it raises its reason
This module holds the values, the walk and the shape plumbing (SHAPE_OPS); onnx_layers the ops
that make layers (LAYER_OPS); onnx_file the LSTM/GRU nodes and the ModelSpec.
A Stream's axes are labelled 'T' (time), 'F' (features) or '1' (size one: batch, direction):
the engine runs one stream at a time, so the batch is 1. Its `path` is the chain of layers
applied since the input (layers.py objects, RecurrentLayer, and a final Branches for
concatenated heads); the caller turns the graph outputs' paths into a ModelSpec.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field, replace
from typing import Any, NoReturn

import numpy as np

from ..errors import ModelFormatError
from .layers import Linear
from .onnx_fold import FOLD_OPS, Sym, axes_arg, fold, ints, norm_axis, slice_spec
from .onnx_proto import array as tensor_array

T, F, ONE = "T", "F", "1"
BIG = 2**31                     # a Slice end at least this large means "to the end"


@dataclass(frozen=True)
class Branches:
    """Chains applied to one shared value and concatenated over features: the model's heads."""

    parts: tuple                # (path suffix, ...) one per head
    widths: tuple


@dataclass(frozen=True)
class Stream:
    axes: tuple                 # labels 'T' / 'F' / '1', one per tensor axis
    width: int                  # features per step
    path: tuple = ()            # layers applied since the model input
    last: bool = False          # only the last step is kept (the T axis was indexed away)
    fresh: str = ""             # 'linear': path[-1] is a MatMul awaiting its bias; 'affine': elementwise arithmetic
    pad: int = 0                # time steps of left padding waiting for a Conv

    def push(self, layer, **changes) -> Stream:
        return replace(self, path=self.path + (layer,), fresh="", **changes)

    def axis(self, label: str) -> int | None:
        return self.axes.index(label) if label in self.axes else None


@dataclass(frozen=True)
class Stacked:
    parts: tuple                # Streams, one per index along `axis`
    axis: int


@dataclass(frozen=True)
class Refused:
    reason: str


def same_path(p: tuple, q: tuple) -> bool:
    """Paths hold the very same layer objects (layers hold arrays, so == would compare them)."""
    return len(p) == len(q) and all(a is b for a, b in zip(p, q))


def node_name(node) -> str:
    return node.name.lstrip("/")


def fail(node, why: str) -> NoReturn:
    raise ModelFormatError(f"{node.label}: {why}")


# --- graph order ---

def ordered_nodes(graph, wanted: list[str]) -> list:
    """The nodes the outputs `wanted` depend on, in dependency order; refuses cycles and
    values defined twice. Nodes off every output's path are never looked at again."""
    producer: dict[str, int] = {}                  # value name -> index of the node that computes it
    for k, node in enumerate(graph.nodes):
        for out in node.outputs:
            if out and out in producer:
                raise ModelFormatError(f"value {out!r} is produced by two nodes ({graph.nodes[producer[out]].label}, "
                                       f"{node.label}); the graph is malformed")
            if out:
                producer[out] = k
    need, stack = set(), [producer[o] for o in wanted if o in producer]
    while stack:
        k = stack.pop()
        if k not in need:
            need.add(k)
            stack += [producer[i] for i in graph.nodes[k].inputs if i in producer]
    deps = {k: {producer[i] for i in graph.nodes[k].inputs if i in producer} for k in need}
    users: dict[int, list[int]] = {}
    for k, ds in deps.items():
        for d in ds:
            users.setdefault(d, []).append(k)
    ready = [k for k, ds in deps.items() if not ds]
    heapq.heapify(ready)
    order = []
    while ready:
        k = heapq.heappop(ready)
        order.append(graph.nodes[k])
        for u in users.get(k, ()):
            deps[u].discard(k)
            if not deps[u]:
                heapq.heappush(ready, u)
    if len(order) < len(need):
        stuck = min(k for k in need if deps[k])
        raise ModelFormatError(f"the graph has a cycle through {graph.nodes[stuck].label} (its inputs depend on its "
                               f"own outputs); the file is damaged")
    return order


# --- the walk ---

class Walker:
    """Evaluates the graph: constants by onnx_fold, streams by `ops` {op_type: handler(walker, node, ins)}.

    x_axes labels the model input's axes; static_t is its declared sequence length, if fixed."""

    def __init__(self, model, x_name: str, x_axes: tuple, width: int, ops: dict, static_t: int | None = None):
        g = model.graph
        self.graph, self.base_dir, self.ops, self.static_t = g, model.base_dir, ops, static_t
        self.opset = model.opsets.get("", model.opsets.get("ai.onnx", 1))
        # value name -> Stream, Stacked, a constant (np.ndarray, from an initializer or folded) or Refused
        self.values: dict[str, Any] = {x_name: Stream(tuple(x_axes), width)}
        self.other_inputs = {i.name for i in g.inputs if i.name not in g.initializers and i.name != x_name}

    def value(self, name: str, node):
        if not name:
            return None
        if name in self.values:
            return self.values[name]
        if name in self.graph.initializers:
            self.values[name] = tensor_array(self.graph.initializers[name], self.base_dir)
            return self.values[name]
        if name in self.other_inputs:
            return Refused(f"it reads the graph input {name!r}; edgelstm streams a single input (one reading per "
                           f"step) and keeps the recurrent state itself, so the model may have only one input")
        raise ModelFormatError(f"{node.label} reads {name!r}, which no node, initializer or graph input provides: "
                               f"an initializer is missing (if the model was saved with external data, keep the "
                               f".data file next to it)")

    def run(self, outputs: list[str]) -> list:
        for node in ordered_nodes(self.graph, outputs):
            self._evaluate(node)
        return [self.value(o, _OutputNode(o)) for o in outputs]

    def _evaluate(self, node) -> None:
        if node.domain not in ("", "ai.onnx"):
            fail(node, f"custom operator domain {node.domain!r}; only standard ONNX ops can be read")
        ins = [self.value(name, node) for name in node.inputs]
        for v in ins:
            if isinstance(v, Refused):
                fail(node, v.reason)
        streams = [v for v in ins if isinstance(v, (Stream, Stacked))]
        if not streams and node.op_type in FOLD_OPS:
            outs = fold(node, ins, self.opset)
        elif streams and node.op_type in self.ops:
            if any(isinstance(s, Stream) and s.pad for s in streams) and node.op_type != "Conv":
                fail(node, "it follows a Pad over time; only a Conv may come right after the padding")
            outs = self._stream_op(node, ins)
        elif node.op_type in ("LSTM", "GRU"):
            fail(node, "its input X does not come from the model input")
        else:
            hint = _HINTS.get(node.op_type, "")
            where = "on the path from the input to an output" if streams else "computing a constant"
            ops = sorted(self.ops) if streams else sorted(FOLD_OPS)
            raise ModelFormatError(f"unsupported ONNX op {node.op_type} at node {node.name or '(unnamed)'!r} ({where})"
                                   f"{hint}; supported: {', '.join(ops)}")
        for k, name in enumerate(node.outputs):
            if name:
                self.values[name] = outs[k] if k < len(outs) else Refused(
                    f"it uses output {k} of {node.label}, which edgelstm does not compute")


    def _stream_op(self, node, ins: list) -> list:
        need = _MIN_INPUTS.get(node.op_type, 1)
        if len([v for v in ins[:need] if v is not None]) < need:
            fail(node, f"it has {len(ins)} inputs; the op needs at least {need}")
        ins = ins + [None] * (8 - len(ins))
        try:
            return self.ops[node.op_type](self, node, ins)
        except (IndexError, TypeError, ValueError, KeyError) as exc:   # a malformed node's attributes
            raise ModelFormatError(f"{node.label}: malformed node ({type(exc).__name__}: {exc})") from None


_MIN_INPUTS = {"Add": 2, "Sub": 2, "Mul": 2, "Div": 2, "MatMul": 2, "Gemm": 2, "Reshape": 2, "Gather": 2,
               "LayerNormalization": 2, "BatchNormalization": 5, "Conv": 2, "LSTM": 3, "GRU": 3}


@dataclass
class _OutputNode:
    name: str
    label: str = field(init=False)

    def __post_init__(self):
        self.label = f"graph output {self.name!r}"


_HINTS = {
    "Erf": " (GELU written out with Erf, as exporters do below opset 20: re-export with opset_version=20)",
    "ReduceMean": " (LayerNorm written out, as exporters do below opset 17: re-export with opset_version=17)",
    "If": " (a branch chosen at run time, e.g. an optional state: export without it)",
    "Loop": " (a loop: export nn.LSTM/nn.GRU modules rather than a Python loop over cells)",
    "Scan": " (a loop: export nn.LSTM/nn.GRU modules rather than a Python loop over cells)",
}


# --- helpers on streams ---

def as_stream(node, v, k: int = 0) -> Stream:
    if isinstance(v, Stacked):
        fail(node, "it uses the hidden states of several layers at once (h_n); index one layer, e.g. h_n[-1]")
    if not isinstance(v, Stream):
        fail(node, f"input {k} must be computed from the model input")
    return v


def as_const(node, v, what: str) -> np.ndarray:
    if not isinstance(v, np.ndarray):
        fail(node, f"{what} must be a constant (an initializer), but it is computed from the model input")
    if v.dtype == object:
        fail(node, f"{what} depends on the sequence length")
    return v


def _dims(s: Stream) -> list:
    return [Sym(1) if a == T else s.width if a == F else 1 for a in s.axes]


def _selection(node, s: Stream, idx: list[int]) -> Linear:
    """Picking features idx as a Linear of one-hot rows (exact)."""
    return Linear(np.eye(s.width, dtype=np.float32)[idx], np.zeros(len(idx), np.float32),
                  f"{node_name(node)} (features {idx[0]}..{idx[-1]})")


# --- shape plumbing ---

def op_identity(w, node, ins):
    return [ins[0]]


def op_cast(w, node, ins):
    if node.attr("to", 1) not in (1, 10, 11, 16):
        fail(node, "it casts the model's values to a non-float type")
    return [ins[0]]


def op_transpose(w, node, ins):
    s = as_stream(node, ins[0])
    perm = node.attr("perm", list(range(len(s.axes)))[::-1])
    if sorted(perm) != list(range(len(s.axes))):
        fail(node, f"perm {perm} does not fit {len(s.axes)} axes")
    return [replace(s, axes=tuple(s.axes[p] for p in perm))]


def op_squeeze(w, node, ins):
    s = as_stream(node, ins[0])
    axes = axes_arg(node, ins)
    if axes is None:
        axes = [k for k, a in enumerate(s.axes) if a == ONE or (a == F and s.width == 1)]
    axes = {norm_axis(a, len(s.axes), node.label) for a in axes}
    for k in axes:
        if s.axes[k] == T:
            fail(node, "it squeezes the time axis, so the model only works for sequences of one step")
        if s.axes[k] == F and s.width != 1:
            fail(node, f"it squeezes the feature axis of {s.width} features")
    return [replace(s, axes=tuple(a for k, a in enumerate(s.axes) if k not in axes))]


def op_unsqueeze(w, node, ins):
    s = as_stream(node, ins[0])
    axes = axes_arg(node, ins) or []
    rank = len(s.axes) + len(axes)
    labels = list(s.axes)
    for k in sorted(norm_axis(a, rank, node.label) for a in axes):
        labels.insert(k, ONE)
    return [replace(s, axes=tuple(labels))]


def op_shape(w, node, ins):
    s = as_stream(node, ins[0])
    dims = _dims(s)[node.attr("start", 0):node.attr("end", None)]
    return [np.array(dims, object if any(isinstance(d, Sym) for d in dims) else np.int64)]


def op_reshape(w, node, ins):
    """A reshape that only adds or drops size-1 axes (e.g. folding the direction axis away)."""
    s = as_stream(node, ins[0])
    shape = list(np.asarray(ins[1]).reshape(-1))
    dims = _dims(s)
    if not node.attr("allowzero", 0):
        shape = [dims[k] if not isinstance(d, Sym) and d == 0 and k < len(dims) else d for k, d in enumerate(shape)]
    pending = [a for a in s.axes if a == T or (a == F and s.width != 1)]
    labels = []
    for d in shape:
        if isinstance(d, Sym) or (w.static_t is not None and d == w.static_t and pending[:1] == [T]):
            want = T if (not isinstance(d, Sym) or d.coef == 1) else None
        elif d == -1:
            want = pending[0] if pending else ONE
        elif d == 1:
            want = ONE
        else:
            want = F if d == s.width else None
        if want is None and pending[:1] == [T] and not isinstance(d, Sym):
            fail(node, f"it reshapes {shape_text(s)} to {[str(d) for d in shape]}, fixing the time axis at {d} "
                        f"steps (the exporter baked in the example input's length); export with a dynamic time "
                        f"axis (dynamic_axes / dynamic_shapes) or batch_first=True")
        if want != ONE and (not pending or pending[0] != want):
            fail(node, f"it reshapes {shape_text(s)} to {[str(d) for d in shape]}, which mixes time, batch and "
                        f"feature axes; only adding or removing size-1 axes can be streamed")
        labels.append(want)
        if want != ONE:
            pending.pop(0)
    if pending:
        fail(node, f"it reshapes {shape_text(s)} to {[str(d) for d in shape]}, dropping an axis")
    if s.width == 1 and F in s.axes and ONE in labels:
        labels[len(labels) - 1 - labels[::-1].index(ONE)] = F
    return [replace(s, axes=tuple(labels))]


def shape_text(s: Stream) -> str:
    return "(" + ", ".join("T" if a == T else str(s.width) if a == F else "1" for a in s.axes) + ")"


def op_flatten(w, node, ins):
    s = as_stream(node, ins[0])
    axis = node.attr("axis", 1) % (len(s.axes) + 1)
    groups = [s.axes[:axis], s.axes[axis:]]
    labels = []
    for g in groups:
        big = [a for a in g if a == T or (a == F and s.width != 1)]
        if len(big) > 1:
            fail(node, "it flattens time and features together")
        labels.append(big[0] if big else F if F in g else ONE)
    return [replace(s, axes=tuple(labels))]


def op_gather(w, node, ins):
    v = ins[0]
    idx = as_const(node, ins[1], "the indices")
    if isinstance(v, Stacked):
        return [_pick(node, v, idx, keep=idx.ndim > 0)]
    s = as_stream(node, v)
    axis = norm_axis(node.attr("axis", 0), len(s.axes), node.label)
    values = ints(idx, "Gather indices")
    if idx.ndim > 1:
        fail(node, "it gathers with a multi-dimensional index")
    return [_index(node, s, axis, values, keep=idx.ndim == 1)]


def _index(node, s: Stream, axis: int, values: list[int], keep: bool) -> Stream:
    """Selecting `values` along one axis: the last step of T, element 0 of a size-1 axis, or features."""
    label = s.axes[axis]
    kept = s.axes[:axis] + ((ONE if label != F else F,) if keep else ()) + s.axes[axis + 1:]
    if label == T:
        if values != [-1]:
            fail(node, f"it selects step(s) {values} of the sequence; only the last step (x[:, -1]) can be streamed")
        return replace(s, axes=kept, last=True)
    if label == ONE:
        if len(values) != 1 or values[0] not in (0, -1):
            fail(node, f"index {values} is out of range for a size-1 axis")
        return replace(s, axes=kept)
    if not values or any(not -s.width <= k < s.width for k in values):
        fail(node, f"feature index {values} is out of range for {s.width} features")
    picked = [k % s.width for k in values]
    if picked == list(range(s.width)):
        return replace(s, axes=kept)
    return s.push(_selection(node, s, picked), axes=kept, width=len(picked))


def _pick(node, v: Stacked, idx: np.ndarray, keep: bool) -> Stream:
    values = ints(idx, "index")
    if len(values) != 1 or not -len(v.parts) <= values[0] < len(v.parts):
        fail(node, f"it picks {values} from {len(v.parts)} stacked layer states")
    part = v.parts[values[0]]
    return part if keep else replace(part, axes=part.axes[:v.axis] + part.axes[v.axis + 1:])


def op_slice(w, node, ins):
    v = ins[0]
    if isinstance(v, Stacked):
        (axis, start, end, step), = slice_spec(node, ins, len(v.parts[0].axes), w.opset)
        chosen = list(range(len(v.parts)))[_clip(start):_clip(end):step]
        if axis != v.axis or len(chosen) != 1:
            fail(node, "it slices several stacked layer states")
        return [v.parts[chosen[0]]]
    s = as_stream(node, v)
    for axis, start, end, step in slice_spec(node, ins, len(s.axes), w.opset):
        s = _slice_axis(node, s, axis, start, end, step)
    return [s]


def _clip(v) -> int:
    return BIG if isinstance(v, Sym) else max(min(int(v), BIG), -BIG)


def _slice_axis(node, s: Stream, axis: int, start, end, step: int) -> Stream:
    label, start, end = s.axes[axis], _clip(start), _clip(end)
    if label == T:
        if step == 1 and end >= BIG and start <= -BIG:
            return s
        if step == 1 and end >= BIG and start == 0:
            return s
        if step == 1 and end >= BIG and start == -1:
            return _index(node, s, axis, [-1], keep=True)
        fail(node, f"it slices steps [{start}:{end}:{step}] of the sequence; only the last step (x[:, -1:]) "
                    f"can be streamed")
    n = s.width if label == F else 1
    picked = list(range(n))[start:end:step]
    if not picked:
        fail(node, "the slice is empty")
    return _index(node, s, axis, picked, keep=True) if label == F else s


def op_concat(w, node, ins):
    if any(not isinstance(v, (Stream, Stacked)) for v in ins if v is not None):
        fail(node, "it concatenates a constant with values computed from the input")
    parts = [v for v in ins if v is not None]
    first = parts[0].parts[0] if isinstance(parts[0], Stacked) else parts[0]
    axis = norm_axis(node.attr("axis", 0), len(first.axes), node.label)
    if first.axes[axis] == ONE:
        flat = tuple(p for v in parts for p in (v.parts if isinstance(v, Stacked) else (v,)))
        return [Stacked(flat, axis)]
    streams = [as_stream(node, v, k) for k, v in enumerate(parts)]
    if first.axes[axis] != F or any(s.axes != first.axes or s.last != first.last for s in streams):
        fail(node, "it concatenates along an axis other than features, or values of different shapes")
    return [_branches(node, streams)]


def _branches(node, streams: list[Stream]) -> Stream:
    """Concatenated chains over a shared prefix: Stream(prefix + (Branches,))."""
    full, widths = [], []
    for s in streams:
        if s.path and isinstance(s.path[-1], Branches):
            full += [s.path[:-1] + p for p in s.path[-1].parts]
            widths += list(s.path[-1].widths)
        else:
            full.append(s.path)
            widths.append(s.width)
    n = 0
    while all(len(p) > n for p in full) and all(p[n] is full[0][n] for p in full):
        n += 1
    parts = tuple(p[n:] for p in full)
    first = streams[0]
    return replace(first, path=full[0][:n] + (Branches(parts, tuple(widths)),), width=sum(widths), fresh="")


SHAPE_OPS = {
    "Identity": op_identity, "Dropout": op_identity, "Cast": op_cast, "Transpose": op_transpose,
    "Squeeze": op_squeeze, "Unsqueeze": op_unsqueeze, "Shape": op_shape, "Reshape": op_reshape,
    "Flatten": op_flatten, "Gather": op_gather, "Slice": op_slice, "Concat": op_concat,
}
