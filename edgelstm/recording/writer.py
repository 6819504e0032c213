"""Rows into rotating CSV or Parquet files (layout: files.py).

A file is written as NAME.part and renamed to NAME when closed (after an fsync), so whoever
lists the directory sees complete files only. A file is opened at its first row (no empty
files) and closed when it reaches `rotate_bytes`, when it has been open `rotate_s`, or at the end.

`rows_committed` says how many rows survive if this process dies now, which is when the
recorder acknowledges their readings: a CSV row once flush() handed it to the OS; a Parquet
row once its file is closed (a Parquet file is unreadable until its footer is written).
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import logging
import os
import time
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from ..errors import RecordingError
from ..fileio import fsync_directory
from . import files
from .files import PART, Row

log = logging.getLogger(__name__)
ROW_GROUP_ROWS = 65_536             # Parquet rows buffered before they are written as one row group
LOCK_NAME = ".edgelstm-record.lock"
BROKEN = ".broken"                      # a Parquet .part a crash left: unreadable, kept for a person to delete


class _CsvFile:
    def __init__(self, path: Path, n_inputs: int):
        self.path = path
        self.fh = open(path, "xb")              # x: never over another file
        self._buf = io.StringIO()
        self._csv = csv.writer(self._buf, lineterminator="\n")
        self.size = 0
        self._put(files.columns(n_inputs))

    def _put(self, fields: list) -> None:
        self._csv.writerow(fields)
        data = self._buf.getvalue().encode("utf-8")
        self._buf.seek(0)
        self._buf.truncate()
        self.fh.write(data)
        self.size += len(data)

    def write(self, row: Row) -> None:
        # str(np.float32) is the shortest text that reads back as the same float32
        self._put([row.stream, row.seq, repr(float(row.t)), "" if row.boot is None else row.boot,
                   *map(str, row.x), row.label or ""])

    def flush(self) -> None:
        self.fh.flush()

    def finish(self) -> None:
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()

    def abandon(self) -> None:
        with contextlib.suppress(OSError):
            self.fh.close()


class _ParquetFile:
    def __init__(self, path: Path, n_inputs: int):
        self.pa, pq = files.pyarrow_modules()
        self.path = path
        self.schema = files.parquet_schema(n_inputs)
        self.fh = open(path, "xb")
        self.writer = pq.ParquetWriter(self.fh, self.schema)
        self._names = self.schema.names
        self._rows: list[Row] = []
        self._row_bytes = 4 * n_inputs + 24     # what a row adds to the file, about: for rotation by size

    @property
    def size(self) -> int:
        return self.fh.tell() + len(self._rows) * self._row_bytes

    def write(self, row: Row) -> None:
        self._rows.append(row)
        if len(self._rows) >= ROW_GROUP_ROWS:
            self._write_group()

    def _write_group(self) -> None:
        rows, self._rows = self._rows, []
        if not rows:
            return
        x = np.stack([r.x for r in rows])                           # (rows, n_inputs) float32
        data = [[r.stream for r in rows], [r.seq for r in rows], [r.t for r in rows], [r.boot for r in rows],
                *(x[:, i] for i in range(x.shape[1])), [r.label for r in rows]]
        self.writer.write_table(self.pa.Table.from_arrays(
            [self.pa.array(column, type=field.type) for column, field in zip(data, self.schema)], schema=self.schema))

    def flush(self) -> None:
        pass                                    # nothing is readable before the footer: rows wait for finish()

    def finish(self) -> None:
        self._write_group()
        self.writer.close()
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()

    def abandon(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()
        with contextlib.suppress(OSError):
            self.fh.close()


class RecordingWriter:
    """Rows of `n_inputs` values into rotating files in `directory` ("csv" or "parquet")."""

    def __init__(self, directory: str | os.PathLike, n_inputs: int, fmt: str = "csv", rotate_bytes: int = 0,
                 rotate_s: float = 0.0, clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time):
        if fmt not in files.EXTENSIONS:
            raise RecordingError(f"unknown recording format {fmt!r}: use one of {sorted(files.EXTENSIONS)}")
        if n_inputs < 1:
            raise RecordingError(f"a reading needs at least one value, not {n_inputs}")
        if fmt == "parquet":
            files.pyarrow_modules()             # fail now, not at the first reading
        self.directory = Path(directory)
        self.n_inputs, self.fmt = n_inputs, fmt
        self.rotate_bytes, self.rotate_s = rotate_bytes, rotate_s
        self.clock, self.wall_clock = clock, wall_clock
        self.rows_written = 0
        self.rows_committed = 0                 # of rows_written: those a crash of this process cannot lose
        self.files_closed = 0
        self.last_closed: Path | None = None
        self._file: _CsvFile | _ParquetFile | None = None
        self._opened_at = 0.0
        self._rows_in_file = 0

    @property
    def current(self) -> Path | None:
        """The .part file being written, if any."""
        return self._file.path if self._file is not None else None

    def write(self, rows: Iterable[Row]) -> None:
        for row in rows:
            if len(row.x) != self.n_inputs:
                raise ValueError(f"a row of {len(row.x)} values in a recording of {self.n_inputs}")
            if self._file is None:
                self._open()
            assert self._file is not None
            self._file.write(row)
            self.rows_written += 1
            self._rows_in_file += 1
            if self.rotate_bytes and self._file.size >= self.rotate_bytes:
                self.close_file()

    def flush(self) -> None:
        """Hand what was written to the OS (CSV: those rows are committed now)."""
        if self._file is not None:
            self._file.flush()
            if self.fmt == "csv":
                self.rows_committed = self.rows_written

    def tick(self) -> None:
        """Close the current file once it has been open `rotate_s`."""
        if self._file is not None and self.rotate_s and self.clock() - self._opened_at >= self.rotate_s:
            self.close_file()

    def close_file(self) -> None:
        """Close the current file now: fsynced, renamed from NAME.part to NAME."""
        f = self._file
        if f is None:
            return
        self._file = None
        try:
            f.finish()
        except BaseException:
            f.abandon()
            raise
        final = f.path.with_name(f.path.name[:-len(PART)])
        os.replace(f.path, final)
        fsync_directory(str(self.directory))
        self.rows_committed = self.rows_written
        self.files_closed += 1
        self.last_closed = final
        log.info("closed %s (%d readings)", final, self._rows_in_file)

    def close(self) -> None:
        self.close_file()

    def _open(self) -> None:
        wall = self.wall_clock()
        number = 1
        while True:         # the first number free for this second in any format (.csv, .part...), even after a restart
            name = files.file_name(wall, number, self.fmt)
            if not any(self.directory.glob(f"{name.rsplit('.', 1)[0]}.*")):
                break
            number += 1
        path = self.directory / f"{name}{PART}"
        self._file = _CsvFile(path, self.n_inputs) if self.fmt == "csv" else _ParquetFile(path, self.n_inputs)
        self._opened_at = self.clock()
        self._rows_in_file = 0


# -- the directory: one recorder at a time, and what a crash left behind ------------------------------

class DirectoryLock:
    """An exclusive flock on DIR/.edgelstm-record.lock while a recorder writes into DIR: a second one
    would take the first one's .part file for a crash's leftover. Released when the process exits."""

    def __init__(self, directory: str | os.PathLike):
        path = os.path.join(directory, LOCK_NAME)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise RecordingError(f"cannot create {path} ({exc.strerror}): make {directory} writable by this user "
                                 "or record into another directory") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise RecordingError(f"{directory} is being recorded into by another edgelstm record (pid {owner}): "
                                 "give each recorder its own -o DIR") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


def recover_leftovers(directory: str | os.PathLike) -> list[str]:
    """Close the .part files a crashed recorder left in `directory` (call it holding the
    DirectoryLock); returns one line per file saying what was done.

    A CSV file is cut after its last complete line and renamed: every row in it was committed
    or not, but none is half there. A Parquet file has no footer and cannot be read: it is renamed
    NAME.parquet.broken (its readings were never acknowledged, so the broker delivers them again
    if the session still holds them)."""
    notes = []
    for part in sorted(Path(directory).glob(f"{files.PREFIX}*{PART}")):
        final = part.with_name(part.name[:-len(PART)])
        if final.suffix == files.EXTENSIONS["csv"]:
            rows = _cut_after_last_line(part)
            if rows <= 0:
                part.unlink()
                notes.append(f"removed {part}, left by a crash with no complete reading in it")
                continue
            os.replace(part, final)
            notes.append(f"closed {final}, left by a crash: {rows} complete lines kept")
        else:
            os.replace(part, part.with_name(final.name + BROKEN))
            notes.append(f"{part} was left by a crash and cannot be read (Parquet writes its footer last): renamed "
                         f"it {final.name + BROKEN}; delete it")
    if notes:
        fsync_directory(str(directory))
    return notes


def _cut_after_last_line(path: Path) -> int:
    """Truncate `path` after its last b"\\n"; how many lines after the header it keeps (-1: not even
    the header is complete)."""
    with open(path, "r+b") as fh:
        end = fh.seek(0, os.SEEK_END)
        pos = end
        while pos > 0:                          # backwards in blocks: a file may be large, a line is not
            start = max(0, pos - 65_536)
            fh.seek(start)
            block = fh.read(pos - start)
            i = block.rfind(b"\n")
            if i >= 0:
                keep = start + i + 1
                break
            pos = start
        else:
            keep = 0
        fh.truncate(keep)
        fh.flush()
        os.fsync(fh.fileno())
        fh.seek(0)
        lines = sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))
    return lines - 1
