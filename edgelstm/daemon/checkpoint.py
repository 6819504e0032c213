"""Checkpoints of every stream's state, written atomically and verified on read.

File layout (little-endian):
  magic b"ELSTMCK1" | u32 version | u32 header length N | header JSON (N bytes) |
  float32 state[streams, S] | 32-byte SHA-256 of everything before it
Header: {"model_hash", "state_size", "streams": [{"id", "last_seq", "boot", "last_t"}], "saved_at"}.
Written to a temporary file, fsynced, renamed over the old one, and the directory fsynced:
a crash leaves either the old checkpoint or the new one, never a torn file.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import time
from dataclasses import dataclass

import numpy as np

MAGIC = b"ELSTMCK1"
VERSION = 1


class CheckpointError(ValueError):
    pass


@dataclass
class Checkpoint:
    model_hash: str
    state_size: int
    streams: list[dict]                 # id, last_seq, boot, last_t
    states: np.ndarray                  # (len(streams), S) float32


def save(path: str, ckpt: Checkpoint) -> None:
    header = json.dumps({"model_hash": ckpt.model_hash, "state_size": ckpt.state_size,
                         "streams": ckpt.streams, "saved_at": time.time()}).encode()
    body = MAGIC + struct.pack("<II", VERSION, len(header)) + header
    body += np.ascontiguousarray(ckpt.states, "<f4").tobytes()
    body += hashlib.sha256(body).digest()
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as fh:
        fh.write(body)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load(path: str) -> Checkpoint:
    """Raises FileNotFoundError, or CheckpointError saying what is wrong with the file."""
    with open(path, "rb") as fh:
        data = fh.read()
    if len(data) < 16 + 32 or data[:8] != MAGIC:
        raise CheckpointError("not an edgelstm checkpoint (bad magic or truncated)")
    if hashlib.sha256(data[:-32]).digest() != data[-32:]:
        raise CheckpointError("checksum mismatch: the file is corrupt or was cut short")
    version, n = struct.unpack_from("<II", data, 8)
    if version != VERSION:
        raise CheckpointError(f"checkpoint version {version} is not supported")
    try:
        header = json.loads(data[16:16 + n])
        size, streams = int(header["state_size"]), header["streams"]
        states = np.frombuffer(data, "<f4", len(streams) * size, 16 + n).reshape(len(streams), size)
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"malformed checkpoint header: {exc}") from None
    return Checkpoint(header["model_hash"], size, streams, states.astype(np.float32))
