"""The restricted unpickler behind every torch file edgelstm reads.

find_class answers:
  * a short allow-list of data builders, each replaced by edgelstm's own inert version
    (OrderedDict, set, torch's _rebuild_tensor*/_rebuild_parameter*, NumPy's _reconstruct/scalar/
    dtype, TorchScript's list builders, argparse.Namespace as a plain attribute holder);
  * torch storage classes and dtypes as markers that only name a dtype;
  * any class under torch.nn / torch.optim, TorchScript's __torch__ and user modules as an
    InertObject stand-in: it can be built by NEWOBJ/BUILD but refuses to be called (REDUCE);
  * quantized-tensor names with the fix for quantized models;
  * everything else (os, subprocess, builtins, other numpy/torch functions...) with
    UnsafePickleError, before anything is called.
Before unpickling, the stream is walked opcode by opcode (pickletools) so that a length field
larger than the data is reported as truncation instead of being allocated.
"""

from __future__ import annotations

import datetime
import io
import math
import pickle
import pickletools
import warnings
from collections import OrderedDict

import numpy as np

from ..errors import ModelFormatError, UnsafePickleError
from . import inert
from .raw_arrays import STORAGE_CODES, TORCH_DTYPE_CODES, UNSUPPORTED_TORCH_DTYPES, dtype_of, itemsize

QUANTIZED_MESSAGE = ("quantized (quantize_dynamic) weights: save the float model's state_dict before quantizing; "
                     "for int8 on the device see `edgelstm export-c --int8`")
_QUANTIZED_NAMES = {"_rebuild_qtensor", "per_tensor_affine", "per_channel_affine", "per_channel_affine_float_qparams",
                    "qint8", "quint8", "qint32", "quint4x2", "quint2x4", "QInt8Storage", "QUInt8Storage",
                    "QInt32Storage", "QUInt4x2Storage", "QUInt2x4Storage"}
_QUANTIZED_MODULES = ("torch.ao.nn.quantized", "torch.nn.quantized", "torch.ao.nn.intrinsic.quantized",
                      "torch.nn.intrinsic.quantized", "torch.classes.quantized", "torch.ao.quantization")
_STAND_IN_PREFIXES = ("torch.nn.", "torch.optim.", "__torch__.")
_NEVER = {"os", "posix", "nt", "subprocess", "sys", "shutil", "builtins", "__builtin__", "importlib", "runpy",
          "pickle", "_pickle", "marshal", "types", "functools", "_functools", "operator", "_operator", "code",
          "codeop", "ctypes", "_ctypes", "socket", "pty", "webbrowser", "io", "_io", "tempfile", "pathlib",
          "signal", "multiprocessing", "threading", "_thread", "asyncio", "urllib", "http", "inspect", "gc",
          "weakref", "copy", "copyreg", "copy_reg", "codecs", "_codecs", "numpy", "torch", "site", "pdb",
          "timeit", "trace", "profile", "cProfile", "pip", "setuptools", "distutils", "dill", "cloudpickle",
          "joblib", "yaml", "logging", "atexit", "posixpath", "ntpath", "_posixsubprocess", "zipfile", "tarfile",
          "shelve", "dbm", "sqlite3", "pkgutil", "zipimport", "mmap", "fcntl", "resource", "glob", "select",
          "collections", "argparse", "typing", "abc", "enum", "_sre", "re", "string", "base64", "binascii",
          "zlib", "bz2", "lzma", "gzip", "platform", "sysconfig", "ensurepip", "venv", "faulthandler", "_winapi",
          "msvcrt", "winreg", "edgelstm"}
_MAX_VIEW_WITHOUT_STORAGE = 1 << 24      # elements a stride-0 (expanded) view may have beyond its storage


class StorageType:
    """Stands for torch.FloatStorage etc.: names a NumPy type code, never called."""

    def __init__(self, name: str):
        self.name, self.code = name, STORAGE_CODES[name]


