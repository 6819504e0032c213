"""The daemon's serial path on real pseudo-terminals, and MQTT output with the broker away."""

import gc
import os
import random
import resource
import threading
import time

import numpy as np
import pytest
from broker import free_port
from daemon_helpers import MODEL, offline, readings

from edgelstm.daemon.config import DaemonConfig, MqttConfig, PolicyConfig, SerialConfig
from edgelstm.daemon.service import Daemon
from edgelstm.protocol import frame
from edgelstm.protocol.payload import reading_frame

pytestmark = pytest.mark.integration


class Recorder:
    def __init__(self):
        self.got, self.times, self.lock = {}, {}, threading.Lock()

    def __call__(self, stream, seq, t_in, y, replay):
        with self.lock:
            self.got[(stream, seq)] = y.copy()
            self.times[(stream, seq)] = time.monotonic()

    def has(self, key) -> bool:
        """Whether the prediction for (stream, seq) came (the daemon's thread adds to got meanwhile)."""
        with self.lock:
            return key in self.got


class Pty:
    """A pty whose slave is reachable through `link`, re-pointed on each replug (like udev's
    /dev/serial/by-id symlinks)."""

    def __init__(self, link):
        self.master, self.slave = os.openpty()
        tmp = f"{link}.new"
        os.symlink(os.ttyname(self.slave), tmp)
        os.replace(tmp, link)

    def unplug(self):
        os.close(self.master)
        os.close(self.slave)


def start_daemon(cfg, sink=None):
    d = Daemon(cfg.validate(), sink=sink)
    t = threading.Thread(target=d.run, daemon=True)
    t.start()
    deadline = time.time() + 30
    while d.serial is None and time.time() < deadline:
        time.sleep(0.01)
    return d, t


def open_fds() -> dict[int, str]:
    """fd -> what it points at, for this process."""
    out = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            out[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:                            # the listing's own fd, closed already
            pass
    return out


def terminal_fds(fds: dict[int, str]) -> set[str]:
    """The fds a serial link could leak: pseudo-terminals (and real ttys)."""
    terminals = ("/dev/pts/", "/dev/ptmx", "/dev/tty")
    return {f"{fd}->{target}" for fd, target in fds.items() if target.startswith(terminals)}


def test_unplug_mid_frame_20_times_resumes_fast_loses_and_corrupts_nothing(tmp_path):
    xs = readings(3, 420, seed=5)
    expected, _ = offline(xs)
    link = str(tmp_path / "ttyUSB-sensor")
    gc.collect()                 # objects left by earlier tests close their fds now, not mid-test
    fds_before, threads_before = open_fds(), threading.active_count()
    pty = Pty(link)
    rec = Recorder()
    cfg = DaemonConfig(model=str(MODEL), serial=SerialConfig(port=link, reconnect_min_s=0.05, reconnect_max_s=0.2),
                       policy=PolicyConfig(stream_ttl_s=0), output="stdout", log_every_s=3600)
    daemon, runner = start_daemon(cfg, rec)
    rng = random.Random(0)
    wire = {seq: b"".join(frame.encode(reading_frame(i, seq, xs[sid][seq], seq * 20))
                          for i, sid in enumerate(sorted(xs))) for seq in range(420)}
    resume_times = []
    seq = 0
    plugged_at = time.monotonic()
    for cycle in range(21):
        src = daemon.serial
        deadline = time.monotonic() + 5             # the reader noticed the unplug and reopened the port
        while (src.reconnects < cycle or not src.connected.is_set()) and time.monotonic() < deadline:
            time.sleep(0.002)
        assert src.connected.is_set() and src.reconnects == cycle, f"cycle {cycle}: port not reopened"
        first_seq = seq
        last = min(seq + 20, 420) if cycle < 20 else 420
        data = b"".join(wire[s] for s in range(seq, last))
        i = 0
        while i < len(data):                       # arbitrary chunking of a valid byte stream
            n = rng.choice([1, 3, 17, 64, 300])
            os.write(pty.master, data[i:i + n])
            i += n
        seq = last
        deadline = time.monotonic() + 5
        while not rec.has((str(0), seq - 1)) and time.monotonic() < deadline:
            time.sleep(0.005)
        resume_times.append(rec.times.get(("0", first_seq), 99) - plugged_at)
        if cycle < 20:
            os.write(pty.master, wire[seq][: len(wire[seq]) // 2])     # unplugged mid-frame
            time.sleep(0.05)
            pty.unplug()
            pty = Pty(link)
            plugged_at = time.monotonic()
    deadline = time.monotonic() + 5
    while len(rec.got) < 3 * 420 and time.monotonic() < deadline:
        time.sleep(0.01)
    daemon.stop()
    runner.join(10)
    pty.unplug()
    assert max(resume_times) < 2.0, resume_times
    assert len(rec.got) == 3 * 420, f"{len(rec.got)} predictions"
    for (stream, s), y in rec.got.items():
        np.testing.assert_array_equal(y, expected[sorted(xs)[int(stream)]][s])
    assert daemon.metrics.summary()["gaps"] == 0
    assert daemon.serial.reconnects >= 20
    time.sleep(0.2)
    gc.collect()
    # Other tests' leftovers (sockets, cache files) may open or close fds meanwhile; what this
    # test owns is every terminal fd, so exactly those must be back to what they were.
    after = open_fds()
    new = {f"{fd}->{t}" for fd, t in after.items() if fds_before.get(fd) != t}
    assert terminal_fds(after) == terminal_fds(fds_before), f"terminal fds leaked; new fds: {sorted(new)}"
    assert threading.active_count() == threads_before, "threads leaked"


def test_broker_down_predictions_dropped_and_counted_memory_bounded(tmp_path):
    xs = readings(4, 1500, seed=6)
    pty = Pty(str(tmp_path / "tty"))
    cfg = DaemonConfig(model=str(MODEL), serial=SerialConfig(port=str(tmp_path / "tty")),
                       mqtt=MqttConfig(url=f"mqtt://127.0.0.1:{free_port()}", subscribe="", max_queued_out=200,
                                       client_id="edgelstm-broker-down"),
                       policy=PolicyConfig(stream_ttl_s=0), output="mqtt", log_every_s=3600)
    daemon, runner = start_daemon(cfg)
    assert daemon.serial.connected.wait(5)

    def send(lo, hi):
        for seq in range(lo, hi):
            os.write(pty.master, b"".join(frame.encode(reading_frame(i, seq, xs[sid][seq]))
                                          for i, sid in enumerate(sorted(xs))))

    def wait_predictions(n):
        deadline = time.time() + 30
        while daemon.metrics.summary()["predictions"] < n and time.time() < deadline:
            time.sleep(0.02)

    send(0, 500)
    wait_predictions(2000)
    rss_mid = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    send(500, 1500)
    wait_predictions(6000)
    rss_end = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    s = daemon.metrics.summary()
    daemon.stop()
    runner.join(15)
    pty.unplug()
    assert s["predictions"] == 6000
    assert 6000 - 200 - 5 <= s["drops"] <= 6000 - 200, s      # all but the bounded outgoing queue
    assert rss_end - rss_mid < 10_000, f"RSS grew {rss_end - rss_mid} KiB while the broker was away"
