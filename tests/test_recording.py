"""Recordings (edgelstm/recording/): the writer and the reader on real files, the recorder's
commit-then-ack logic with fake links, and the JSON payload's "label"."""

import csv
import io
import json
import os
import re
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from pyarrow_marks import FORMATS, HAVE_PYARROW, needs_pyarrow

from edgelstm.daemon.config import DaemonConfig
from edgelstm.daemon.messages import HelloMsg, Origin, ReadingMsg, RejectedMsg
from edgelstm.errors import PayloadError, RecordingError
from edgelstm.protocol import payload
from edgelstm.recording import NO_BOOT, RecordingWriter, Row, read, recording_files
from edgelstm.recording.files import MAX_LINE_BYTES
from edgelstm.recording.recorder import RecordConfig, Recorder
from edgelstm.recording.writer import DirectoryLock, recover_leftovers

NAME = re.compile(r"^readings-\d{8}T\d{6}Z-\d{4}\.(csv|parquet)$")


class Clock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def sample_rows(n: int = 60, n_inputs: int = 3, seed: int = 0) -> list[Row]:
    """Rows of three streams, ids that need CSV quoting among them, some with boot and label."""
    rng = np.random.default_rng(seed)
    streams = ["wrist,1", 'say "hi"', "ünïcode-3"]
    x = rng.normal(0, 1, (n, n_inputs)).astype(np.float32)
    if n > 9:
        x[5, 0], x[7, 1], x[9, 2] = np.nan, np.inf, np.float32(3.4028235e38)
    return [Row(streams[i % 3], i // 3, 1.7e9 + i / 50, None if i % 4 == 0 else 7 + i % 2, x[i],
                None if i % 3 == 2 else ("walking, fast" if i % 2 else "0")) for i in range(n)]


def assert_matches(got: dict, rows: list[Row]):
    assert list(got) == list(dict.fromkeys(r.stream for r in rows))
    for stream, rec in got.items():
        mine = [r for r in rows if r.stream == stream]
        np.testing.assert_array_equal(rec.seq, [r.seq for r in mine])
        np.testing.assert_array_equal(rec.t, [r.t for r in mine])
        np.testing.assert_array_equal(rec.boot, [NO_BOOT if r.boot is None else r.boot for r in mine])
        assert rec.x.dtype == np.float32 and rec.x.shape == (len(mine), rows[0].x.shape[0])
        np.testing.assert_array_equal(rec.x, np.stack([r.x for r in mine]))      # bit-exact, NaN in place
        if all(r.label is None for r in mine):
            assert rec.labels is None
        else:
            assert list(rec.labels) == [r.label or "" for r in mine]


def write_all(directory, rows, fmt="csv", **options) -> RecordingWriter:
    w = RecordingWriter(directory, rows[0].x.shape[0], fmt, **options)
    w.write(rows)
    w.close()
    return w


# -- round trips ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_is_exact(tmp_path, fmt):
    rows = sample_rows()
    w = write_all(tmp_path, rows, fmt)
    assert w.files_closed == 1 and w.rows_written == w.rows_committed == len(rows)
    (path,) = tmp_path.glob("readings-*")
    assert NAME.match(path.name), path.name
    assert_matches(read(tmp_path), rows)
    assert_matches(read(path), rows)                    # a file, or its directory


def test_csv_is_plain_csv_with_a_header(tmp_path):
    rows = sample_rows(6)
    write_all(tmp_path, rows)
    (path,) = tmp_path.glob("*.csv")
    table = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))
    assert table[0] == ["stream", "seq", "t", "boot", "x0", "x1", "x2", "label"]
    assert table[1][:4] == ["wrist,1", "0", repr(1.7e9), ""]
    assert table[2][3] == "8" and table[2][-1] == "walking, fast"
    assert table[1][4:7] == [str(v) for v in rows[0].x]             # float32's shortest text, e.g. 0.12573022
    np.testing.assert_array_equal(np.array(table[1][4:7], np.float32), rows[0].x)


