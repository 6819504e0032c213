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
