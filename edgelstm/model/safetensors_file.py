"""Read .safetensors files with NumPy alone (no torch, no safetensors package).

Layout: an 8-byte little-endian header length N, N bytes of UTF-8 JSON
`{name: {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {str: str}}`,
then the data buffer; offsets are relative to the buffer's start. Everything the header claims is
checked against the file's real size before anything is allocated: header size (at most 100 MB,
the reference implementation's limit), dtype, shape, offsets inside the buffer, byte count equal
to prod(shape) * itemsize, and no overlaps or holes (the buffer must be exactly covered, as the
reference implementation requires). BF16 converts exactly to float32.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np

from ..errors import ModelFormatError
from .raw_arrays import SAFETENSORS_CODES, array_from_bytes, itemsize

MAX_HEADER_BYTES = 100_000_000
MAX_NDIM = 64


def _fail(path, why: str):
    raise ModelFormatError(f"{path}: not a valid .safetensors file ({why}). Re-export it with "
                           f"safetensors.torch.save_file(model.state_dict(), path).")


def read_header(path) -> tuple[dict, dict, int]:
    """(tensor entries {name: (code, shape, begin, end)}, __metadata__, buffer start offset)."""
    file_size = os.path.getsize(path)
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            _fail(path, f"only {len(head)} bytes; the 8-byte header length is missing")
        n = int.from_bytes(head, "little")
        if n > MAX_HEADER_BYTES:
            _fail(path, f"the header claims {n:,} bytes, over the {MAX_HEADER_BYTES:,}-byte limit")
        if n > file_size - 8:
            _fail(path, f"the header claims {n:,} bytes but the file has only {file_size - 8:,} after the "
                        f"length; it is truncated")
        text = fh.read(n)
    try:
        header = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        _fail(path, f"the header is not UTF-8 JSON: {exc}")
    if not isinstance(header, dict):
        _fail(path, "the header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        _fail(path, "__metadata__ must map strings to strings")
    buffer_len = file_size - 8 - n
    entries = {name: _entry(path, name, info, buffer_len) for name, info in header.items()}
    _check_coverage(path, entries, buffer_len)
    return entries, metadata, 8 + n


def _entry(path, name, info, buffer_len: int):
    if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= set(info):
        _fail(path, f"tensor {name!r} needs dtype, shape and data_offsets")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if dtype not in SAFETENSORS_CODES:
        hint = " (float8: convert the tensors to float32 before saving)" if str(dtype).startswith("F8") else ""
        _fail(path, f"tensor {name!r} has unsupported dtype {dtype!r}{hint}")
    if (not isinstance(shape, list) or len(shape) > MAX_NDIM
            or not all(type(d) is int and d >= 0 for d in shape)):
        _fail(path, f"tensor {name!r} has a malformed shape {shape!r:.80}")
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(type(o) is int for o in offsets) or not 0 <= offsets[0] <= offsets[1] <= buffer_len):
        _fail(path, f"tensor {name!r} has data_offsets {offsets!r:.80} outside the {buffer_len:,}-byte data buffer")
    code = SAFETENSORS_CODES[dtype]
    nbytes = math.prod(shape) * itemsize(code)
    if offsets[1] - offsets[0] != nbytes:
        _fail(path, f"tensor {name!r} of shape {tuple(shape)} and dtype {dtype} needs {nbytes:,} bytes but "
                    f"data_offsets span {offsets[1] - offsets[0]:,}")
    return code, tuple(shape), offsets[0], offsets[1]


def _check_coverage(path, entries: dict, buffer_len: int):
    end = 0
    for name, (_, _, begin, stop) in sorted(entries.items(), key=lambda kv: (kv[1][2], kv[1][3])):
        if begin < end:
            _fail(path, f"tensor {name!r} overlaps the tensor before it in the data buffer")
        if begin > end:
            _fail(path, f"the data buffer has a hole of {begin - end} bytes before tensor {name!r}")
        end = stop
    if end != buffer_len:
        _fail(path, f"the data buffer has {buffer_len - end:,} bytes after its last tensor")


def read_safetensors(path) -> dict[str, np.ndarray]:
    """{name: array} in header order; BF16 -> float32 (exact), other dtypes as stored, native byte order."""
    entries, _, start = read_header(path)
    with open(path, "rb") as fh:
        fh.seek(start)
        buffer = fh.read()
    out = {}
    for name, (code, shape, begin, stop) in entries.items():
        count = math.prod(shape)
        out[name] = array_from_bytes(buffer, code, "<", count=count, offset=begin).reshape(shape)
    return out


def read_safetensors_metadata(path) -> dict[str, str]:
    """The file's __metadata__ (empty when absent)."""
    return read_header(path)[1]
