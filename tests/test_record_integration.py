"""`edgelstm record` as a real subprocess: from a real Mosquitto (stopped by SIGTERM, restarted,
nothing lost or doubled) and from a pseudo-terminal fed by the simulated sensor board."""

import json
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
import uuid

import numpy as np
import pytest
from daemon_helpers import _STARTED, ROOT, Publisher, poll, readings
from pyarrow_marks import FORMATS

import edgelstm.recording
from edgelstm.protocol.payload import encode_binary
from edgelstm.simulate import SimulatedDevice

pytestmark = pytest.mark.integration
WRITTEN = re.compile(r"\| ([\d,]+) written \|")


class RecordProcess:
    """edgelstm record -o DIR --inputs 3 ARGS, its log (stdout and stderr) in LOG."""

    def __init__(self, out, log, *args, stderr=None):
        self.log = log
        self.fh = open(log, "ab")
        self.start_at = self.fh.tell()
        self.proc = subprocess.Popen([sys.executable, "-m", "edgelstm", "record", "-o", str(out), "--inputs", "3",
                                      "--log-every-s", "0.1", *args],
                                     stdout=self.fh, stderr=stderr or subprocess.STDOUT, cwd=ROOT,
                                     env=dict(os.environ, PYTHONUNBUFFERED="1"))
        _STARTED.append(self.proc)                  # killed after the test if it fails before stopping it

    def text(self) -> str:
        return self.log.read_bytes()[self.start_at:].decode(errors="replace")

    def wait_for(self, text: str, timeout: float = 60) -> None:
        assert poll(lambda: text in self.text() or self.proc.poll() is not None, timeout) and text in self.text(), \
            f"no {text!r} in the recorder's log:\n{self.text()[-3000:]}"

    def written(self) -> int:
        counts = WRITTEN.findall(self.text())
        return int(counts[-1].replace(",", "")) if counts else 0

    def wait_written(self, n: int, timeout: float = 60) -> None:
        assert poll(lambda: self.written() >= n, timeout), f"{self.written()} of {n} written:\n{self.text()[-3000:]}"

    def terminate(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=30)
        self.fh.close()
        return rc


def reading_json(seq: int, x, label: str) -> bytes:
    return json.dumps({"seq": seq, "t": 1.8e9 + seq / 50, "x": x.tolist(), "label": label}).encode()


def assert_recorded_once_in_order(out, xs: dict, labelled: bool = True):
    got = edgelstm.recording.read(out)
    assert sorted(got) == sorted(xs)
    for stream, x in xs.items():
        rec = got[stream]
        np.testing.assert_array_equal(rec.seq, np.arange(len(x)), err_msg=f"stream {stream}")
        np.testing.assert_array_equal(rec.x, x)
        if labelled:
            assert list(rec.labels) == ["" if seq % 5 == 0 else f"c{seq % 3}" for seq in range(len(x))]
    assert not list(out.glob("*.part")), "a file was left unclosed"


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_mqtt_reading_recorded_once_in_order_rejections_counted(tmp_path, broker, fmt):
    out = tmp_path / "rec"
    recorder = RecordProcess(out, tmp_path / "record.log", "--mqtt", broker.url, "--in", "sensors/+/reading",
                             "--client-id", f"rec-{uuid.uuid4().hex[:8]}", "--rotate-mb", "0.01", "--format", fmt)
    recorder.wait_for("mqtt: subscribed")
    xs = readings(3, 200, seed=3)
    publisher = Publisher(broker.port)
    for seq in range(200):
        for stream, x in xs.items():                # every 5th binary (no label), the others JSON with one
            data = encode_binary(seq, x[seq], 1.8e9) if seq % 5 == 0 else reading_json(seq, x[seq], f"c{seq % 3}")
            publisher.send(f"sensors/{stream}/reading", data)
        if seq == 100:
            publisher.send("sensors/s00/reading", b"{not json")
            publisher.send("sensors/s01/reading", b'{"seq": 5, "x": [1.0]}')
            publisher.send("sensors/s02/reading", b'{"seq": 5, "x": [1, 2, 3], "label": {"no": 1}}')
    assert publisher.wait_all(30)
    publisher.stop()
    recorder.wait_written(600)
    assert recorder.terminate() == 0
    assert "recorded 600 readings of 3 streams" in recorder.text()
    assert "duplicates 0, rejected: json 1, label 1, length 1" in recorder.text()
    assert len(edgelstm.recording.recording_files(out)) > 1          # rotated by size
    assert_recorded_once_in_order(out, xs)


def test_sigterm_mid_stream_then_restart_loses_and_doubles_nothing(tmp_path, broker):
    out, client_id = tmp_path / "rec", f"rec-{uuid.uuid4().hex[:8]}"
    args = ("--mqtt", broker.url, "--client-id", client_id)
    first = RecordProcess(out, tmp_path / "record.log", *args)
    first.wait_for("mqtt: subscribed")
    xs = readings(3, 400, seed=4)
    publisher = Publisher(broker.port)

    def publish():
        for seq in range(400):
            for stream, x in xs.items():
                data = encode_binary(seq, x[seq], 1.8e9) if seq % 5 == 0 else reading_json(seq, x[seq],
                                                                                           f"c{seq % 3}")
                publisher.send(f"sensors/{stream}/reading", data)
            time.sleep(0.004)                   # ~750 readings/s: the recorder is stopped mid-stream

    sender = threading.Thread(target=publish)
    sender.start()
    first.wait_written(300)
    assert first.terminate() == 0                # the broker keeps the rest for the session
    recorded_first = int(re.search(r"recorded (\d+) readings", first.text()).group(1))
    assert 300 <= recorded_first < 1200
    second = RecordProcess(out, tmp_path / "record.log", *args)
    sender.join(60)
    assert publisher.wait_all(30)
    publisher.stop()
    second.wait_written(1200 - recorded_first)
    assert second.terminate() == 0
    assert "duplicates 0" in second.text()
    assert_recorded_once_in_order(out, xs)


