"""Inert stand-ins for the objects a model pickle names, so a file can be read without running it.

A pickle rebuilds a plain object (an nn.Module, a config dataclass, a TorchScript module) as
GLOBAL cls, EMPTY_TUPLE, NEWOBJ (= cls.__new__(cls)), then BUILD(state) (= __setstate__ or a
__dict__ update). The reader answers every such GLOBAL with a fresh `InertObject` subclass that
only records its class's name and the state it is given. Calling the stand-in class (pickle's
REDUCE, or INST/OBJ with arguments) raises UnsafePickleError, so a pickle can never use a name
to run a function: NEWOBJ goes through __new__, which is harmless here, and a call through the
metaclass's __call__, which refuses.

NumPy arrays are pickled as _reconstruct(ndarray, (0,), b'b') + BUILD((version, shape, dtype,
is_fortran, raw)). The stand-ins below take those arguments and rebuild the array with
np.frombuffer after checking the dtype against a whitelist and the byte count against the shape;
numpy's own __setstate__ (which unpickles object arrays) is never called on file data.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from ..errors import ModelFormatError, UnsafePickleError

RESAVE_HINT = ("edgelstm never runs code from a model file. Re-save the weights with "
               "torch.save(model.state_dict(), path)")


class _StandInMeta(type):
    def __call__(cls, *args, **kwargs):
        raise UnsafePickleError(f"refusing to call {cls.qualified_name}(...) from the model file: {RESAVE_HINT}.")


class InertObject(metaclass=_StandInMeta):
    """An object of a class the pickle names, never imported: `state` is what BUILD gave it.

    For an nn.Module, `state` is its __dict__: _parameters, _buffers, _modules, training, and
    hyper-parameters such as hidden_size.
    """

    qualified_name = "?"
    state: Any                  # set by __new__ (None) and BUILD; instance attributes, never class ones
    new_args: tuple

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        obj.__dict__.update(state=None, new_args=args)
        return obj

    def __setstate__(self, state):
        self.__dict__["state"] = state

    def __call__(self, *args, **kwargs):
        raise UnsafePickleError(f"refusing to call a {self.qualified_name} object from the model file: "
                                f"{RESAVE_HINT}.")

    @property
    def module_path(self) -> str:
        return self.qualified_name.rpartition(".")[0]

    @property
    def class_name(self) -> str:
        return self.qualified_name.rpartition(".")[2]

    def __repr__(self):
        return f"<inert {self.qualified_name}>"


class InertNamespace(InertObject):
    """argparse.Namespace, as a dict of its attributes (`attributes`); argparse is never called."""

    qualified_name = "argparse.Namespace"

    @property
    def attributes(self) -> dict:
        return dict(self.state) if isinstance(self.state, dict) else {}


def stand_in_class(module: str, name: str) -> type:
    """A new InertObject subclass standing for `module.name` (never imported)."""
    safe = re.sub(r"\W", "_", name) or "_"
    return _StandInMeta(safe, (InertObject,), {"qualified_name": f"{module}.{name}", "__module__": __name__})


# ---- NumPy ---------------------------------------------------------------------------------

_NUMPY_CODES = re.compile(r"^(b1|\?|[iu][1248]|f[248])$")
_MAX_NDIM = 64


class NDArrayType:
    """Stands for numpy.ndarray (only ever an argument of _reconstruct)."""


NDARRAY = NDArrayType()


class InertDtype:
    """numpy.dtype(name, align, copy) + BUILD((version, byteorder, ...)), for whitelisted kinds only."""

    def __init__(self, name, *_flags):
        if not isinstance(name, str) or not _NUMPY_CODES.match(name):
            raise UnsafePickleError(f"refusing a NumPy array of dtype {name!r:.40} in the model file: only bool, "
                                    f"integer and float arrays are read (object arrays would run pickled code). "
                                    f"Save plain numeric arrays, e.g. np.asarray(x, dtype=np.float32).")
        self.name, self.order = name, "|"

    def __setstate__(self, state):
        if not isinstance(state, tuple) or len(state) < 8:
            raise ModelFormatError("malformed NumPy dtype in the model file")
        _version, order, subarray, names, fields = state[:5]
        if subarray is not None or names is not None or fields is not None or order not in ("<", ">", "|", "="):
            raise UnsafePickleError("refusing a structured or sub-array NumPy dtype in the model file; save plain "
                                    "numeric arrays")
        self.order = order

    @property
    def dtype(self) -> np.dtype:
        dtype = np.dtype(self.name)
        return dtype.newbyteorder(self.order) if self.order in "<>" and dtype.itemsize > 1 else dtype


def _as_bytes(raw) -> bytes:
    if isinstance(raw, (bytes, bytearray)):
        return bytes(raw)
    raise ModelFormatError(f"NumPy array data in the model file is a {type(raw).__name__}, not bytes")


def _build(shape, dtype: InertDtype, raw, fortran: bool = False) -> np.ndarray:
    if not isinstance(dtype, InertDtype):
        raise UnsafePickleError(f"refusing a NumPy array whose dtype is a {type(dtype).__name__}")
    if (not isinstance(shape, tuple) or len(shape) > _MAX_NDIM
            or not all(type(d) is int and d >= 0 for d in shape)):
        raise ModelFormatError(f"NumPy array with a malformed shape {shape!r:.80} in the model file")
    raw = _as_bytes(raw)
    dt = dtype.dtype
    if math.prod(shape) * dt.itemsize != len(raw):
        raise ModelFormatError(f"NumPy array of shape {shape} and dtype {dt} needs {math.prod(shape) * dt.itemsize:,} "
                               f"bytes but holds {len(raw):,}; the file is corrupt")
    arr = np.frombuffer(raw, dtype=dt).reshape(shape, order="F" if fortran else "C")
    return arr.astype(dt.newbyteorder("="), order="K", copy=True)


class PendingArray:
    """numpy.core.multiarray._reconstruct(ndarray, (0,), b'b'): filled in by BUILD."""

    def __init__(self):
        self.array = None

    def __setstate__(self, state):
        if not isinstance(state, tuple) or len(state) != 5:
            raise ModelFormatError("malformed NumPy array state in the model file")
        _version, shape, dtype, fortran, raw = state
        if not isinstance(raw, (bytes, bytearray)):       # a list: an object array
            raise UnsafePickleError("refusing a NumPy object array in the model file (it would run pickled code); "
                                    "save plain numeric arrays")
        self.array = _build(shape, dtype, raw, bool(fortran))


def np_reconstruct(cls, shape, typecode):
    if cls is not NDARRAY:
        raise UnsafePickleError(f"refusing numpy _reconstruct of {cls!r:.60}: only plain ndarrays are read")
    return PendingArray()


def np_scalar(dtype, raw=None):
    """numpy.core.multiarray.scalar(dtype, raw bytes) -> a NumPy scalar (e.g. np.float64(0.5))."""
    if raw is None:
        raise UnsafePickleError("refusing a NumPy object scalar in the model file")
    return _build((), dtype, raw)[()]


def np_frombuffer(buf, dtype, shape, order="C"):
    """numpy.core.numeric._frombuffer (pickle protocol 5 arrays)."""
    return _build(tuple(shape) if isinstance(shape, (tuple, list)) else shape, dtype, buf, order == "F")


def latin1_encode(text, encoding="utf-8"):
    """_codecs.encode(str, 'latin1'): how protocol-2 pickles carry bytes (NumPy array data)."""
    if not isinstance(text, str) or str(encoding).lower().replace("-", "") not in ("latin1", "iso88591"):
        raise UnsafePickleError(f"refusing _codecs.encode with encoding {encoding!r:.30} in the model file")
    return text.encode("latin-1")


# ---- after unpickling ----------------------------------------------------------------------

def materialise(obj, _seen=None):
    """Replace PendingArray / InertDtype stand-ins by arrays / dtypes, in place where possible."""
    seen = {} if _seen is None else _seen
    key = id(obj)
    if key in seen:
        return seen[key]
    if isinstance(obj, PendingArray):
        if obj.array is None:
            raise ModelFormatError("a NumPy array in the model file has no data (BUILD missing)")
        return obj.array
    if isinstance(obj, InertDtype):
        return obj.dtype
    seen[key] = obj
    if isinstance(obj, dict):
        for k, v in obj.items():
            obj[k] = materialise(v, seen)
    elif isinstance(obj, list):
        obj[:] = [materialise(v, seen) for v in obj]
    elif isinstance(obj, tuple):
        seen[key] = out = tuple(materialise(v, seen) for v in obj)
        return out
    elif isinstance(obj, InertObject):
        obj.__dict__["state"] = materialise(obj.state, seen)
    return obj
