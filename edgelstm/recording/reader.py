"""Recordings back as arrays, one set per stream, for training (layout: files.py).

    recordings = edgelstm.recording.read("recordings/")     # a file, or a directory of them
    wrist = recordings["wrist1"]
    wrist.x         # (T, n) float32, in recorded order
    wrist.labels    # (T,) str, or None when no reading of the stream carried a label

Files are taken in name order (the time of their first row), rows in file order; a directory's
*.part files (still being written) are skipped. Anything malformed raises RecordingError naming
the file and the line (CSV) or row (Parquet).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import RecordingError
from . import files
from .files import MAX_LINE_BYTES, PART

U32 = 2**32
NO_BOOT = -1                            # in StreamRecording.boot: the sender gave none


@dataclass(frozen=True)
class StreamRecording:
    """One stream's readings, in recorded order; T readings of n values."""

    stream: str
    seq: np.ndarray                     # (T,) int64: the sender's u32 sequence numbers
    t: np.ndarray                       # (T,) float64 unix seconds (sender's, else receipt); NaN if not known
    boot: np.ndarray                    # (T,) int64 boot ids, NO_BOOT (-1) where the sender gave none
    x: np.ndarray                       # (T, n) float32
    labels: np.ndarray | None           # (T,) object (str; "" for a reading without one), or None: no labels

    def __len__(self) -> int:
        return len(self.seq)


@dataclass
class _Table:
    """One file's rows, all streams mixed."""

    n_inputs: int
    streams: np.ndarray                 # (T,) object str
    seq: np.ndarray
    t: np.ndarray
    boot: np.ndarray
    x: np.ndarray
    labels: np.ndarray                  # (T,) object: str or None

    def by_stream(self):
        """(stream, rows of that stream as a _Table), streams in order of first appearance."""
        if not len(self.streams):
            return
        names, first, codes = np.unique(self.streams, return_index=True, return_inverse=True)
        order = np.argsort(codes, kind="stable")                # grouped by stream, each in file order
        ends = np.cumsum(np.bincount(codes, minlength=len(names)))
        starts = ends - np.bincount(codes, minlength=len(names))
        for code in np.argsort(first):
            rows = order[starts[code]:ends[code]]
            yield str(names[code]), _Table(self.n_inputs, self.streams[rows], self.seq[rows], self.t[rows],
                                           self.boot[rows], self.x[rows], self.labels[rows])


def recording_files(path: str | os.PathLike) -> list[Path]:
    """The files read() reads for `path`: the file itself, or a directory's *.csv and *.parquet by name."""
    p = Path(path)
    if p.is_dir():
        found = sorted(q for q in p.iterdir() if q.suffix in files.EXTENSIONS.values() and q.is_file())
        if not found:
            raise RecordingError(f"no recording files (*.csv, *.parquet) in {p}: name the directory edgelstm record "
                                 "wrote into (-o DIR); files still being written end in .part and are skipped")
        return found
    if not p.exists():
        raise RecordingError(f"{p} does not exist: name a recording file or the directory edgelstm record wrote "
                             "into (-o DIR)")
    if p.name.endswith(PART):
        raise RecordingError(f"{p} is still being written (or was left by a crash, which the next edgelstm record "
                             "into its directory closes): read the closed files, without .part")
    if p.suffix not in files.EXTENSIONS.values():
        raise RecordingError(f"{p} is not a recording: edgelstm record writes .csv and .parquet files")
    return [p]


def read(path: str | os.PathLike) -> dict[str, StreamRecording]:
    """Every stream's readings in the recording at `path` (a file, or a directory of CSV and/or
    Parquet files), as {stream id: StreamRecording}, streams in order of first appearance."""
    parts: dict[str, list[_Table]] = {}
    n_inputs, first = 0, None
    for p in recording_files(path):
        table = _read_csv(p) if p.suffix == files.EXTENSIONS["csv"] else _read_parquet(p)
        if first is None:
            n_inputs, first = table.n_inputs, p
        elif table.n_inputs != n_inputs:
            raise RecordingError(f"{p} holds readings of {table.n_inputs} values, {first} of {n_inputs}: one "
                                 "recording has one input count; read the files separately")
        for stream, rows in table.by_stream():
            parts.setdefault(stream, []).append(rows)
    return {stream: _joined(stream, tables) for stream, tables in parts.items()}


def _joined(stream: str, tables: list[_Table]) -> StreamRecording:
    labels = np.concatenate([t.labels for t in tables])
    has_labels = any(label is not None for label in labels)
    return StreamRecording(stream, np.concatenate([t.seq for t in tables]), np.concatenate([t.t for t in tables]),
                           np.concatenate([t.boot for t in tables]), np.concatenate([t.x for t in tables]),
                           np.array([label or "" for label in labels], dtype=object) if has_labels else None)


# -- CSV ------------------------------------------------------------------------------------------------

def _malformed(path: Path, line: int, what: str) -> RecordingError:
    return RecordingError(f"{path}, line {line}: {what}; fix or delete that line, or move the file out of the "
                          "recording")


def _fields(raw: bytes, path: Path, line: int) -> list[str]:
    """The CSV fields of one complete line (bytes up to and with its b"\\n")."""
    if len(raw) > MAX_LINE_BYTES:
        raise _malformed(path, line, f"a line longer than {MAX_LINE_BYTES:,} bytes (not a recording?)")
    if not raw.endswith(b"\n"):
        raise _malformed(path, line, "the last line is cut off (no end of line): the file was not closed cleanly")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _malformed(path, line, "not UTF-8 text") from None
    try:
        return next(csv.reader([text.rstrip("\r\n")], strict=True), [])
    except csv.Error as exc:
        raise _malformed(path, line, f"not CSV ({exc})") from None