@needs_pyarrow
def test_csv_and_parquet_files_of_one_directory_are_read_in_name_order(tmp_path):
    rows = sample_rows(90)
    wall = Clock(1_800_000_000.0)
    for i, fmt in enumerate(["csv", "parquet", "csv"]):
        write_all(tmp_path, rows[30 * i:30 * (i + 1)], fmt, wall_clock=wall)   # the same second each time
    names = [p.name for p in recording_files(tmp_path)]
    assert names == ["readings-20270115T080000Z-0001.csv", "readings-20270115T080000Z-0002.parquet",
                     "readings-20270115T080000Z-0003.csv"]
    assert_matches(read(tmp_path), rows)


def test_a_stream_without_labels_reads_labels_none(tmp_path):
    rows = [Row("a", i, float(i), None, np.full(2, i, np.float32)) for i in range(5)]
    write_all(tmp_path, rows)
    rec = read(tmp_path)["a"]
    assert rec.labels is None and len(rec) == 5


# -- files: names, rotation, .part ------------------------------------------------------------------------

def test_rotation_by_size_keeps_every_row_in_order(tmp_path):
    rows = sample_rows(300)
    w = write_all(tmp_path, rows, rotate_bytes=2_000)
    paths = recording_files(tmp_path)
    assert len(paths) == w.files_closed > 5
    assert [p.name for p in paths] == sorted(p.name for p in paths)
    longest_row = max(len(line) for p in paths for line in p.read_bytes().splitlines(keepends=True))
    assert all(p.stat().st_size < 2_000 + longest_row for p in paths)
    assert_matches(read(tmp_path), rows)


@pytest.mark.parametrize("fmt", FORMATS)
def test_rotation_by_time_and_part_files_are_renamed_when_closed(tmp_path, fmt):
    clock, wall = Clock(), Clock(1_800_000_000.0)
    rows = sample_rows(9)
    w = RecordingWriter(tmp_path, 3, fmt, rotate_s=60, clock=clock, wall_clock=wall)
    w.write(rows[:3])
    w.flush()
    (part,) = tmp_path.iterdir()
    assert part.name == f"readings-20270115T080000Z-0001.{fmt}.part" and w.current == part
    with pytest.raises(RecordingError, match="no recording files"):
        read(tmp_path)                                  # a reader never sees the file being written
    with pytest.raises(RecordingError, match="still being written"):
        read(part)
    assert w.rows_committed == (3 if fmt == "csv" else 0)     # Parquet: committed when the file closes
    clock.t += 59
    w.tick()
    assert w.current == part
    clock.t += 1
    wall.t += 60
    w.tick()                                            # its time is up: closed without a new row
    assert w.current is None and w.rows_committed == 3
    assert [p.name for p in tmp_path.iterdir()] == [f"readings-20270115T080000Z-0001.{fmt}"]
    w.write(rows[3:])
    w.close()
    assert [p.name for p in recording_files(tmp_path)] == [f"readings-20270115T080000Z-0001.{fmt}",
                                                           f"readings-20270115T080100Z-0001.{fmt}"]
    assert_matches(read(tmp_path), rows)


def test_no_file_without_rows(tmp_path):
    w = RecordingWriter(tmp_path, 3, rotate_s=1, clock=Clock())
    w.flush()
    w.tick()
    w.close()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(HAVE_PYARROW, reason="pyarrow is installed: its absence cannot be tested here")
def test_parquet_without_pyarrow_says_how_to_get_it(tmp_path):
    with pytest.raises(RecordingError, match=r"pip install 'edgelstm\[record\]'"):
        RecordingWriter(tmp_path, 3, "parquet")


# -- malformed files -------------------------------------------------------------------------------------

HEADER = b"stream,seq,t,boot,x0,x1,label\n"