def make_pty(link):
    """A pty whose slave is reachable as `link`; the master stays blocking, as the simulator expects."""
    master, slave = os.openpty()
    os.symlink(os.ttyname(slave), link)
    return master, slave


def test_serial_frames_from_the_simulated_board_recorded_with_its_boot(tmp_path):
    link = str(tmp_path / "ttyUSB-board")
    master, slave = make_pty(link)
    out = tmp_path / "rec"
    recorder = RecordProcess(out, tmp_path / "record.log", "--serial", link, "--baud", "115200",
                             "--serial-mode", "frames")
    try:
        recorder.wait_for(f"serial {link}: open")
        xs = [readings(1, 300, seed=10 + i)["s00"] for i in range(3)]
        device = SimulatedDevice(master, xs, rate_hz=1000, boot_id=77).start()
        device.thread.join(30)
        recorder.wait_written(900)
        assert recorder.terminate() == 0
    finally:
        os.close(master)
        os.close(slave)
    got = edgelstm.recording.read(out)
    assert list(got) == ["0", "1", "2"]
    for i, stream in enumerate(got):
        rec = got[stream]
        np.testing.assert_array_equal(rec.seq, np.arange(300))
        np.testing.assert_array_equal(rec.x, xs[i])
        assert set(rec.boot) == {77} and rec.labels is None      # the boot id of the board's HELLO


def test_status_line_is_redrawn_in_place_on_a_terminal(tmp_path):
    link = str(tmp_path / "ttyUSB-quiet")
    board_master, board_slave = make_pty(link)
    term_master, term_slave = os.openpty()
    recorder = RecordProcess(tmp_path / "rec", tmp_path / "record.log", "--serial", link, stderr=term_slave)
    seen = b""
    try:
        deadline = time.time() + 60
        while seen.count(b"\r\x1b[Krecording") < 2 and time.time() < deadline and recorder.proc.poll() is None:
            if select.select([term_master], [], [], 0.2)[0]:
                seen += os.read(term_master, 65536)
        assert seen.count(b"\r\x1b[Krecording") >= 2, seen[-2000:]
        assert b"readings/s | 0 streams | 0 written | rejected 0 | duplicates 0 | no file open" in seen
        assert recorder.terminate() == 0
    finally:
        for fd in (board_master, board_slave, term_master, term_slave):
            os.close(fd)


def test_sigkill_mid_stream_then_restart_closes_the_part_file_and_loses_and_doubles_nothing(tmp_path, broker):
    out, client_id = tmp_path / "rec", f"rec-{uuid.uuid4().hex[:8]}"
    args = ("--mqtt", broker.url, "--client-id", client_id)
    first = RecordProcess(out, tmp_path / "record.log", *args)
    first.wait_for("mqtt: subscribed")
    xs = readings(3, 400, seed=5)
    publisher = Publisher(broker.port)

    def publish():
        for seq in range(400):
            for stream, x in xs.items():
                publisher.send(f"sensors/{stream}/reading", reading_json(seq, x[seq], f"c{seq % 3}"))
            time.sleep(0.004)

    sender = threading.Thread(target=publish)
    sender.start()
    first.wait_written(300)
    first.proc.send_signal(signal.SIGKILL)           # a crash: the .part file stays, unacked readings too
    first.proc.wait(timeout=30)
    first.fh.close()
    assert len(list(out.glob("*.csv.part"))) == 1
    second = RecordProcess(out, tmp_path / "record.log", *args)
    second.wait_for("left by a crash")
    sender.join(60)
    assert publisher.wait_all(30)
    publisher.stop()
    # what the first one wrote is in the recovered file; the second writes the rest, however many that is
    assert poll(lambda: sum(len(r) for r in _closed_and_open(out)) >= 1200, 60), second.text()[-3000:]
    assert second.terminate() == 0
    got = edgelstm.recording.read(out)
    for stream, x in xs.items():
        np.testing.assert_array_equal(got[stream].seq, np.arange(400), err_msg=f"stream {stream}")
        np.testing.assert_array_equal(got[stream].x, x)
        assert list(got[stream].labels) == [f"c{seq % 3}" for seq in range(400)]
    assert not list(out.glob("*.part"))


def _closed_and_open(out):
    """Rows in the closed files and in the CSV .part being written (complete lines only), per file."""
    rows = []
    for p in sorted(out.glob("readings-*")):
        lines = p.read_bytes().split(b"\n")[1:-1]          # no header, no unfinished line
        rows.append(lines)
    return rows


# -- the command line --------------------------------------------------------------------------------------

def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "edgelstm", "record", *args], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)


def test_record_cli_refuses_with_one_line_saying_what_to_do(tmp_path):
    out = run_cli("-o", str(tmp_path), "--inputs", "3")
    assert out.returncode == 1 and "no input: pass --mqtt URL (with --in TOPIC) or --serial PORT" in out.stderr
    out = run_cli("-o", str(tmp_path), "--inputs", "3", "--mqtt", "mqtt://localhost:1883", "--in", "sensors/#")
    assert out.returncode == 1 and "must not use '#'" in out.stderr
    out = run_cli("-o", str(tmp_path), "--serial", "/dev/null")
    assert out.returncode == 2 and "one of the arguments --inputs --model is required" in out.stderr
