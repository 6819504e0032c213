"""The .elstm deploy file: versioned, self-describing, no pickle.

Layout (all integers little-endian):
  offset 0   8 bytes   magic b"ELSTM\\x00\\r\\n"
  offset 8   u32       format version (FORMAT_VERSION)
  offset 12  u32       header length N in bytes
  offset 16  N bytes   header, UTF-8 JSON: {"format", "version", "architecture", "tensors",
                       "source", "content_sha256", "edgelstm_version"} and, for a model with
                       names (names.py), "labels": ["still", ...] or "outputs": [{"name":
                       "temperature", "unit": "°C"}, {"name": "count"}, ...]; architecture is
                       ModelSpec.architecture() (version 2: recurrent layers, pre/post layers,
                       heads; version 1 had only a head and two normalisations); tensors maps each name
                       to {"dtype": "<f4", "shape": [...], "offset": o, "nbytes": n}, offsets
                       relative to the data section
  then       zero padding to a multiple of 64
  then       data section: every tensor's float32 little-endian bytes, 64-byte aligned

A reader rejects an unknown magic or a newer version, checks every tensor's bounds and
recomputes the content hash over the stored architecture and weights before trusting the
file. Version 1 files are still read; a model read from one keeps its old hash in
source["content_sha256_v1"], so checkpoints written under it stay valid.

Names are metadata outside the content hash (see ModelSpec.names): a file without them is
byte for byte what it was before they existed, and an older edgelstm reading a file with them
ignores the two keys. They are checked on reading by the rules convert applies.
"""

from __future__ import annotations

import json
import struct

import numpy as np

from .. import __version__
from ..errors import ModelFormatError
from ..fileio import atomic_write
from .layers import Affine, Head, Linear
from .layers import from_config as layer_from_config
from .names import OutputNames
from .spec import ModelSpec, RecurrentLayer, content_hash

MAGIC = b"ELSTM\x00\r\n"
FORMAT_VERSION = 2
_ALIGN = 64


def _pad(n: int) -> int:
    return (-n) % _ALIGN


def save(spec: ModelSpec, path) -> str:
    """Write spec to `path` atomically; returns the content hash."""
    tensors, blobs, offset = {}, [], 0
    for name, arr in sorted(spec.named_arrays().items()):
        raw = np.ascontiguousarray(arr, dtype="<f4").tobytes()
        tensors[name] = {"dtype": "<f4", "shape": list(arr.shape), "offset": offset, "nbytes": len(raw)}
        blobs.append(raw + b"\x00" * _pad(len(raw)))
        offset += len(raw) + _pad(len(raw))
    digest = spec.content_hash()
    header = json.dumps({
        "format": "edgelstm", "version": FORMAT_VERSION, "architecture": spec.architecture(),
        "tensors": tensors, "source": spec.source, "content_sha256": digest,
        "edgelstm_version": __version__, **spec.names.header(),
    }, sort_keys=True).encode()
    prefix = MAGIC + struct.pack("<II", FORMAT_VERSION, len(header)) + header
    # 0644: a model file holds no secrets and is read by daemons running as other users
    atomic_write(path, [prefix + b"\x00" * _pad(len(prefix)), *blobs], mode=0o644)
    return digest


def read_header(data: bytes) -> tuple[dict, int]:
    """(header dict, start of the data section) from the file's bytes."""
    if data[:8] != MAGIC:
        raise ModelFormatError("not an .elstm file (bad magic)")
    if len(data) < 16:
        raise ModelFormatError(".elstm file is truncated")
    version, n = struct.unpack_from("<II", data, 8)
    if version > FORMAT_VERSION:
        raise ModelFormatError(f".elstm format version {version} is newer than this edgelstm "
                               f"understands ({FORMAT_VERSION}); upgrade edgelstm")
    if 16 + n > len(data):
        raise ModelFormatError(".elstm header runs past the end of the file; it is truncated")
    try:
        header = json.loads(data[16:16 + n])
    except ValueError as exc:
        raise ModelFormatError(f".elstm header is not valid JSON: {exc}") from None
    if not isinstance(header, dict):
        raise ModelFormatError(f".elstm header is a JSON {type(header).__name__}, not an object; the file is damaged")
    return header, 16 + n + _pad(16 + n)


def load(path) -> ModelSpec:
    with open(path, "rb") as fh:
        data = fh.read()
    header, start = read_header(data)
    arrays = {}
    for name, t in header.get("tensors", {}).items():
        shape, off, nbytes = tuple(t["shape"]), int(t["offset"]), int(t["nbytes"])
        if t.get("dtype") != "<f4" or nbytes != 4 * int(np.prod(shape)) or off < 0 \
                or start + off + nbytes > len(data):
            raise ModelFormatError(f".elstm tensor {name!r} is malformed or truncated")
        arrays[name] = np.frombuffer(data, "<f4", nbytes // 4, start + off).reshape(shape)
    architecture, stored = header.get("architecture"), header.get("content_sha256")
    if not isinstance(architecture, dict) or content_hash(architecture, arrays) != stored:
        raise ModelFormatError(f"{path}: content hash mismatch; the file is corrupt")
    source = dict(header.get("source") or {})
    try:
        if header.get("version", 1) == 1:
            source["content_sha256_v1"] = stored
            return _spec_v1(architecture, arrays, source)
        spec = _spec_v2(architecture, arrays, source)
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFormatError(f"{path}: malformed architecture ({type(exc).__name__}: {exc}); "
                               f"the file is damaged") from None
    if spec.content_hash() != stored:
        raise ModelFormatError(f"{path}: the architecture does not match its weights; the file is damaged")
    return _with_names(spec, header, path)


def _with_names(spec: ModelSpec, header: dict, path) -> ModelSpec:
    """spec with the header's labels or output names, if it has any."""
    if "labels" not in header and "outputs" not in header:
        return spec
    try:
        return spec.with_names(OutputNames.from_header(header, spec.output_size))
    except ModelFormatError as exc:
        raise ModelFormatError(f"{path}: unusable output names in the header ({exc}); the file is damaged: "
                               f"convert the model again") from None


def _recurrent(arch: dict, a: dict) -> tuple[RecurrentLayer, ...]:
    layers = []
    for k, layer in enumerate(arch["layers"]):
        p = f"layers.{k}."
        layers.append(RecurrentLayer(layer["kind"], layer["input_size"], layer["hidden_size"], a[p + "w_ih"],
                                     a[p + "w_hh"], a[p + "b_ih"], a[p + "b_hh"], a.get(p + "w_hr"),
                                     a.get(p + "w_peep")))
    return tuple(layers)


def _spec_v2(arch: dict, a: dict, source: dict) -> ModelSpec:
    def chain(configs, prefix):
        return tuple(layer_from_config(c, a, f"{prefix}{k}.") for k, c in enumerate(configs))

    heads = tuple(Head(h["name"], chain(h["layers"], f"heads.{h['name']}.")) for h in arch["heads"])
    return ModelSpec(_recurrent(arch, a), chain(arch["pre"], "pre."), chain(arch["post"], "post."), heads,
                     source=source)


def _spec_v1(arch: dict, a: dict, source: dict) -> ModelSpec:
    head = Linear(a["head.weight"], a["head.bias"], "head") if arch.get("head") else None

    def norm(which, make):
        return make(a[f"{which}.mean"], a[f"{which}.std"]) if arch.get(which) else None

    return ModelSpec.classic(_recurrent(arch, a), head, norm("input_norm", Affine.normalise),
                             norm("output_norm", Affine.denormalise), source=source)