@pytest.mark.parametrize("body, message", [
    (b"", "is empty"),
    (b"a,b,c\n", "line 1: not a recording's columns"),
    (HEADER + b"s,1,2.0,,0.5,0.25,\ns,2,3.0,,0.5\n", "line 3: 5 fields, the header has 7"),
    (HEADER + b"s,x,2.0,,0.5,0.25,\n", "line 2: seq 'x' is not an integer"),
    (HEADER + b"s,4294967296,2.0,,0.5,0.25,\n", "line 2: seq '4294967296' is not an integer in"),
    (HEADER + b"s,1,2.0,-3,0.5,0.25,\n", "line 2: boot '-3'"),
    (HEADER + b"s,1,2.0,,0.5,oops,\n", "line 2: x1 is not a number"),
    (HEADER + b"s,1,noon,,0.5,0.25,\n", "line 2: t is not a number"),
    (HEADER + b",1,2.0,,0.5,0.25,\n", "line 2: empty stream id"),
    (HEADER + b"s,1,2.0,,0.5,0.25,\ns,2,3.0,,0.5,0.2", "line 3: the last line is cut off"),
    (HEADER + b"s,1,2.0,,0.5,0.25,\xff\n", "line 2: not UTF-8"),
    (HEADER + b'"s,1,2.0,,0.5,0.25,\n', "line 2: not CSV"),
])
def test_a_malformed_csv_names_its_file_and_line(tmp_path, body, message):
    path = tmp_path / "readings-bad.csv"
    path.write_bytes(body)
    with pytest.raises(RecordingError, match=re.escape(f"{path}") + ".*" + re.escape(message)):
        read(path)


