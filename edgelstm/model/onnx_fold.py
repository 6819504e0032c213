"""A tiny constant folder for ONNX graphs: evaluates a whitelisted set of ops on constants.

Exporters compute the recurrent weights, the initial states and shape vectors with small
subgraphs (Slice/Concat gate shuffles, Shape -> Gather -> ConstantOfShape zeros, ...). These are
evaluated here with NumPy, and nothing else is ever run: an op not in FOLD_OPS is refused.

A shape entry that depends on the sequence length is a Sym (coef * T), carried in object
arrays; arithmetic that would need a concrete T (T + 1, T as a float, T * T) is refused.
Every result is bounded (MAX_FOLD_ELEMENTS) *before* it is allocated.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import ModelFormatError
from .onnx_proto import _DTYPES, BFLOAT16, BOOL, FLOAT16, Tensor
from .onnx_proto import array as tensor_array

MAX_FOLD_ELEMENTS = 1 << 26


class SequenceLength(ModelFormatError):
    """A constant would need the (unknown) sequence length as a number."""


class Sym:
    """coef * T, a shape entry that depends on the sequence length T."""

    __slots__ = ("coef",)

    def __init__(self, coef: int = 1):
        self.coef = int(coef)

    def _no(self, *_):
        raise SequenceLength("it computes with the sequence length as a number (T + k, T * T or T as a float)")

    def __mul__(self, other):
        if isinstance(other, Sym):
            self._no()
        return Sym(self.coef * int(other))

    __rmul__ = __mul__

    def __floordiv__(self, other):
        if isinstance(other, Sym) or not int(other) or self.coef % int(other):
            self._no()
        return Sym(self.coef // int(other))

    __truediv__ = __floordiv__
    __add__ = __radd__ = __sub__ = __rsub__ = __rtruediv__ = __rfloordiv__ = __int__ = __index__ = __float__ = _no
    __neg__ = __lt__ = __le__ = __gt__ = __ge__ = __bool__ = _no

    def __eq__(self, other):
        return isinstance(other, Sym) and other.coef == self.coef

    def __hash__(self):
        return hash(("Sym", self.coef))

    def __repr__(self):
        return "T" if self.coef == 1 else f"{self.coef}*T"


def is_symbolic(a) -> bool:
    return isinstance(a, np.ndarray) and a.dtype == object


def ints(a, what: str) -> list[int]:
    """A constant as a list of Python ints (refusing the sequence length and non-integers)."""
    a = np.asarray(a)
    if a.dtype == object:
        raise SequenceLength(f"{what} depends on the sequence length")
    if a.dtype.kind not in "iub":
        raise ModelFormatError(f"{what} must be integers, got {a.dtype}")
    return [int(v) for v in a.reshape(-1)]


def check_size(shape, what: str) -> None:
    n = math.prod(int(d) for d in shape)
    if n > MAX_FOLD_ELEMENTS or any(int(d) < 0 for d in shape):
        raise ModelFormatError(f"{what} would make a constant of shape {tuple(shape)} ({n:,} elements); "
                               f"refusing an absurd allocation")


def _numpy_dtype(to: int):
    if to == BFLOAT16 or to == FLOAT16:
        return np.float32
    if to == BOOL:
        return np.bool_
    if to not in _DTYPES:
        raise ModelFormatError(f"cannot cast to ONNX element type {to}")
    return np.dtype(_DTYPES[to]).newbyteorder("=")


def axes_arg(node, ins, k: int = 1):
    """Axes from input k (newer opsets) or the 'axes' attribute (older); None when neither."""
    if len(ins) > k and ins[k] is not None:
        return ints(ins[k], f"{node.label} axes")
    return node.attr("axes")


def norm_axis(axis: int, rank: int, what: str) -> int:
    if not -rank <= axis < max(rank, 1):
        raise ModelFormatError(f"{what}: axis {axis} is out of range for rank {rank}")
    return axis % rank if rank else 0


def slice_spec(node, ins, rank: int, opset: int):
    """[(axis, start, end, step)] of a Slice, from its inputs (opset >= 10) or attributes."""
    if opset < 10 or len(ins) < 3:
        starts, ends = node.attr("starts", []), node.attr("ends", [])
        axes, steps = node.attr("axes", list(range(len(starts)))), [1] * len(starts)
    else:
        starts, ends = list(np.asarray(ins[1]).reshape(-1)), list(np.asarray(ins[2]).reshape(-1))
        axes = ints(ins[3], "Slice axes") if len(ins) > 3 and ins[3] is not None else list(range(len(starts)))
        steps = ints(ins[4], "Slice steps") if len(ins) > 4 and ins[4] is not None else [1] * len(starts)
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise ModelFormatError(f"{node.label}: starts, ends, axes and steps differ in length")
    if 0 in steps:
        raise ModelFormatError(f"{node.label}: a Slice step of 0")
    return [(norm_axis(int(a), rank, node.label), s, e, int(st)) for a, s, e, st in zip(axes, starts, ends, steps)]


def _bound(v, n):
    """A Slice start/end as a Python int for a dimension of (known) size n (Sym T counts as n)."""
    return n if isinstance(v, Sym) else int(v)


def _slice(node, ins, opset):
    data = ins[0]
    index = [slice(None)] * data.ndim
    for axis, start, end, step in slice_spec(node, ins, data.ndim, opset):
        n = data.shape[axis]
        index[axis] = slice(max(min(_bound(start, n), 2**62), -2**62), max(min(_bound(end, n), 2**62), -2**62), step)
    return [data[tuple(index)]]


def _reshape(node, ins, opset):
    data, shape = ins[0], ints(ins[1], f"{node.label} shape")
    if not node.attr("allowzero", 0):
        shape = [data.shape[k] if d == 0 and k < data.ndim else d for k, d in enumerate(shape)]
    try:
        return [data.reshape(shape)]
    except ValueError as exc:
        raise ModelFormatError(f"{node.label}: cannot reshape {data.shape} to {shape} ({exc})") from None


def _expand(node, ins, opset):
    shape = ints(ins[1], f"{node.label} shape")
    try:
        out = np.broadcast_shapes(ins[0].shape, tuple(shape))
    except ValueError:
        raise ModelFormatError(f"{node.label}: cannot expand {ins[0].shape} to {shape}") from None
    check_size(out, node.label)
    return [np.broadcast_to(ins[0], out).copy()]


def _constant_of_shape(node, ins, opset):
    shape = ints(ins[0], f"{node.label} shape") if ins[0].size else []
    check_size(shape, node.label)
    value = node.attr("value")
    fill = tensor_array(value, ".").reshape(-1) if isinstance(value, Tensor) else np.zeros(1, np.float32)
    if fill.size != 1:
        raise ModelFormatError(f"{node.label}: value must hold one element")
    return [np.full(shape, fill[0], fill.dtype)]


def _constant(node, ins, opset):
    for name in ("value", "value_float", "value_floats", "value_int", "value_ints"):
        v = node.attrs.get(name)
        if v is None:
            continue
        if isinstance(v, Tensor):
            return [tensor_array(v, ".")]
        return [np.array(v, np.float32 if "float" in name else np.int64)]
    raise ModelFormatError(f"{node.label}: a Constant without a numeric value (sparse or string constants are "
                           f"not supported)")


def _gather(node, ins, opset):
    data, idx = ins[0], np.asarray(ins[1])
    axis = norm_axis(node.attr("axis", 0), data.ndim, node.label)
    check_size(data.shape[:axis] + idx.shape + data.shape[axis + 1:], node.label)
    idx = np.array(ints(idx, f"{node.label} indices"), np.int64).reshape(idx.shape)
    if ((idx < -data.shape[axis]) | (idx >= data.shape[axis])).any():
        raise ModelFormatError(f"{node.label}: index out of range for a dimension of {data.shape[axis]}")
    return [np.take(data, idx, axis=axis)]


def _split(node, ins, opset):
    data = ins[0]
    axis = norm_axis(node.attr("axis", 0), data.ndim, node.label)
    n = data.shape[axis]
    sizes = ints(ins[1], "Split sizes") if len(ins) > 1 and ins[1] is not None else node.attr("split")
    if sizes is None:
        parts = node.attr("num_outputs", len(node.outputs))
        step = -(-n // parts)
        sizes = [min(step, n - k * step) for k in range(parts)]
    if sum(sizes) != n or len(sizes) != len(node.outputs) or min(sizes) < 0:
        raise ModelFormatError(f"{node.label}: split sizes {sizes} do not cover a dimension of {n}")
    return np.split(data, np.cumsum(sizes)[:-1], axis=axis)


def _binary(fn):
    def op(node, ins, opset):
        a, b = ins[0], ins[1]
        try:
            shape = np.broadcast_shapes(np.shape(a), np.shape(b))
        except ValueError:
            raise ModelFormatError(f"{node.label}: shapes {np.shape(a)} and {np.shape(b)} do not broadcast") from None
        check_size(shape, node.label)
        return [fn(a, b)]
    return op


def _divide(a, b):
    if is_symbolic(a) or is_symbolic(b):
        return np.asarray(a, object) // np.asarray(b, object)
    if a.dtype.kind in "iu" and b.dtype.kind in "iu":
        if (b == 0).any():
            raise ModelFormatError("an integer division by zero among the constants")
        return (np.abs(a) // np.abs(b) * np.sign(a) * np.sign(b)).astype(np.result_type(a, b))   # truncates
    return np.divide(a, b)


def _cast(node, ins, opset):
    to, a = node.attr("to", 1), ins[0]
    if is_symbolic(a):
        if _numpy_dtype(to) not in (np.dtype("int64"), np.dtype("int32")):
            raise SequenceLength(f"{node.label} casts a shape holding the sequence length to a non-integer")
        return [a]
    return [a.astype(_numpy_dtype(to))]


def _shape(node, ins, opset):
    dims = list(np.shape(ins[0]))[node.attr("start", 0):node.attr("end", None)]
    return [np.array(dims, np.int64)]


def _squeeze(node, ins, opset):
    axes = axes_arg(node, ins)
    a = ins[0]
    axes = [k for k, d in enumerate(a.shape) if d == 1] if axes is None else [norm_axis(x, a.ndim, node.label)
                                                                              for x in axes]
    if any(a.shape[k] != 1 for k in axes):
        raise ModelFormatError(f"{node.label}: squeezes an axis whose size is not 1 (shape {a.shape})")
    return [a.reshape([d for k, d in enumerate(a.shape) if k not in axes])]


def _unsqueeze(node, ins, opset):
    axes = axes_arg(node, ins)
    a = ins[0]
    rank = a.ndim + len(axes or [])
    axes = sorted(norm_axis(x, rank, node.label) for x in axes or [])
    shape = list(a.shape)
    for k in axes:
        shape.insert(k, 1)
    return [a.reshape(shape)]


def _transpose(node, ins, opset):
    perm = node.attr("perm", list(range(ins[0].ndim))[::-1])
    if sorted(perm) != list(range(ins[0].ndim)):
        raise ModelFormatError(f"{node.label}: perm {perm} is not a permutation of {ins[0].ndim} axes")
    return [np.transpose(ins[0], perm)]


def _concat(node, ins, opset):
    parts = [np.atleast_1d(a) for a in ins if a is not None]
    axis = norm_axis(node.attr("axis", 0), parts[0].ndim, node.label)
    try:
        return [np.concatenate(parts, axis=axis)]
    except ValueError as exc:
        raise ModelFormatError(f"{node.label}: cannot concatenate ({exc})") from None


def _flatten(node, ins, opset):
    a = ins[0]
    axis = node.attr("axis", 1) % (a.ndim + 1) if a.ndim else 0
    return [a.reshape(math.prod(a.shape[:axis]), -1)]


def _unary(fn):
    def op(node, ins, opset):
        if is_symbolic(ins[0]):
            raise SequenceLength(f"{node.label} computes with the sequence length")
        with np.errstate(all="ignore"):
            return [fn(ins[0])]
    return op


FOLD_OPS = {
    "Constant": _constant, "Identity": lambda n, i, o: [i[0]], "Dropout": lambda n, i, o: [i[0]],
    "Cast": _cast, "Shape": _shape, "Size": lambda n, i, o: [np.array(np.size(i[0]), np.int64)],
    "Slice": _slice, "Concat": _concat, "Unsqueeze": _unsqueeze, "Squeeze": _squeeze, "Reshape": _reshape,
    "Transpose": _transpose, "Gather": _gather, "Flatten": _flatten, "ConstantOfShape": _constant_of_shape,
    "Expand": _expand, "Split": _split,
    "Add": _binary(np.add), "Sub": _binary(np.subtract), "Mul": _binary(np.multiply), "Div": _binary(_divide),
    "Pow": _binary(np.power), "Neg": _unary(np.negative), "Sqrt": _unary(np.sqrt),
    "Reciprocal": _unary(np.reciprocal),
}


def fold(node, ins: list, opset: int) -> list:
    """The outputs of `node` evaluated on constant inputs (None for an absent optional input)."""
    if ins and ins[0] is None and node.op_type not in ("Constant",):
        raise ModelFormatError(f"{node.label}: its first input is missing")
    try:
        out = FOLD_OPS[node.op_type](node, ins, opset)
    except SequenceLength as exc:
        raise ModelFormatError(f"{node.label}: {exc}; edgelstm streams sequences of any length, so the model "
                               f"must not depend on it") from None
    except (ValueError, TypeError, IndexError) as exc:
        raise ModelFormatError(f"{node.label}: cannot evaluate it on its constant inputs ({exc})") from None
    out = [a if isinstance(a, np.ndarray) else np.array(a, dtype=object if isinstance(a, Sym) else None)
           for a in out]
    for a in out:
        check_size(a.shape, node.label)
    return out