class TorchDtype:
    """Stands for torch.float32 etc. (an argument of _rebuild_tensor_v3, or a value in a checkpoint)."""

    def __init__(self, name: str):
        self.name, self.code = name, TORCH_DTYPE_CODES.get(name)

    def __repr__(self):
        return f"torch.{self.name}"


class Deferred:
    """A storage whose bytes come later in the file (legacy format, first pass)."""


def _rebuild_tensor(storage, offset, size, stride, *_ignored):
    """A tensor view of `storage` (1-D, in elements) as an owned C-contiguous array, bounds-checked."""
    if isinstance(storage, Deferred):
        return None
    if not isinstance(storage, np.ndarray):
        raise ModelFormatError("a tensor in the .pt file is not backed by a storage")
    try:
        size, stride, offset = tuple(int(s) for s in size), tuple(int(s) for s in stride), int(offset)
    except (TypeError, ValueError):
        raise ModelFormatError("tensor with a malformed size/stride in the .pt file") from None
    if len(size) != len(stride) or len(size) > 64 or offset < 0 or any(s < 0 for s in size + stride):
        raise ModelFormatError("tensor with a malformed size/stride in the .pt file")
    numel = math.prod(size)
    last = offset + sum((n - 1) * st for n, st in zip(size, stride)) if numel else offset - 1
    if last >= storage.size:
        raise ModelFormatError(f"tensor view (offset {offset}, size {size}, stride {stride}) reaches past its "
                               f"storage of {storage.size} elements; the file is corrupt or truncated")
    if numel > max(storage.size, _MAX_VIEW_WITHOUT_STORAGE):
        raise ModelFormatError(f"tensor of {numel:,} elements over a storage of {storage.size:,}: refusing to expand "
                               f"it; save the tensor with .contiguous()")
    if not numel:
        return np.zeros(size, storage.dtype)
    view = np.lib.stride_tricks.as_strided(storage[offset:], shape=size,
                                           strides=[s * storage.itemsize for s in stride])
    return np.array(view)       # own copy: weights sharing one storage must not alias


def _rebuild_tensor_v3(storage, offset, size, stride, requires_grad, hooks, dtype, *_ignored):
    """Newer dtypes (uint16/32/64, float8...) are saved over an untyped (byte) storage."""
    if isinstance(storage, Deferred):
        return None
    if not isinstance(dtype, TorchDtype) or dtype.code is None:
        name = getattr(dtype, "name", dtype)
        fix = "convert to float32 before saving" if str(name) in UNSUPPORTED_TORCH_DTYPES else "unknown dtype"
        raise ModelFormatError(f"tensor of dtype torch.{name} in the .pt file cannot be read ({fix})")
    if not isinstance(storage, np.ndarray) or storage.dtype != np.uint8:
        raise ModelFormatError("a _rebuild_tensor_v3 tensor is not backed by a byte storage")
    if storage.size % itemsize(dtype.code):
        raise ModelFormatError("a byte storage does not hold whole elements; the file is corrupt")
    typed = storage.view(dtype_of(dtype.code, "="))
    return _rebuild_tensor(typed, offset, size, stride)


def _rebuild_parameter(data, *_ignored):
    return data


def _rebuild_from_type_v2(func, new_type, args, state):
    """A tensor subclass: rebuild the tensor with one of our own functions, drop the subclass."""
    if func not in (_rebuild_tensor, _rebuild_tensor_v3, _rebuild_parameter):
        raise UnsafePickleError(f"refusing _rebuild_from_type_v2 with {func!r:.60}: {inert.RESAVE_HINT}.")
    return func(*args)


def _refuse(what: str):
    def refuse(*_args, **_kwargs):
        raise ModelFormatError(f"{what} tensors in the .pt file cannot be read; save dense CPU tensors "
                               f"(model.float().cpu().state_dict())")
    return refuse


def _reconstructor(cls, base, state):
    """copyreg._reconstructor (protocol 0/1 objects): only object.__new__ of a stand-in class."""
    if not (isinstance(cls, type) and issubclass(cls, inert.InertObject)) or base is not object or state is not None:
        raise UnsafePickleError(f"refusing copyreg._reconstructor({cls!r:.40}, {base!r:.40}): {inert.RESAVE_HINT}.")
    return cls.__new__(cls)