def _header_inputs(names: list[str], where: str) -> int:
    """n, the count of x columns, from a recording's column names; raises RecordingError."""
    n = len(names) - len(files.HEAD) - 1
    if n < 1 or names != files.columns(n):
        shown = ",".join(names)[:120]
        raise RecordingError(f"{where}: not a recording's columns (expected {','.join(files.HEAD)},x0,...,"
                             f"{files.LABEL}; got {shown}): read only files that edgelstm record wrote")
    return n


def _u32(text: str, name: str, path: Path, line: int) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) >= U32:
        raise _malformed(path, line, f"{name} {text[:20]!r} is not an integer in [0, 2**32)")
    return int(text)


def _read_csv(path: Path) -> _Table:
    with open(path, "rb") as fh:
        header = fh.readline(MAX_LINE_BYTES + 1)
        if not header:
            raise RecordingError(f"{path} is empty: not a recording (delete it)")
        n = _header_inputs(_fields(header, path, 1), f"{path}, line 1")
        width = len(files.HEAD) + n + 1
        streams, seqs, ts, boots, xs, labels = [], [], [], [], [], []
        line = 1
        while raw := fh.readline(MAX_LINE_BYTES + 1):       # bounded: a hostile line is refused, not held
            line += 1
            fields = _fields(raw, path, line)
            if len(fields) != width:
                raise _malformed(path, line, f"{len(fields)} fields, the header has {width}")
            stream, seq, t, boot, *values = fields
            if not stream:
                raise _malformed(path, line, "empty stream id")
            streams.append(stream)
            seqs.append(_u32(seq, "seq", path, line))
            boots.append(NO_BOOT if boot == "" else _u32(boot, "boot", path, line))
            try:
                ts.append(float(t) if t else np.nan)
                xs.append([float(v) for v in values[:n]])
            except ValueError:
                bad = next(name for name, v in zip(("t", *files.x_columns(n)), (t or "0", *values)) if not _is_float(v))
                raise _malformed(path, line, f"{bad} is not a number") from None
            labels.append(values[n] or None)
    return _Table(n, np.array(streams, dtype=object), np.array(seqs, np.int64), np.array(ts, np.float64),
                  np.array(boots, np.int64), np.array(xs, np.float32).reshape(len(xs), n),
                  np.array(labels, dtype=object))


def _is_float(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


# -- Parquet --------------------------------------------------------------------------------------------

def _read_parquet(path: Path) -> _Table:
    pa, pq = files.pyarrow_modules()
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise RecordingError(f"{path} is not a readable Parquet file ({str(exc)[:120]}): it may be cut off; "
                             "move it out of the recording") from None
    n = _header_inputs(table.schema.names, str(path))

    def column(name: str, kind, nulls=None) -> np.ndarray:
        values = table.column(name)
        if values.null_count and nulls is None:
            row = next(i for i, v in enumerate(values.is_null().to_pylist()) if v)
            raise RecordingError(f"{path}, row {row + 1}: {name} is empty; move the file out of the recording")
        try:
            values = values.cast(kind)
        except (pa.ArrowException, ValueError) as exc:
            raise RecordingError(f"{path}: column {name} does not hold {kind} values ({str(exc)[:80]}); move "
                                 "the file out of the recording") from None
        if nulls is not None:
            values = values.fill_null(nulls)
        return values.to_numpy()

    seq = column("seq", pa.int64())
    boot = column("boot", pa.int64(), nulls=NO_BOOT)
    for name, values in (("seq", seq), ("boot", boot)):
        bad = np.flatnonzero((values < (0 if name == "seq" else NO_BOOT)) | (values >= U32))
        if len(bad):
            raise RecordingError(f"{path}, row {bad[0] + 1}: {name} {values[bad[0]]} is outside [0, 2**32); move "
                                 "the file out of the recording")
    x = np.stack([column(name, pa.float32()) for name in files.x_columns(n)], axis=1) if len(table) else \
        np.empty((0, n), np.float32)
    streams = np.array(table.column("stream").cast(pa.string()).to_pylist(), dtype=object)
    if any(s is None or s == "" for s in streams):
        row = next(i for i, s in enumerate(streams) if not s)
        raise RecordingError(f"{path}, row {row + 1}: empty stream id; move the file out of the recording")
    labels = np.array([v or None for v in table.column(files.LABEL).cast(pa.string()).to_pylist()], dtype=object)
    return _Table(n, streams, seq, column("t", pa.float64(), nulls=np.nan), boot, x.astype(np.float32), labels)


def last_keys(paths: list[Path], n: int) -> list[tuple[str, int | None, int]]:
    """(stream, boot or None, seq) of the last `n` rows of the files `paths` (in their order): what
    the recorder remembers at start, so that readings a crash left unacknowledged, which the broker
    delivers again, are not written a second time."""
    keys: list[tuple[str, int | None, int]] = []
    for p in paths:
        table = _read_csv(p) if p.suffix == files.EXTENSIONS["csv"] else _read_parquet(p)
        keys += [(str(s), None if b == NO_BOOT else int(b), int(q))
                 for s, b, q in zip(table.streams[-n:], table.boot[-n:], table.seq[-n:])]
    return keys[-n:] if n else []
