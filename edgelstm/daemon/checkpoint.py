"""Checkpoints of every stream's state: written atomically, locked to one daemon, verified on read.

File layout, version 2 (little-endian):
  magic b"ELSTMCK1" | u32 version | u32 header length N | header JSON (N bytes) | zero padding to a multiple of 8 |
  positions[streams] (POSITION, 32 bytes each) | float32 state[streams, S] | 32-byte SHA-256 of everything before it
Header: {"model_hash", "state_size", "ids": [stream id, ...], "saved_at"}.
Positions are columns, not JSON, so writing 4,096 streams costs one tobytes() instead of a json.dumps that holds
the interpreter lock for milliseconds (benchmarks/README.md, "Checkpoint writes"). -1 and NaN mean "not known".
Version 1 (read, never written) had the positions in the header: "streams": [{"id", "last_seq", "boot", "last_t",
"seen"?}] and no padding.
Written through fileio.atomic_write: a crash or a failed write leaves the old checkpoint or the new one, never a
torn file. A valid SHA only proves the bytes are the ones written, so load() also checks every field.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import struct
import time
from dataclasses import dataclass

import numpy as np

from ..errors import CheckpointError
from ..fileio import atomic_write

__all__ = ["MAGIC", "VERSION", "MAX_ID_BYTES", "POSITION", "Checkpoint", "CheckpointError", "Lock", "acquire_lock",
           "load", "save"]

MAGIC = b"ELSTMCK1"
VERSION = 2
MAX_ID_BYTES = 128                      # UTF-8 bytes of a stream id
_PREFIX = struct.Struct("<8sII")        # magic, version, header length
_DIGEST = 32                            # SHA-256
_U32 = 2**32                            # sequence numbers and boot ids are u32 (PROTOCOL.md)
_POSITION_KEYS = ("last_seq", "boot", "last_t", "seen")
# a stream's place in its sequence; -1 (seq, boot) and NaN (times) stand for "not known"
POSITION = np.dtype([("last_seq", "<i8"), ("boot", "<i8"), ("last_t", "<f8"), ("seen", "<f8")])


@dataclass
class Checkpoint:
    model_hash: str
    state_size: int
    ids: list[str]
    positions: np.ndarray               # (len(ids),) POSITION; "seen" is our wall-clock time of the last reading
    states: np.ndarray                  # (len(ids), S) float32

    @classmethod
    def of(cls, model_hash: str, state_size: int, streams: list[dict], states: np.ndarray) -> Checkpoint:
        """From one dict per stream: {"id", "last_seq", "boot", "last_t", "seen"?}, None where not known."""
        rows = [tuple(_known_or(s.get(key), key) for key in _POSITION_KEYS) for s in streams]
        return cls(model_hash, state_size, [s["id"] for s in streams], np.array(rows, POSITION), states)

    @property
    def streams(self) -> list[dict]:
        """One dict per stream, as `of` takes them; "seen" is left out when not known."""
        out = []
        for stream_id, row in zip(self.ids, self.positions.tolist()):
            entry = {"id": stream_id, **{key: _none_if_unknown(v) for key, v in zip(_POSITION_KEYS, row)}}
            if entry["seen"] is None:
                del entry["seen"]
            out.append(entry)
        return out

    def most_recent(self, capacity: int) -> Checkpoint:
        """The `capacity` streams with the latest "seen" (ties: the earlier in the file), in file order.

        For a daemon restarted with fewer stream slots than the checkpoint holds: it keeps the streams
        that were active last instead of refusing the whole checkpoint. A stream never seen counts as seen at 0."""
        if capacity < 0:
            raise ValueError(f"capacity must be >= 0, not {capacity}")
        seen = np.nan_to_num(self.positions["seen"], nan=0.0)
        by_recency = np.argsort(-seen, kind="stable")       # stable: equal "seen" keep their file order
        keep = np.sort(by_recency[:capacity])
        return Checkpoint(self.model_hash, self.state_size, [self.ids[i] for i in keep], self.positions[keep],
                          self.states[keep])


def _known_or(value, key: str):
    if value is not None:
        return value
    return -1 if key in ("last_seq", "boot") else math.nan


def _none_if_unknown(value):
    if isinstance(value, float):
        return None if math.isnan(value) else value
    return None if value < 0 else value


class Lock:
    """An exclusive flock on `path + ".lock"`, so two daemons never write one checkpoint.

    The lock file holds the owner's pid, for the message another daemon gets. It is never deleted: removing
    it while a second daemon waits to open it would let both hold a lock, each on a different file.
    The kernel drops the lock when the owner exits, however it exits."""

    def __init__(self, path: str):
        self.checkpoint = os.fspath(path)
        self.path = f"{self.checkpoint}.lock"
        # O_CLOEXEC: a program the daemon starts must not inherit the lock and outlive it holding it
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise CheckpointError(f"cannot open the lock file {self.path}: {exc.strerror}; make its directory "
                                  f"writable by this user or choose another checkpoint path") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            _write_pid(fd)
        except BlockingIOError:
            owner = _read_pid(fd)
            os.close(fd)
            raise CheckpointError(f"checkpoint {self.checkpoint} is in use by another edgelstm (pid {owner}): "
                                  f"give each daemon its own checkpoint path") from None
        except BaseException:
            os.close(fd)
            raise
        self._fd: int | None = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Give the lock up; calling it again does nothing."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)                # closing the only descriptor releases the flock

    def __enter__(self) -> Lock:
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()


def acquire_lock(path: str) -> Lock:
    """Lock the checkpoint `path` for this process; raises CheckpointError if another process holds it."""
    return Lock(path)


def _read_pid(fd: int) -> str:
    # the holder may be between creating the file and writing its pid
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        text = ""
    return text if text.isdigit() else "unknown"


def _write_pid(fd: int) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)


def save(path: str, ckpt: Checkpoint) -> None:
    """Write `ckpt` to `path` atomically (mode 0600). Raises OSError if the write fails; the old checkpoint is then
    intact and no temporary file is left, so the caller can retry."""
    n = len(ckpt.ids)
    states = np.ascontiguousarray(ckpt.states, "<f4")
    if states.shape != (n, ckpt.state_size):
        raise ValueError(f"checkpoint states have shape {states.shape}, expected "
                         f"({n}, {ckpt.state_size}): one row of state_size per stream")
    positions = np.ascontiguousarray(ckpt.positions, POSITION)
    if positions.shape != (n,):
        raise ValueError(f"checkpoint positions have shape {positions.shape}, expected ({n},): one per stream")
    header = json.dumps({"model_hash": ckpt.model_hash, "state_size": ckpt.state_size, "ids": ckpt.ids,
                         "saved_at": time.time()}).encode()
    prefix = _PREFIX.pack(MAGIC, VERSION, len(header))
    chunks = [prefix, header, bytes(_pad8(len(prefix) + len(header))), positions.tobytes(), states.tobytes()]
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    atomic_write(path, [*chunks, digest.digest()], mode=0o600)


def load(path: str) -> Checkpoint:
    """Raises FileNotFoundError (or another OSError), or CheckpointError saying what is wrong with the file."""
    with open(path, "rb") as fh:
        data = fh.read()
    version, header, body_at = _verified_header(data)
    model_hash = header.get("model_hash")
    if not isinstance(model_hash, str):
        raise CheckpointError(f"checkpoint header: model_hash must be a string, found {_kind(model_hash)}")
    size = header.get("state_size")
    if not isinstance(size, int) or not _is_int(size) or size <= 0:
        raise CheckpointError(f"checkpoint header: state_size must be a positive integer, found {_kind(size)}")
    body = data[body_at:len(data) - _DIGEST]
    if version == 1:
        streams = _checked_streams(header.get("streams"))
        return Checkpoint.of(model_hash, size, streams, _checked_states(body, len(streams), size))
    ids = _checked_ids(header.get("ids"))
    padding = _pad8(body_at)
    positions = _checked_positions(body[padding:padding + len(ids) * POSITION.itemsize], len(ids))
    states = _checked_states(body[padding + positions.nbytes:], len(ids), size)
    return Checkpoint(model_hash, size, ids, positions, states)


def _pad8(offset: int) -> int:
    return -offset % 8


def _verified_header(data: bytes) -> tuple[int, dict, int]:
    """(version, the header object, the offset just after it), once magic, checksum and version are right."""
    if len(data) < _PREFIX.size + _DIGEST or data[:8] != MAGIC:
        raise CheckpointError("not an edgelstm checkpoint (bad magic or truncated)")
    if hashlib.sha256(data[:-_DIGEST]).digest() != data[-_DIGEST:]:
        raise CheckpointError("checksum mismatch: the file is corrupt or was cut short")
    _, version, n = _PREFIX.unpack_from(data)
    if version > VERSION:
        raise CheckpointError(f"checkpoint version {version} was written by a newer edgelstm; upgrade edgelstm")
    if version not in (1, VERSION):
        raise CheckpointError(f"checkpoint version {version} is not supported")
    end = _PREFIX.size + n
    if end > len(data) - _DIGEST:
        raise CheckpointError(f"checkpoint header length {n} runs past the end of the file")
    try:
        header = json.loads(data[_PREFIX.size:end])
    except (ValueError, RecursionError) as exc:     # UnicodeDecodeError is a ValueError; deep nesting recurses
        raise CheckpointError(f"checkpoint header is not valid UTF-8 JSON: {exc}") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"checkpoint header must be a JSON object, found {_kind(header)}")
    return version, header, end


def _checked_ids(ids) -> list[str]:
    if not isinstance(ids, list):
        raise CheckpointError(f"checkpoint header: ids must be a list, found {_kind(ids)}")
    seen_ids: set[str] = set()
    for k, stream_id in enumerate(ids):
        _check_id(k, stream_id)
        if stream_id in seen_ids:
            raise CheckpointError(f"checkpoint stream {k}: id {stream_id!r} appears twice")
        seen_ids.add(stream_id)
    return ids


def _checked_positions(section: bytes, n_streams: int) -> np.ndarray:
    """(n_streams,) POSITION: sequence numbers and boots -1 or u32, times NaN (not known) or finite."""
    if len(section) != n_streams * POSITION.itemsize:
        raise CheckpointError(f"checkpoint positions section is {len(section)} bytes, expected "
                              f"{n_streams * POSITION.itemsize} ({n_streams} streams x {POSITION.itemsize})")
    positions = np.frombuffer(section, POSITION).copy()
    for key in ("last_seq", "boot"):
        _first_bad(positions[key], (positions[key] >= -1) & (positions[key] < _U32),
                   f"{key} must be -1 (not known) or in [0, 2**32)")
    for key in ("last_t", "seen"):
        _first_bad(positions[key], ~np.isinf(positions[key]), f"{key} must be NaN (not known) or finite")
    return positions


def _first_bad(values: np.ndarray, ok: np.ndarray, rule: str) -> None:
    if not ok.all():
        k = int(np.flatnonzero(~ok)[0])
        raise CheckpointError(f"checkpoint stream {k}: {rule}, found {values[k]}")


def _checked_streams(streams) -> list[dict]:
    """Fresh, validated stream dicts; unknown keys (from a later edgelstm) are dropped."""
    if not isinstance(streams, list):
        raise CheckpointError(f"checkpoint header: streams must be a list, found {_kind(streams)}")
    out, seen_ids = [], set()
    for k, s in enumerate(streams):
        entry = _checked_stream(k, s)
        if entry["id"] in seen_ids:
            raise CheckpointError(f"checkpoint stream {k}: id {entry['id']!r} appears twice")
        seen_ids.add(entry["id"])
        out.append(entry)
    return out


def _checked_stream(k: int, s) -> dict:
    if not isinstance(s, dict):
        raise CheckpointError(f"checkpoint stream {k} must be a JSON object, found {_kind(s)}")
    for key in ("id", "last_seq", "boot", "last_t"):
        if key not in s:
            raise CheckpointError(f"checkpoint stream {k} lacks {key!r}")
    _check_id(k, s["id"])
    for key in ("last_seq", "boot"):
        if s[key] is not None and not (_is_int(s[key]) and 0 <= s[key] < _U32):
            raise CheckpointError(f"checkpoint stream {k}: {key} must be null or an integer in [0, 2**32), "
                                  f"found {_kind(s[key])}")
    if s["last_t"] is not None and not _is_finite(s["last_t"]):
        raise CheckpointError(f"checkpoint stream {k}: last_t must be null or a finite number, found "
                              f"{_kind(s['last_t'])}")
    entry = {key: s[key] for key in ("id", "last_seq", "boot", "last_t")}
    if "seen" in s:
        if not _is_finite(s["seen"]):
            raise CheckpointError(f"checkpoint stream {k}: seen must be a finite number, found {_kind(s['seen'])}")
        entry["seen"] = float(s["seen"])
    return entry


def _check_id(k: int, stream_id) -> None:
    if not isinstance(stream_id, str) or not stream_id:
        raise CheckpointError(f"checkpoint stream {k}: id must be a non-empty string, found {_kind(stream_id)}")
    try:
        n = len(stream_id.encode("utf-8"))
    except UnicodeEncodeError:                      # a lone surrogate, which JSON's \ud800 escapes can spell
        raise CheckpointError(f"checkpoint stream {k}: id {stream_id!r} is not valid Unicode") from None
    if n > MAX_ID_BYTES:
        raise CheckpointError(f"checkpoint stream {k}: id is {n} UTF-8 bytes, more than {MAX_ID_BYTES}")


def _checked_states(section: bytes, n_streams: int, size: int) -> np.ndarray:
    """(n_streams, size) float32 from the states section, which must hold exactly that and only finite values."""
    # compared before anything is allocated: a huge state_size in the header must not cost memory
    expected = n_streams * size * 4
    if len(section) != expected:
        raise CheckpointError(f"checkpoint states section is {len(section)} bytes, expected {expected} "
                              f"({n_streams} streams x {size} float32)")
    states = np.frombuffer(section, "<f4").reshape(n_streams, size).astype(np.float32)
    if not np.isfinite(states).all():
        bad = int(np.flatnonzero(~np.isfinite(states).all(axis=1))[0])
        raise CheckpointError(f"checkpoint stream {bad}: its state holds NaN or Inf")
    return states


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_finite(v) -> bool:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    try:
        return math.isfinite(float(v))
    except OverflowError:                           # an integer beyond float range
        return False


def _kind(v) -> str:
    """A short description of a bad value for an error message: the value if it is a short scalar, else its type."""
    if v is None or isinstance(v, (bool, int, float)):
        text = json.dumps(v)
        return text if len(text) <= 40 else "a very large number"
    if isinstance(v, str):
        return f"the string {v!r}" if len(v) <= 40 else "a long string"
    names: dict[type, str] = {dict: "an object", list: "a list"}
    return names.get(type(v), type(v).__name__)