def test_a_hostile_huge_line_is_refused_without_holding_it(tmp_path):
    path = tmp_path / "huge.csv"
    with open(path, "wb") as fh:
        fh.write(HEADER + b"s,1,2.0,,0.5,0.25,\n")
        for _ in range(32):
            fh.write(b"9" * (1 << 20))                  # a 32 MiB line, no end of line
    tracemalloc.start()
    try:
        with pytest.raises(RecordingError, match=r"line 3: a line longer than 1,048,576 bytes"):
            read(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * MAX_LINE_BYTES, f"peak {peak:,} bytes"


def test_files_of_different_input_counts_are_refused(tmp_path):
    write_all(tmp_path, [Row("a", 0, 1.0, None, np.zeros(2, np.float32))], wall_clock=Clock(1e9))
    write_all(tmp_path, [Row("a", 1, 2.0, None, np.zeros(3, np.float32))], wall_clock=Clock(2e9))
    with pytest.raises(RecordingError, match="readings of 3 values.*of 2: one recording has one input count"):
        read(tmp_path)


def test_paths_that_are_no_recording(tmp_path):
    with pytest.raises(RecordingError, match="does not exist"):
        read(tmp_path / "nowhere")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(RecordingError, match="is not a recording"):
        read(tmp_path / "notes.txt")
    with pytest.raises(RecordingError, match="no recording files"):
        read(tmp_path)


@needs_pyarrow
def test_a_cut_off_parquet_file_is_refused_with_its_name(tmp_path):
    write_all(tmp_path, sample_rows(), "parquet")
    (path,) = tmp_path.glob("*.parquet")
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(RecordingError, match=re.escape(str(path)) + " is not a readable Parquet file"):
        read(path)


@needs_pyarrow
def test_a_parquet_file_with_other_columns_is_refused(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    path = tmp_path / "other.parquet"
    pq.write_table(pa.table({"a": [1, 2]}), path)
    with pytest.raises(RecordingError, match="not a recording's columns"):
        read(path)


# -- the directory: a crash's leftovers, one recorder at a time -------------------------------------------

def test_a_crash_leftover_csv_is_cut_after_its_last_line_and_closed(tmp_path):
    rows = sample_rows(12)
    w = RecordingWriter(tmp_path, 3)
    w.write(rows)
    w.flush()
    part = w.current
    with open(part, "ab") as fh:
        fh.write(b"wrist,1,99,17")                      # the crash cut this line short
    (tmp_path / "readings-20270101T000000Z-0001.csv.part").write_bytes(b"stream,seq,t")   # not even a header
    notes = recover_leftovers(tmp_path)
    assert len(notes) == 2 and "12 complete lines kept" in " ".join(notes)
    assert [p.name for p in tmp_path.iterdir()] == [part.name[:-len(".part")]]
    assert_matches(read(tmp_path), rows)


@needs_pyarrow
def test_a_crash_leftover_parquet_is_set_aside(tmp_path):
    w = RecordingWriter(tmp_path, 3, "parquet")
    w.write(sample_rows())
    part = w.current
    (note,) = recover_leftovers(tmp_path)
    assert "cannot be read" in note
    assert [p.name for p in tmp_path.iterdir()] == [part.name[:-len(".part")] + ".broken"]


def test_one_recorder_per_directory(tmp_path):
    lock = DirectoryLock(tmp_path)
    with pytest.raises(RecordingError, match=f"being recorded into by another edgelstm record \\(pid {os.getpid()}\\): "
                       "give each recorder its own -o DIR"):
        DirectoryLock(tmp_path)                         # a second open file: its flock conflicts, as another process's
    lock.release()
    DirectoryLock(tmp_path).release()


# -- the recorder's logic, with fake links -------------------------------------------------------------

class FakeLink:
    name = "fake"

    def __init__(self):
        self.acked = []

    def ack(self, origin):
        self.acked.append(origin.ack_id)


def recorder(tmp_path, fmt="csv", receive_maximum=None) -> Recorder:
    links = DaemonConfig()
    if receive_maximum:
        from edgelstm.daemon.config import MqttConfig
        links = DaemonConfig(mqtt=MqttConfig(receive_maximum=receive_maximum))
    return Recorder(RecordConfig(links, 3, str(tmp_path), fmt))


def mqtt_reading(link, stream, seq, ack_id, boot=None, label=None):
    return ReadingMsg(stream, payload.Reading(seq, np.full(3, seq, np.float32), 1.0 + seq, boot, label),
                      Origin(link, ack_id, None, False, 5.0))


def test_acks_wait_for_the_rows_and_go_in_arrival_order(tmp_path):
    link = FakeLink()
    rec = recorder(tmp_path)
    rec.record([mqtt_reading(link, "a", 0, 1), RejectedMsg("json", Origin(link, 2, None, False, 5.0)),
                mqtt_reading(link, "b", 0, 3, label="run")])
    assert link.acked == []                             # written, not yet flushed
    rec.commit()
    assert link.acked == [1, 2, 3]
    rec.record([mqtt_reading(link, "a", 0, 4), mqtt_reading(link, "a", 1, 5)])     # a redelivery, then new
    rec.commit()
    assert link.acked == [1, 2, 3, 4, 5]
    assert (rec.readings, rec.duplicates, dict(rec.bad_payloads)) == (4, 1, {"json": 1})
    rec.writer.close()
    got = read(tmp_path)
    assert list(got["a"].seq) == [0, 1] and list(got["b"].labels) == ["run"]
    status = rec.status(10.0)
    assert "3 written" in status.line() and "2 streams" in status.line() and "rejected 1" in status.line()


def test_a_new_boot_is_no_duplicate_and_serial_readings_are_never_deduplicated(tmp_path):
    link = FakeLink()
    rec = recorder(tmp_path)
    serial = Origin(link, None, 0, True, 5.0)
    msgs = [mqtt_reading(link, "a", 0, 1, boot=1), mqtt_reading(link, "a", 0, 2, boot=2),
            HelloMsg("b", payload.Hello(9, 1, 3), serial),
            ReadingMsg("b", payload.Reading(0, np.zeros(3, np.float32)), serial),
            ReadingMsg("b", payload.Reading(0, np.zeros(3, np.float32)), serial)]    # a board rebooted, no HELLO
    rec.record(msgs)
    rec.commit()
    rec.writer.close()
    assert rec.duplicates == 0 and link.acked == [1, 2]
    got = read(tmp_path)
    assert list(got["a"].boot) == [1, 2] and list(got["b"].boot) == [9, 9]
    assert list(got["b"].t) == [5.0, 5.0]               # no sender time: the time of receipt


def test_after_a_crash_the_last_rows_are_remembered_so_a_redelivery_is_not_written_again(tmp_path):
    from edgelstm.daemon.config import MqttConfig
    write_all(tmp_path, [Row("a", seq, 1.0, 3 if seq % 2 else None, np.zeros(3, np.float32)) for seq in range(10)])
    links = DaemonConfig(mqtt=MqttConfig(url="mqtt://127.0.0.1:1", receive_maximum=4))
    rec = Recorder(RecordConfig(links, 3, str(tmp_path)))            # never connects: only its memory is used
    rec._remember_last_rows(tmp_path)
    link = FakeLink()
    rec.record([mqtt_reading(link, "a", seq, seq, boot=3 if seq % 2 else None) for seq in (6, 7, 8, 9, 5)])
    assert rec.duplicates == 4 and rec.writer.rows_written == 1     # the last 4 were remembered, seq 5 was not
    rec.writer.close()


@needs_pyarrow
def test_parquet_holds_acks_until_its_file_closes(tmp_path):
    link = FakeLink()
    rec = recorder(tmp_path, "parquet", receive_maximum=8)
    rec.record([mqtt_reading(link, "a", i, i) for i in range(3)])
    rec.commit()
    assert link.acked == []                             # a Parquet file is unreadable before its footer
    rec.record([mqtt_reading(link, "a", i, i) for i in range(3, 4)])
    rec.commit()                                        # 4 held = half the receive maximum: the file closes
    assert link.acked == [0, 1, 2, 3]
    assert len(recording_files(tmp_path)) == 1


# -- the JSON payload's label ----------------------------------------------------------------------------

@pytest.mark.parametrize("label, recorded", [("walking", "walking"), (2, "2"), (None, None), ("", None),
                                              ("é" * 32, "é" * 32)])
def test_json_payloads_may_carry_a_label(label, recorded):
    reading = payload.decode_mqtt(json.dumps({"seq": 1, "x": [0, 1, 2], "label": label}).encode(), 3)
    assert reading.label == recorded
    stream, reading = payload.decode_line(json.dumps({"stream": "s", "seq": 1, "x": [0, 1, 2],
                                                      "label": label}).encode(), 3)
    assert reading.label == recorded


@pytest.mark.parametrize("label", [True, 1.5, [1], {"a": 1}, "x" * 65, "a\nb", "tab\there", 2**70, "\ud800"])
def test_a_bad_label_is_rejected_as_label(label):
    with pytest.raises(PayloadError) as exc:
        payload.decode_json(json.dumps({"seq": 1, "x": [0, 1, 2], "label": label}).encode(), 3)
    assert exc.value.reason == "label"


def test_binary_and_csv_readings_have_no_label():
    assert payload.decode_mqtt(payload.encode_binary(3, [1, 2, 3]), 3).label is None
    assert payload.decode_line(b"s,3,1,2,3", 3)[1].label is None


# -- training from a recording (training/train_activity.py --recording) ------------------------------------

@pytest.mark.slow
@pytest.mark.torch
def test_the_training_script_trains_from_a_recording(tmp_path):
    import edgelstm
    from edgelstm.simulate import ACTIVITIES, accelerometer
    (tmp_path / "rec").mkdir()
    w = RecordingWriter(tmp_path / "rec", 3, rotate_bytes=100_000)
    signals = [accelerometer(1500, seed=50 + s) for s in range(2)]
    for seq in range(1500):                             # two labelled wrists, interleaved as recorded
        w.write([Row(f"wrist{s}", seq, seq / 50, None, x[seq], None if seq % 7 == 0 else ACTIVITIES[y[seq]])
                 for s, (x, y) in enumerate(signals)])
    w.write([Row("unlabelled", seq, seq / 50, None, np.zeros(3, np.float32)) for seq in range(50)])
    w.close()
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, str(root / "training" / "train_activity.py"), "--recording",
                          str(tmp_path / "rec"), "--iterations", "20", "--out", str(tmp_path / "model")],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path,
                         env=dict(os.environ, PYTHONPATH=str(root)))
    assert out.returncode == 0, out.stderr[-3000:]
    assert "training on 2,400 readings of 2 streams" in out.stdout
    assert "stream unlabelled: 50 readings without labels, not used" in out.stdout
    assert "held-out streaming accuracy" in out.stdout
    model = edgelstm.load(tmp_path / "model" / "activity.elstm")
    assert (model.input_size, model.output_size) == (3, 3)
    assert model.spec.source["classes"] == list(ACTIVITIES)
