"""Read `torch.save` files (the zip format of PyTorch >= 1.6) without torch and without
running pickled code.

The pickle is read by an Unpickler whose find_class allows only the handful of globals a
state_dict needs (OrderedDict, the tensor rebuild functions, the storage types); anything
else — os.system, a whole nn.Module, a custom class — raises UnsafePickleError before it is
called. Tensors are rebuilt from their raw storages honouring storage offset, strides and the
byte order, and every view is bounds-checked against its storage.
"""

from __future__ import annotations

import pickle
import zipfile
from collections import OrderedDict

import numpy as np

from ..errors import ModelFormatError, UnsafePickleError

_STORAGE_DTYPES = {
    "FloatStorage": "f4", "DoubleStorage": "f8", "HalfStorage": "f2", "BFloat16Storage": "bf16",
    "IntStorage": "i4", "LongStorage": "i8", "ShortStorage": "i2", "CharStorage": "i1",
    "ByteStorage": "u1", "BoolStorage": "?",
}


class _StorageType:
    """Stands in for torch.FloatStorage etc.: only names a dtype, never called."""

    def __init__(self, name: str):
        self.name, self.dtype = name, _STORAGE_DTYPES[name]


def _rebuild_tensor(storage, offset, size, stride, *_ignored):
    arr = storage
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    if len(size) != len(stride) or offset < 0 or any(s < 0 for s in size + stride):
        raise ModelFormatError("tensor with a malformed size/stride in the .pt file")
    last = offset + sum((n - 1) * st for n, st in zip(size, stride)) if all(size) else offset - 1
    if last >= arr.size:
        raise ModelFormatError(f"tensor view (offset {offset}, size {size}, stride {stride}) reaches "
                               f"past its storage of {arr.size} elements; the file is corrupt")
    view = np.lib.stride_tricks.as_strided(arr[offset:] if arr.size else arr, shape=size,
                                           strides=[s * arr.itemsize for s in stride])
    return np.array(view)       # own copy: weights sharing one storage must not alias


def _rebuild_parameter(data, *_ignored):
    return data


_ALLOWED = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, fh, archive: zipfile.ZipFile, prefix: str, byteorder: str):
        super().__init__(fh)
        self._archive, self._prefix, self._order = archive, prefix, "<" if byteorder == "little" else ">"
        self._storages: dict[str, np.ndarray] = {}

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        hint = ("this looks like a whole pickled model; save model.state_dict() instead"
                if module.startswith("torch.nn") or "." not in module and module not in ("builtins", "os", "posix")
                else "edgelstm never runs code from a model file")
        raise UnsafePickleError(f"refusing to load global {module}.{name} from the .pt file ({hint}). "
                                f"Re-save with torch.save(model.state_dict(), path).")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise ModelFormatError(f"unknown persistent id {pid!r:.80} in the .pt file")
        storage_type, key = pid[1], str(pid[2])
        if not isinstance(storage_type, _StorageType):
            raise ModelFormatError("storage of unknown type in the .pt file")
        if storage_type.dtype == "bf16":
            raise ModelFormatError("bfloat16 weights: convert the model with model.float() before saving")
        if key not in self._storages:
            try:
                raw = self._archive.read(f"{self._prefix}/data/{key}")
            except KeyError:
                raise ModelFormatError(f"storage {key} is missing from the .pt archive") from None
            dtype = np.dtype(self._order + storage_type.dtype) if storage_type.dtype not in ("?", "u1", "i1") \
                else np.dtype(storage_type.dtype)
            if len(raw) % dtype.itemsize:
                raise ModelFormatError(f"storage {key} has a partial element; the file is truncated")
            self._storages[key] = np.frombuffer(raw, dtype=dtype)
        return self._storages[key]


def read_torch_file(path) -> object:
    """The object stored by torch.save (typically a dict), with tensors as NumPy arrays."""
    if not zipfile.is_zipfile(path):
        raise ModelFormatError(f"{path} is not a zip-format torch.save file (the legacy pre-1.6 "
                               f"format is not supported: re-save with a current PyTorch)")
    with zipfile.ZipFile(path) as archive:
        pkl = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pkl) != 1:
            raise ModelFormatError(f"{path}: expected one <name>/data.pkl in the archive, found {len(pkl)}")
        prefix = pkl[0].rsplit("/", 1)[0]
        try:
            byteorder = archive.read(f"{prefix}/byteorder").decode().strip()
        except KeyError:
            byteorder = "little"     # files from PyTorch < 2.1 have no record; they were little-endian
        with archive.open(pkl[0]) as fh:
            try:
                return _RestrictedUnpickler(fh, archive, prefix, byteorder).load()
            except (UnsafePickleError, ModelFormatError):
                raise
            except Exception as exc:    # malformed pickle stream: report, never crash the caller
                raise ModelFormatError(f"{path}: cannot read the pickle ({type(exc).__name__}: {exc})") from None
