"""A simulated wrist accelerometer (3 axes, in g, 50 Hz) for the bundled demo and tests.

Activities follow each other in segments of 4-12 s: 0 = still, 1 = walking (about 1.8 Hz
steps), 2 = running (about 2.8 Hz, stronger impacts). Deterministic for a given seed.
"""

from __future__ import annotations

import numpy as np

RATE_HZ = 50
ACTIVITIES = ("still", "walking", "running")


def accelerometer(n_steps: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(x (n_steps, 3) float32 in g, labels (n_steps,) int64)."""
    rng = np.random.default_rng(seed)
    x = np.empty((n_steps, 3), np.float32)
    labels = np.empty(n_steps, np.int64)
    t, gravity = 0, np.array([0.0, 0.0, 1.0])
    while t < n_steps:
        label = int(rng.integers(3))
        n = min(int(rng.uniform(4, 12) * RATE_HZ), n_steps - t)
        tt = np.arange(n) / RATE_HZ
        tilt = rng.normal(0, 0.15, 3)
        base = gravity + tilt
        if label == 0:
            sig = np.zeros((n, 3))
        else:
            freq = rng.normal(1.8 if label == 1 else 2.8, 0.15)
            amp = rng.uniform(0.2, 0.4) if label == 1 else rng.uniform(0.7, 1.2)
            phase = rng.uniform(0, 2 * np.pi, 3)
            weights = np.array([0.6, 0.4, 1.0]) * amp
            sig = weights * np.sin(2 * np.pi * freq * tt[:, None] + phase)
            sig += 0.3 * weights * np.sin(4 * np.pi * freq * tt[:, None] + 2 * phase)
        x[t:t + n] = base + sig + rng.normal(0, 0.05, (n, 3))
        labels[t:t + n] = label
        t += n
    return x, labels


class SimulatedDevice:
    """A sensor board on a pseudo-terminal: writes HELLO, then READING frames (PROTOCOL.md)
    for each recording (one stream each) at `rate_hz`, like a microcontroller would.

    `fd` is the master side of a pty (os.openpty()); the daemon opens the slave's path."""

    def __init__(self, fd: int, recordings: list, rate_hz: float, boot_id: int = 1):
        import threading
        self.fd, self.recordings, self.rate_hz, self.boot_id = fd, recordings, rate_hz, boot_id
        self.sent = 0
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name="simulated-device", daemon=True)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.stop_event.set()
        self.thread.join(timeout=5)

    def _run(self):
        import os
        import time

        from .protocol import frame
        from .protocol.payload import hello_frame, reading_frame
        n_inputs = self.recordings[0].shape[1]
        hello = b"".join(frame.encode(hello_frame(s, self.boot_id, n_inputs)) for s in range(len(self.recordings)))
        os.write(self.fd, b"\x00" + hello)
        start, period = time.perf_counter(), (1.0 / self.rate_hz if self.rate_hz > 0 else 0.0)
        for t in range(min(len(r) for r in self.recordings)):
            if self.stop_event.is_set():
                return
            if period:
                delay = start + t * period - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            chunk = b"".join(frame.encode(reading_frame(s, t, rec[t], int(t * 1000 / RATE_HZ)))
                             for s, rec in enumerate(self.recordings))
            try:
                os.write(self.fd, chunk)
            except OSError:
                return
            self.sent += len(self.recordings)