def _listify(items):
    return list(items)


def _device(kind, index=None):
    return str(kind) if index is None else f"{kind}:{int(index)}"


def _path(*parts):
    """pathlib paths (common in argparse arguments) become plain strings."""
    if not all(isinstance(p, str) for p in parts):
        raise ModelFormatError("malformed path in the model file")
    return "/".join(parts)


class _ScriptObject(inert.InertObject):
    """torch.ScriptObject (a TorchBind object): in practice quantized packed weights."""

    qualified_name = "torch.ScriptObject"

    def __setstate__(self, state):
        names = state if isinstance(state, tuple) else (state,)
        if any(isinstance(s, str) and ("quantized" in s or "PackedParams" in s) for s in names):
            raise ModelFormatError(QUANTIZED_MESSAGE)
        super().__setstate__(state)


def _restore_type_tag(value, _type_str=None):
    return value


_TORCH_UTILS = {"_rebuild_tensor": _rebuild_tensor, "_rebuild_tensor_v2": _rebuild_tensor,
                "_rebuild_tensor_v3": _rebuild_tensor_v3, "_rebuild_parameter": _rebuild_parameter,
                "_rebuild_parameter_with_state": _rebuild_parameter,
                "_rebuild_device_tensor_from_numpy": _rebuild_parameter,
                "_rebuild_device_tensor_from_cpu_tensor": _rebuild_parameter,
                "_rebuild_sparse_tensor": _refuse("sparse"), "_rebuild_nested_tensor": _refuse("nested"),
                "_rebuild_meta_tensor_no_storage": _refuse("meta (data-less)"),
                "_rebuild_wrapper_subclass": _refuse("wrapper-subclass (DTensor, FakeTensor...)")}
_MULTIARRAY = {"_reconstruct": inert.np_reconstruct, "scalar": inert.np_scalar}
_ALLOWED = {
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "set"): set, ("__builtin__", "set"): set,
    ("builtins", "frozenset"): frozenset, ("__builtin__", "frozenset"): frozenset,
    ("builtins", "object"): object, ("__builtin__", "object"): object,
    ("builtins", "slice"): slice, ("builtins", "complex"): complex,
    ("copyreg", "_reconstructor"): _reconstructor, ("copy_reg", "_reconstructor"): _reconstructor,
    ("_codecs", "encode"): inert.latin1_encode, ("codecs", "encode"): inert.latin1_encode,
    ("argparse", "Namespace"): inert.InertNamespace,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch", "Size"): tuple, ("torch", "device"): _device, ("torch", "ScriptObject"): _ScriptObject,
    **{("pathlib", k): _path for k in ("Path", "PosixPath", "WindowsPath", "PurePosixPath", "PureWindowsPath")},
    **{("datetime", k): getattr(datetime, k) for k in ("datetime", "date", "time", "timedelta")},
    ("numpy", "ndarray"): inert.NDARRAY, ("numpy", "dtype"): inert.InertDtype,
    **{("torch._utils", k): v for k, v in _TORCH_UTILS.items()},
    **{(m, k): v for m in ("numpy.core.multiarray", "numpy._core.multiarray") for k, v in _MULTIARRAY.items()},
    **{(m, "_frombuffer"): inert.np_frombuffer for m in ("numpy.core.numeric", "numpy._core.numeric")},
    **{("torch.jit._pickle", k): _listify for k in ("build_intlist", "build_doublelist", "build_boollist",
                                                    "build_tensorlist", "build_genericlist")},
    ("torch.jit._pickle", "restore_type_tag"): _restore_type_tag,
}


