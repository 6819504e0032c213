"""The embedded default job: a simulated wrist-sensor board on a pseudo-terminal speaking the
serial frame protocol, and the daemon reading from it with the bundled activity model."""

from __future__ import annotations

import os
import threading
import time
from importlib import resources

import numpy as np

from .errors import ConfigError
from .progress import Progress
from .simulate import ACTIVITIES, RATE_HZ, SimulatedDevice, accelerometer


def bundled_model_path() -> str:
    return str(resources.files("edgelstm") / "data" / "activity.elstm")


def bundled_recording() -> tuple[np.ndarray, np.ndarray, float]:
    """(x (T, 3) float32, labels (T,), rate in Hz) of the bundled, held-out recording."""
    with resources.as_file(resources.files("edgelstm") / "data" / "activity_recording.npz") as p:
        with np.load(p, allow_pickle=False) as z:
            return z["x"].astype(np.float32), z["labels"], float(z["rate_hz"])


def recordings(n_streams: int, steps: int):
    """The bundled recording as stream 0, more held-out simulated wrists after it."""
    x, labels, _ = bundled_recording()
    xs, ys = [x[:steps]], [labels[:steps]]
    for s in range(1, n_streams):
        xi, yi = accelerometer(steps, seed=5000 + s)
        xs.append(xi)
        ys.append(yi)
    return xs, ys


class DemoSink:
    """Collects predictions from the daemon's inference thread and renders the status."""

    def __init__(self, labels: list, out, tty: bool):
        self.labels, self.out, self.tty = labels, out, tty
        self.lock = threading.Lock()
        self.correct = self.total = 0
        self.latest: dict = {}
        self.last_print = 0.0
        self.started = time.time()

    def __call__(self, stream: str, seq: int, t_in: float, y: np.ndarray, replay: bool = False) -> None:
        if replay:                                  # an answer repeated for a frame sent again
            return
        p = np.exp(y - y.max())
        p /= p.sum()
        label, truth = int(p.argmax()), int(self.labels[int(stream)][seq])
        with self.lock:
            self.total += 1
            self.correct += label == truth
            self.latest[stream] = (seq, label, float(p[label]), truth)
            now = time.time()
            if now - self.last_print >= (0.1 if self.tty else 1.0):
                self.last_print = now
                self.render()

    def render(self, final: bool = False) -> None:
        parts = []
        for stream, (seq, label, prob, truth) in sorted(self.latest.items()):
            mark = "ok" if label == truth else "--"
            parts.append(f"wrist {stream}: {ACTIVITIES[label]:<7} {prob:4.0%} {mark}")
        t = max((v[0] for v in self.latest.values()), default=0) / RATE_HZ
        acc = self.correct / max(self.total, 1)
        line = f"t={t:6.1f}s | " + " | ".join(parts) + f" | accuracy {acc:6.1%} ({self.total} predictions)"
        if self.tty and not final:
            self.out.write("\r" + line[:200])
        else:
            self.out.write(("\r" if self.tty else "") + line + "\n")
        self.out.flush()


def run_demo(speed: float, steps: int, n_streams: int, out, tty: bool, log, line: Progress | None = None) -> int:
    """Start the simulated board on a pty and the daemon on its other end; return when the
    recording ends or Ctrl-C is pressed. Prints live predictions and a final accuracy line.
    line: where a slow first compile is announced, closed once the model is ready."""
    from .daemon.config import DaemonConfig, PolicyConfig, SerialConfig
    from .daemon.service import Daemon
    master, slave = os.openpty()
    port = os.ttyname(slave)
    xs, ys = recordings(n_streams, steps or 6000)
    cfg = DaemonConfig(model=bundled_model_path(), serial=SerialConfig(port=port, baud=115200),
                       policy=PolicyConfig(stream_ttl_s=0), output="stdout", log_every_s=3600).validate()
    sink = DemoSink(ys, out, tty)
    daemon = Daemon(cfg, sink=sink, status=line.update if line and line.active else None)
    if line:
        line.close()
    serial = daemon.serial
    if serial is None:              # cfg.serial has a port, so the daemon always builds its link
        raise ConfigError("demo: the daemon has no serial link")
    rate = RATE_HZ * speed if speed > 0 else 0.0
    log.info("simulated board on %s: %d wrist sensor(s), %d readings each at %s", port, n_streams, len(xs[0]),
             f"{rate:g} readings/s per wrist" if rate else "full speed")
    device = SimulatedDevice(master, xs, rate)
    runner = threading.Thread(target=daemon.run, name="inference", daemon=True)
    runner.start()
    source_ready = time.time() + 10
    while not serial.connected.is_set() and time.time() < source_ready:
        time.sleep(0.01)
    device.start()
    expected = len(xs) * len(xs[0])
    try:
        while runner.is_alive() and sink.total < expected:
            time.sleep(0.05)
            if not device.thread.is_alive() and time.time() - sink.last_print > 2:
                break
    except KeyboardInterrupt:
        out.write("\ninterrupted: stopping the board and the daemon\n")
    device.stop()
    daemon.stop()
    runner.join(timeout=10)
    os.close(master)
    os.close(slave)
    sink.render(final=True)
    s = daemon.metrics.summary()
    out.write(f"\ndone: {sink.total} predictions from {device.sent} readings sent over {port}; "
              f"accuracy {sink.correct / max(sink.total, 1):.1%}; bad frames {int(s['bad_payloads'])}, "
              f"gaps {int(s['gaps'])}; step p50 {s.get('step_p50_ms', 0) * 1e3:.0f} us, "
              f"end-to-end p50 {s.get('e2e_p50_ms', 0):.2f} ms p99 {s.get('e2e_p99_ms', 0):.2f} ms\n")
    out.write("record and replay yours: edgelstm record --mqtt URL --model M -o rec/ ; "
              "edgelstm replay rec/ --model M -o out/ --plot\n")
    return 0
