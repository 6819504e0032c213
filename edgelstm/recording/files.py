"""What a recording looks like on disk, shared by the writer and the reader.

A recording is a directory of files named by the UTC time of their first row, so that sorting
the names sorts the files by time:

    readings-20261201T153000Z-0001.csv          closed: complete, never written again
    readings-20261201T153000Z-0002.csv.part     being written (or left by a crash)

One row per reading, in the order the readings were taken in; the columns, CSV header and
Parquet schema alike:

    stream  seq  t  boot  x0 ... x{n-1}  label

  stream  the stream id (MQTT topic level, or serial prefix + board stream number)
  seq     the sender's sequence number, u32
  t       the sender's unix time in seconds when it sent one, else the time of receipt
  boot    the sender's boot id (JSON/binary "boot", or the board's last HELLO frame); empty if none
  x0..    the reading's values, float32 (written in their shortest exact form)
  label   the JSON payload's optional "label"; empty if none
"""

from __future__ import annotations

import time
from typing import NamedTuple

import numpy as np

from ..errors import RecordingError

PREFIX = "readings-"
PART = ".part"
EXTENSIONS = {"csv": ".csv", "parquet": ".parquet"}
HEAD = ("stream", "seq", "t", "boot")           # the columns before x0..x{n-1}
LABEL = "label"                                 # the last column
# The longest CSV line the reader takes: a reading of 16,384 values of 16 characters with the
# longest stream id and label fits, and a hostile file cannot make it hold a line of gigabytes.
MAX_LINE_BYTES = 1 << 20
PARQUET_MARK = {b"edgelstm": b"recording 1"}    # Parquet key-value metadata of every file written


class Row(NamedTuple):
    stream: str
    seq: int                    # u32
    t: float                    # unix seconds: the sender's, else the time of receipt
    boot: int | None
    x: np.ndarray               # float32 (n_inputs,)
    label: str | None = None


def columns(n_inputs: int) -> list[str]:
    return [*HEAD, *x_columns(n_inputs), LABEL]


def x_columns(n_inputs: int) -> list[str]:
    return [f"x{i}" for i in range(n_inputs)]


def file_name(wall_time: float, number: int, fmt: str) -> str:
    """readings-YYYYmmddTHHMMSSZ-NNNN.EXT for a file whose first row came at `wall_time` (UTC)."""
    return f"{PREFIX}{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(wall_time))}-{number:04d}{EXTENSIONS[fmt]}"


def pyarrow_modules():
    """(pyarrow, pyarrow.parquet), or RecordingError saying how to get them."""
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise RecordingError("Parquet recordings need pyarrow: pip install 'edgelstm[record]' (or record CSV, "
                             "the default)") from None
    return pyarrow, pyarrow.parquet


def parquet_schema(n_inputs: int):
    pa, _ = pyarrow_modules()
    fields = [pa.field("stream", pa.string(), nullable=False), pa.field("seq", pa.uint32(), nullable=False),
              pa.field("t", pa.float64()), pa.field("boot", pa.uint32())]
    fields += [pa.field(name, pa.float32(), nullable=False) for name in x_columns(n_inputs)]
    fields.append(pa.field(LABEL, pa.string()))
    return pa.schema(fields, metadata=PARQUET_MARK)