def refusal(module: str, name: str) -> Exception:
    """The error for a global outside the allow-list, naming it and what to do."""
    if name in _QUANTIZED_NAMES or module.replace("__torch__.", "").startswith(_QUANTIZED_MODULES):
        return ModelFormatError(QUANTIZED_MESSAGE)
    return UnsafePickleError(f"refusing to load global {module}.{name} from the model file: {inert.RESAVE_HINT}.")


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles one pickle; storages come from `storages(key, code, numel) -> 1-D array | Deferred`."""

    def __init__(self, data: bytes, storages):
        super().__init__(io.BytesIO(data), encoding="utf-8")
        self._storages = storages
        self._cache: dict[str, tuple[str, object]] = {}          # storage key -> (dtype code, array or Deferred)
        self._classes: dict[tuple[str, str], type] = {}          # (module, name) -> its stand-in class

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if name in _QUANTIZED_NAMES or module.replace("__torch__.", "").startswith(_QUANTIZED_MODULES):
            raise refusal(module, name)
        if module in ("torch", "torch.storage") and name in STORAGE_CODES:
            return StorageType(name)
        if module == "torch" and (name in TORCH_DTYPE_CODES or name in UNSUPPORTED_TORCH_DTYPES):
            return TorchDtype(name)
        top = module.split(".")[0]
        if module.startswith(_STAND_IN_PREFIXES) or top in ("__main__", "__mp_main__", "__torch__") or (
                top not in _NEVER and not top.startswith("_")):
            return self._stand_in(module, name)
        raise refusal(module, name)

    def _stand_in(self, module: str, name: str) -> type:
        if (module, name) not in self._classes:
            self._classes[(module, name)] = inert.stand_in_class(module, name)
        return self._classes[(module, name)]

    def persistent_load(self, pid):
        if isinstance(pid, tuple) and len(pid) >= 2 and pid[0] == "module":
            if isinstance(pid[1], type) and issubclass(pid[1], inert.InertObject):
                return pid[1]           # legacy whole-module pickles name classes this way (source ignored)
            raise ModelFormatError("malformed module reference in the .pt file")
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"):
            raise ModelFormatError(f"unknown persistent id {pid!r:.80} in the .pt file")
        storage_type, key, _location, numel = pid[1:5]
        view = pid[5] if len(pid) == 6 else None
        if not isinstance(storage_type, StorageType) or type(numel) is not int or numel < 0:
            raise ModelFormatError(f"storage with a malformed type or size {pid!r:.80} in the .pt file")
        key = str(key)
        if key not in self._cache:
            self._cache[key] = (storage_type.code, self._storages(key, storage_type.code, numel))
        code, storage = self._cache[key]
        if code != storage_type.code:
            raise ModelFormatError(f"storage {key} is used with two dtypes in the .pt file; it is corrupt")
        if view is None or isinstance(storage, Deferred):
            return storage
        try:
            _view_key, start, length = view
            start, length = int(start), int(length)
        except (TypeError, ValueError):
            raise ModelFormatError("malformed storage view in the .pt file") from None
        if start < 0 or length < 0 or start + length > storage.size:
            raise ModelFormatError(f"storage view [{start}, {start + length}) outside storage {key} of {storage.size}")
        return storage[start:start + length]


def pickle_end(data: bytes, start: int = 0) -> int:
    """The offset just past the pickle that begins at `start`, after checking every opcode's length."""
    stream = io.BytesIO(data)
    stream.seek(start)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)     # odd escapes in a damaged STRING opcode
            for _op, _arg, _pos in pickletools.genops(stream):
                pass
    except (ValueError, EOFError, UnicodeDecodeError) as exc:
        raise ModelFormatError(f"cannot read the pickle (truncated or corrupt: {exc})") from None
    return stream.tell()


def unpickle(data: bytes, storages):
    """The object in `data` (one complete pickle), tensors as arrays and NumPy stand-ins materialised."""
    pickle_end(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            obj = RestrictedUnpickler(data, storages).load()
    except (UnsafePickleError, ModelFormatError):
        raise
    except RecursionError:
        raise ModelFormatError("the pickle nests too deeply") from None
    except Exception as exc:    # malformed pickle stream: report, never crash the caller
        raise ModelFormatError(f"cannot read the pickle ({type(exc).__name__}: {exc})") from None
    try:
        return inert.materialise(obj)
    except RecursionError:
        raise ModelFormatError("the pickle nests too deeply") from None
