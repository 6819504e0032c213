"""Raw bytes to NumPy arrays, shared by the .pt and .safetensors readers.

bfloat16 has no NumPy dtype; it is the high half of a float32, so it converts *exactly* by
shifting its 16 bits into the top of a uint32 and viewing that as float32.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from ..errors import ModelFormatError

BF16 = "bf16"          # marker code: stored as 2-byte words, returned as float32

# torch storage class name (torch.FloatStorage, ...) -> NumPy type code (no byte order)
STORAGE_CODES = {
    "FloatStorage": "f4", "DoubleStorage": "f8", "HalfStorage": "f2", "BFloat16Storage": BF16,
    "IntStorage": "i4", "LongStorage": "i8", "ShortStorage": "i2", "CharStorage": "i1",
    "ByteStorage": "u1", "BoolStorage": "?", "UntypedStorage": "u1",
    "ComplexFloatStorage": "c8", "ComplexDoubleStorage": "c16",
}

# torch dtype name (torch.float32, ...) -> NumPy type code, for _rebuild_tensor_v3 and dtype values
TORCH_DTYPE_CODES = {
    "float32": "f4", "float": "f4", "float64": "f8", "double": "f8", "float16": "f2", "half": "f2",
    "bfloat16": BF16, "int8": "i1", "int16": "i2", "short": "i2", "int32": "i4", "int": "i4",
    "int64": "i8", "long": "i8", "uint8": "u1", "uint16": "u2", "uint32": "u4", "uint64": "u8",
    "bool": "?", "complex64": "c8", "cfloat": "c8", "complex128": "c16", "cdouble": "c16",
}

# torch dtypes that have no exact NumPy equivalent: refused with the fix
UNSUPPORTED_TORCH_DTYPES = ("float8_e5m2", "float8_e4m3fn", "float8_e5m2fnuz", "float8_e4m3fnuz",
                            "float8_e8m0fnu", "float4_e2m1fn_x2", "complex32", "chalf",
                            "bits8", "bits16", "bits1x8", "bits2x4", "bits4x2")

# safetensors dtype string -> NumPy type code (the format is little-endian)
SAFETENSORS_CODES = {
    "BOOL": "?", "U8": "u1", "I8": "i1", "U16": "u2", "I16": "i2", "F16": "f2", "BF16": BF16,
    "U32": "u4", "I32": "i4", "F32": "f4", "U64": "u8", "I64": "i8", "F64": "f8",
    "C64": "c8", "C128": "c16",
}


def itemsize(code: str) -> int:
    return 2 if code == BF16 else np.dtype(code).itemsize


ByteOrder = Literal["<", ">", "="]      # little, big, native


def dtype_of(code: str, order: ByteOrder = "<") -> np.dtype:
    """The NumPy dtype that holds the file's bytes (bf16 -> its 2-byte words) in byte order `order`."""
    if code == BF16:
        return np.dtype(order + "u2")
    dtype = np.dtype(code)
    return dtype if dtype.itemsize == 1 else dtype.newbyteorder(order)


def bf16_to_f32(words: np.ndarray) -> np.ndarray:
    """bfloat16 words (uint16, any shape) -> float32, bit-exact (NaN payloads and signs kept)."""
    return (words.astype(np.uint32) << 16).view(np.float32)


def array_from_bytes(raw, code: str, order: ByteOrder = "<", count: int | None = None, offset: int = 0) -> np.ndarray:
    """A 1-D array of `count` elements (all that fit when None) of `code`, in native byte order.

    The result owns its memory (a copy), so it never aliases the file buffer. bf16 comes back as float32.
    Raises ModelFormatError when the bytes do not hold whole elements or are too few.
    """
    size = itemsize(code)
    available = len(raw) - offset
    if count is None:
        if available % size:
            raise ModelFormatError(f"{available} bytes are not a whole number of {size}-byte elements; "
                                   f"the file is truncated or corrupt")
        count = available // size
    if count < 0 or offset < 0 or count * size > available:
        raise ModelFormatError(f"{count} elements of {size} bytes do not fit in the {available} bytes "
                               f"available; the file is truncated or corrupt")
    arr = np.frombuffer(raw, dtype=dtype_of(code, order), count=count, offset=offset)
    if code == BF16:
        return bf16_to_f32(arr)
    return arr.astype(arr.dtype.newbyteorder("="), copy=True)
