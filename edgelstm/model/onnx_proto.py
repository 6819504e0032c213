"""Read .onnx files with the standard library and NumPy alone (no `onnx`, no protobuf package).

An ONNX file is one protobuf message, ModelProto. This decodes the subset a streaming model
needs: ModelProto -> GraphProto -> NodeProto / AttributeProto / TensorProto / ValueInfoProto
(field numbers from onnx/onnx.proto3). Unknown fields are skipped, as protobuf requires.
Subgraphs (If/Loop bodies) are kept as undecoded bytes: nothing here recurses without bound.

Every length is checked against the bytes really present before anything is sliced or
allocated, so a truncated or hostile file gives ModelFormatError, never a traceback or a huge
allocation: a tensor's claimed size must equal the bytes that hold it (in the file, or in an
external data file next to it).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import NoReturn

import numpy as np

from ..errors import ModelFormatError

MAX_DIM = 2**31 - 1
MAX_ELEMENTS = 2**28            # 1 GiB of float32: far above any streaming model
MAX_RANK = 32

# TensorProto.DataType -> (NumPy dtype of the stored words, which repeated field holds them when not raw)
FLOAT, UINT8, INT8, UINT16, INT16, INT32, INT64, STRING, BOOL, FLOAT16, DOUBLE, UINT32, UINT64 = range(1, 14)
BFLOAT16 = 16
_DTYPES = {FLOAT: "<f4", UINT8: "u1", INT8: "i1", UINT16: "<u2", INT16: "<i2", INT32: "<i4", INT64: "<i8",
           BOOL: "u1", FLOAT16: "<f2", DOUBLE: "<f8", UINT32: "<u4", UINT64: "<u8", BFLOAT16: "<u2"}
_TYPE_NAMES = {0: "UNDEFINED", 8: "STRING", 14: "COMPLEX64", 15: "COMPLEX128", 17: "FLOAT8E4M3FN",
               18: "FLOAT8E4M3FNUZ", 19: "FLOAT8E5M2", 20: "FLOAT8E5M2FNUZ", 21: "UINT4", 22: "INT4",
               23: "FLOAT4E2M1"}
_FLOAT_DATA, _INT32_DATA, _INT64_DATA, _DOUBLE_DATA, _UINT64_DATA = 4, 5, 7, 10, 11
_FIELD_OF = {FLOAT: _FLOAT_DATA, DOUBLE: _DOUBLE_DATA, INT64: _INT64_DATA, UINT32: _UINT64_DATA,
             UINT64: _UINT64_DATA}                                      # every other type: int32_data


def _damaged(what: str, why: str) -> NoReturn:
    raise ModelFormatError(f"not a valid ONNX file: {what}: {why}. The file is truncated or damaged; "
                           f"export it again (torch.onnx.export) or check the copy")


# --- the protobuf wire format ---

def _varint(buf: memoryview, pos: int, what: str) -> tuple[int, int]:
    value = shift = 0
    for k in range(10):
        if pos + k >= len(buf):
            _damaged(what, "a number runs past the end of the data")
        byte = buf[pos + k]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos + k + 1
        shift += 7
    _damaged(what, "a number is longer than 10 bytes")


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def fields(buf: memoryview, what: str):
    """(field number, wire type, value) of each field: an int for varints, bytes (a memoryview) otherwise."""
    if not isinstance(buf, memoryview):
        _damaged(what, "a message field is not length-delimited")
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos, what)
        number, wire = key >> 3, key & 7
        if number == 0:
            _damaged(what, "field number 0")
        value: int | memoryview
        if wire == 0:
            value, pos = _varint(buf, pos, what)
        elif wire in (1, 2, 5):
            if wire == 2:
                size, pos = _varint(buf, pos, what)
            else:
                size = 8 if wire == 1 else 4
            if pos + size > end:
                _damaged(what, f"field {number} claims {size:,} bytes but only {end - pos:,} remain")
            value, pos = buf[pos:pos + size], pos + size
        else:
            _damaged(what, f"field {number} has wire type {wire}, which ONNX never uses")
        yield number, wire, value


def _text(wire: int, value, what: str) -> str:
    if wire != 2:
        _damaged(what, "a string field is not length-delimited")
    return bytes(value).decode("utf-8", errors="replace")


def _int(wire: int, value, what: str) -> int:
    if wire != 0:
        _damaged(what, "an integer field is not a varint")
    return _signed(value)


def _repeated(chunks: list, wire: int, value, kind: str, what: str) -> None:
    """Append one occurrence of a repeated scalar field (packed or not) to `chunks`.
    kind: 'v' varint, 'f' fixed32 float, 'd' fixed64 double."""
    if wire == 2:
        if kind == "v":
            chunks.append(_packed_varints(value, what))
        else:
            size = 4 if kind == "f" else 8
            if len(value) % size:
                _damaged(what, "a packed number array has a partial element")
            chunks.append(np.frombuffer(value, "<f4" if kind == "f" else "<f8"))
    elif kind == "v" and wire == 0:
        chunks.append(np.array([_signed(value)], np.int64))
    elif (kind, wire) in (("f", 5), ("d", 1)):
        chunks.append(np.frombuffer(value, "<f4" if kind == "f" else "<f8"))
    else:
        _damaged(what, "a number array has the wrong wire type")


def _packed_varints(buf: memoryview, what: str) -> np.ndarray:
    out, pos = [], 0
    while pos < len(buf):
        v, pos = _varint(buf, pos, what)
        out.append(_signed(v))
    return np.array(out, np.int64)


def _joined(chunks: list, dtype) -> np.ndarray:
    return np.concatenate(chunks).astype(dtype) if chunks else np.zeros(0, dtype)


# --- the messages ---

@dataclass
class Tensor:
    """A TensorProto: shape, element type and where its bytes are (decoded by array())."""

    name: str = ""
    dims: tuple = ()
    data_type: int = 0
    raw: memoryview | None = None
    typed: dict = field(default_factory=dict)       # field number -> list of chunks
    external: dict | None = None                    # location/offset/length when data_location is EXTERNAL

    @property
    def size(self) -> int:
        return math.prod(self.dims)


def parse_tensor(buf: memoryview, what: str) -> Tensor:
    t, location = Tensor(), 0
    dims: list[np.ndarray] = []
    entries: dict[str, str] = {}
    for number, wire, value in fields(buf, what):
        if number == 1:
            _repeated(dims, wire, value, "v", what)
        elif number == 2:
            t.data_type = _int(wire, value, what)
        elif number == 8:
            t.name = _text(wire, value, what)
        elif number == 9:
            t.raw = value if wire == 2 else _damaged(what, "raw_data is not length-delimited")
        elif number in (_FLOAT_DATA, _INT32_DATA, _INT64_DATA, _DOUBLE_DATA, _UINT64_DATA):
            kind = {_FLOAT_DATA: "f", _DOUBLE_DATA: "d"}.get(number, "v")
            _repeated(t.typed.setdefault(number, []), wire, value, kind, what)
        elif number == 13:
            pair = {k: _text(w, v, what) for k, w, v in fields(value, what) if k in (1, 2)}
            entries[pair.get(1, "")] = pair.get(2, "")
        elif number == 14:
            location = _int(wire, value, what)
        elif number == 3:
            _damaged(what, f"tensor {t.name!r} is stored in segments, which this reader does not support")
    t.dims = tuple(int(d) for d in _joined(dims, np.int64))
    what = f"tensor {t.name!r}"
    if len(t.dims) > MAX_RANK or any(not 0 <= d <= MAX_DIM for d in t.dims):
        _damaged(what, f"absurd shape {t.dims[:8]}")
    if t.size > MAX_ELEMENTS:
        _damaged(what, f"shape {t.dims} holds {t.size:,} elements, over the {MAX_ELEMENTS:,} limit")
    if location == 1:
        t.external = entries
    return t


@dataclass
class ValueInfo:
    """A graph input or output: its name, element type and shape (ints, names or None)."""

    name: str
    elem_type: int = 0
    shape: tuple | None = None


def _value_info(buf: memoryview, what: str) -> ValueInfo:
    info = ValueInfo("")
    for number, wire, value in fields(buf, what):
        if number == 1:
            info.name = _text(wire, value, what)
        elif number == 2 and wire == 2:
            for k, w, tensor_type in fields(value, what):
                if k == 1 and w == 2:                                   # TypeProto.tensor_type
                    _tensor_type(info, tensor_type, what)
    return info


def _tensor_type(info: ValueInfo, buf: memoryview, what: str) -> None:
    for number, wire, value in fields(buf, what):
        if number == 1:
            info.elem_type = _int(wire, value, what)
        elif number == 2 and wire == 2:
            dims = []
            for k, w, dim in fields(value, what):
                if k == 1 and w == 2:
                    entry = None
                    for j, wj, v in fields(dim, what):
                        entry = _int(wj, v, what) if j == 1 else _text(wj, v, what) if j == 2 else entry
                    dims.append(entry)
            info.shape = tuple(dims)


@dataclass
class Attribute:
    name: str
    value: object               # float, int, str, Tensor, list of those, or ('graph', bytes)


_ATTR_FLOAT, _ATTR_INT, _ATTR_STRING, _ATTR_TENSOR, _ATTR_GRAPH = 2, 3, 4, 5, 6
_ATTR_FLOATS, _ATTR_INTS, _ATTR_STRINGS, _ATTR_TENSORS = 7, 8, 9, 10
_LIST_TYPES = {6: _ATTR_FLOATS, 7: _ATTR_INTS, 8: _ATTR_STRINGS, 9: _ATTR_TENSORS, 10: 11}


def _attribute(buf: memoryview, what: str) -> Attribute:
    name, declared = "", 0
    seen: dict[int, list] = {}                      # field number -> [(wire, value)]
    for number, wire, value in fields(buf, what):
        if number == 1:
            name = _text(wire, value, what)
        elif number == 20:
            declared = _int(wire, value, what)
        else:
            seen.setdefault(number, []).append((wire, value))
    what = f"{what}, attribute {name!r}"
    singles = {_ATTR_FLOAT: 1, _ATTR_INT: 2, _ATTR_STRING: 3, _ATTR_TENSOR: 4, _ATTR_GRAPH: 5}
    number = next((f for f, t in singles.items() if t == declared), None) or _LIST_TYPES.get(declared)
    if number is None:                              # old files leave the type out: the field says it
        number = next((f for f in (*singles, _ATTR_FLOATS, _ATTR_INTS, _ATTR_STRINGS, _ATTR_TENSORS) if f in seen),
                      None)
    return Attribute(name, _attribute_value(number, seen.get(number, []), what))


def _attribute_value(number, occurrences: list, what: str):
    if number in (_ATTR_FLOATS, _ATTR_INTS):
        chunks: list[np.ndarray] = []
        for wire, value in occurrences:
            _repeated(chunks, wire, value, "f" if number == _ATTR_FLOATS else "v", what)
        return [float(v) if number == _ATTR_FLOATS else int(v) for v in _joined(chunks, np.float64 if number ==
                                                                                   _ATTR_FLOATS else np.int64)]
    if number in (_ATTR_STRINGS, _ATTR_TENSORS):
        parse = (lambda w, v: _text(w, v, what)) if number == _ATTR_STRINGS else (lambda w, v: parse_tensor(v, what))
        return [parse(w, v) for w, v in occurrences]
    if not occurrences:                         # a declared scalar left out is its zero value
        return {_ATTR_FLOAT: 0.0, _ATTR_INT: 0, _ATTR_STRING: ""}.get(number)
    wire, value = occurrences[-1]
    if number == _ATTR_FLOAT:
        return float(np.frombuffer(value, "<f4")[0]) if wire == 5 else _damaged(what, "a float is not fixed32")
    if number == _ATTR_INT:
        return _int(wire, value, what)
    if number == _ATTR_STRING:
        return _text(wire, value, what)
    if number == _ATTR_TENSOR:
        return parse_tensor(value, what)
    return ("graph", bytes(value))


@dataclass
class Node:
    op_type: str = ""
    name: str = ""
    domain: str = ""
    inputs: list = field(default_factory=list)
    outputs: list = field(default_factory=list)
    attrs: dict = field(default_factory=dict)

    def attr(self, name: str, default=None):
        value = self.attrs.get(name)
        return default if value is None else value

    @property
    def label(self) -> str:
        return f"{self.op_type} node {self.name or '(unnamed)'!r}"


def _node(buf: memoryview, index: int) -> Node:
    node, what = Node(), f"node {index}"
    for number, wire, value in fields(buf, what):
        if number == 1:
            node.inputs.append(_text(wire, value, what))
        elif number == 2:
            node.outputs.append(_text(wire, value, what))
        elif number == 3:
            node.name = _text(wire, value, what)
        elif number == 4:
            node.op_type = _text(wire, value, what)
        elif number == 7:
            node.domain = _text(wire, value, what)
        elif number == 5:
            a = _attribute(value, f"{what} ({node.op_type or '?'})")
            node.attrs[a.name] = a.value
    return node


@dataclass
class Graph:
    nodes: list = field(default_factory=list)
    initializers: dict = field(default_factory=dict)       # name -> Tensor
    inputs: list = field(default_factory=list)             # ValueInfo
    outputs: list = field(default_factory=list)
    sparse: int = 0                                        # sparse initializers (refused when used)


def _graph(buf: memoryview) -> Graph:
    g, what = Graph(), "graph"
    for number, wire, value in fields(buf, what):
        if wire != 2:
            continue
        if number == 1:
            g.nodes.append(_node(value, len(g.nodes)))
        elif number == 5:
            t = parse_tensor(value, f"initializer {len(g.initializers)}")
            g.initializers[t.name] = t
        elif number == 11:
            g.inputs.append(_value_info(value, "graph input"))
        elif number == 12:
            g.outputs.append(_value_info(value, "graph output"))
        elif number == 15:
            g.sparse += 1
    return g


@dataclass
class Model:
    graph: Graph
    ir_version: int = 0
    producer: str = ""
    opsets: dict = field(default_factory=dict)             # domain -> version
    base_dir: str = "."                                    # where external data files are looked for


def parse_model(data: bytes, base_dir: str = ".") -> Model:
    """The ModelProto in `data` (the whole file's bytes)."""
    buf, what = memoryview(data), "model"
    graph, model, producer = None, Model(Graph(), base_dir=base_dir), ["", ""]
    for number, wire, value in fields(buf, what):
        if number == 1:
            model.ir_version = _int(wire, value, what)
        elif number in (2, 3):
            producer[number - 2] = _text(wire, value, what)
        elif number == 7 and wire == 2:
            graph = value
        elif number == 8 and wire == 2:
            entry = {k: (w, v) for k, w, v in fields(value, "opset_import")}
            domain = _text(*entry[1], what) if 1 in entry else ""
            model.opsets[domain] = _int(*entry[2], what) if 2 in entry else 1
    if graph is None:
        _damaged(what, "it has no graph (is this an ONNX model file?)")
    model.graph, model.producer = _graph(graph), " ".join(p for p in producer if p)
    return model


def looks_like_onnx(head: bytes) -> bool:
    """True for the first bytes of a ModelProto as exporters write it: ir_version (field 1,
    a small varint) first, then one of the model's other fields with a non-empty value."""
    return (len(head) >= 4 and head[0] == 0x08 and 1 <= head[1] <= 30 and head[3] != 0   # a safetensors length
            and head[2] in (0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42, 0x72, 0xA2, 0xCA))     # has zeros there


# --- tensor data ---

def array(t: Tensor, base_dir: str) -> np.ndarray:
    """The tensor as a NumPy array (float16/bfloat16 widened to float32, bool as bool)."""
    what = f"tensor {t.name!r}"
    if t.data_type not in _DTYPES:
        name = _TYPE_NAMES.get(t.data_type, str(t.data_type))
        raise ModelFormatError(f"{what} has element type {name}, which edgelstm cannot read; "
                               f"convert the model's weights to float32 before exporting")
    dtype = np.dtype(_DTYPES[t.data_type])
    if t.external is not None:
        words = np.frombuffer(_external_bytes(t, base_dir, t.size * dtype.itemsize), dtype)
    elif t.raw is not None:
        if len(t.raw) != t.size * dtype.itemsize:
            _damaged(what, f"shape {t.dims} needs {t.size * dtype.itemsize:,} bytes, raw_data has {len(t.raw):,}")
        words = np.frombuffer(t.raw, dtype)
    else:
        words = _typed_words(t, dtype, what)
    if t.data_type == BFLOAT16:
        words = (words.astype(np.uint32) << 16).view(np.float32)
    elif t.data_type == FLOAT16:
        words = words.astype(np.float32)
    elif t.data_type == BOOL:
        words = words != 0
    return words.reshape(t.dims)


def _typed_words(t: Tensor, dtype: np.dtype, what: str) -> np.ndarray:
    number = _FIELD_OF.get(t.data_type, _INT32_DATA)
    chunks = t.typed.get(number, [])
    n = sum(len(c) for c in chunks)
    if n != t.size:
        _damaged(what, f"shape {t.dims} needs {t.size:,} values, the file holds {n:,}")
    values = _joined(chunks, np.float64 if number in (_FLOAT_DATA, _DOUBLE_DATA) else np.int64)
    if t.data_type in (FLOAT16, BFLOAT16):
        return values.astype(np.uint16).view(dtype)                      # the bits, stored in int32_data
    return values.astype(dtype)


def _external_bytes(t: Tensor, base_dir: str, nbytes: int) -> bytes:
    """The bytes of an external tensor: a file next to the model, never outside its directory."""
    what, info = f"tensor {t.name!r}", t.external
    if info is None:
        raise ModelFormatError(f"{what} has no external data location")
    location = info.get("location", "")
    parts = location.replace("\\", "/").split("/")
    if not location or os.path.isabs(location) or location[:1] in "/\\" or ":" in location or ".." in parts:
        raise ModelFormatError(f"{what}: external data location {location!r} is not a plain file name next to "
                               f"the model; refusing a path that could leave the model's directory")
    root = os.path.realpath(base_dir)
    path = os.path.realpath(os.path.join(root, location))
    if os.path.commonpath([root, path]) != root:
        raise ModelFormatError(f"{what}: external data {location!r} resolves outside the model's directory "
                               f"({path}); refusing it")
    if not os.path.isfile(path):
        raise ModelFormatError(f"{what}: its external data file {location!r} is missing; keep it next to the "
                               f"model file (torch.onnx.export writes <name>.onnx.data)")
    try:
        offset, length = int(info.get("offset", 0)), int(info.get("length", nbytes))
    except ValueError:
        raise ModelFormatError(f"{what}: external data offset/length are not integers") from None
    size = os.path.getsize(path)
    if length != nbytes or offset < 0 or offset + length > size:
        raise ModelFormatError(f"{what}: external data claims {length:,} bytes at offset {offset:,} of "
                               f"{location!r} ({size:,} bytes) but shape {t.dims} needs {nbytes:,}; the data "
                               f"file is truncated or belongs to another export")
    with open(path, "rb") as fh:
        fh.seek(offset)
        return fh.read(length)
