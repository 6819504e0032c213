"""The embedded default job: replay the bundled accelerometer recording through the bundled
activity model, one reading at a time, as a sensor would deliver it."""

from __future__ import annotations

import time
from dataclasses import dataclass
from importlib import resources

import numpy as np

from .engine import Model
from .model.loader import load


def bundled_model_path():
    return resources.files("edgelstm") / "data" / "activity.elstm"


def bundled_recording() -> tuple[np.ndarray, np.ndarray, float]:
    """(x (T, 3) float32, labels (T,), rate in Hz) of the bundled, held-out recording."""
    with resources.as_file(resources.files("edgelstm") / "data" / "activity_recording.npz") as p:
        with np.load(p, allow_pickle=False) as z:
            return z["x"].astype(np.float32), z["labels"], float(z["rate_hz"])


@dataclass
class Prediction:
    index: int
    x: np.ndarray
    label: int
    prob: float
    truth: int
    step_seconds: float


def load_bundled() -> Model:
    with resources.as_file(bundled_model_path()) as p:
        return load(p)


def replay(model: Model, x: np.ndarray, labels: np.ndarray, rate_hz: float, speed: float):
    """Yield a Prediction per reading, paced at rate_hz * speed (speed 0: as fast as possible)."""
    stream = model.stream()
    y = np.empty(model.output_size, np.float32)
    period = 0.0 if speed <= 0 else 1.0 / (rate_hz * speed)
    start = time.perf_counter()
    for t in range(len(x)):
        if period:
            delay = start + t * period - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        t0 = time.perf_counter()
        stream.step(x[t], out=y)
        dt = time.perf_counter() - t0
        p = np.exp(y - y.max())
        p /= p.sum()
        label = int(p.argmax())
        yield Prediction(t, x[t], label, float(p[label]), int(labels[t]), dt)
