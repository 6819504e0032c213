"""Where a step's time goes, for the benchmark shape (input 8 -> LSTM 64 x 2 -> Linear 1).

    .venv/bin/python benchmarks/profile_step.py

Measures, inside compiled code (no Python per step):
  full step        cpu.step over a sequence, per step
  matvec only      the same matrix-vector products (matvec over every layer's weights)
  weight streaming a plain vectorised sum over the packed weights: the time just to read
                   them once from cache, the floor for any single-stream step
and the Python-side cost of Stream.step on top. Writes benchmarks/results/profile_step.json.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np
from common import machine, pin_one_thread, write_json

pin_one_thread()
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import edgelstm
from edgelstm._numba import kernel
from edgelstm.kernels.layout import (
    HEAD_B,
    HEAD_IN,
    HEAD_W,
    HEADER_LEN,
    L_BA,
    L_HID,
    L_IN,
    L_OUT,
    L_WIH,
    LAYER_LEN,
    N_LAYERS,
    N_OUT,
    W_CAT,
    W_GA,
    W_Y,
    WORK_WIDTH,
)
from edgelstm.kernels.matvec import BIAS, matvec
from edgelstm.model.layers import Linear
from edgelstm.model.spec import ModelSpec, RecurrentLayer

u = np.uint64
T = 2000


@kernel
def matvecs_only(params, meta, work, steps):
    wk, width = work.ravel(), u(meta[WORK_WIDTH])
    for _ in range(steps):
        for k in range(meta[N_LAYERS]):
            row = HEADER_LEN + LAYER_LEN * k
            hid = u(meta[row + L_HID])
            matvec(params, u(meta[row + L_WIH]), u(4) * hid, u(meta[row + L_IN] + meta[row + L_OUT]),
                   u(meta[row + L_BA]), BIAS, wk, width, u(meta[W_CAT]), u(meta[W_GA]), 1)
        matvec(params, u(meta[HEAD_W]), u(meta[N_OUT]), u(meta[HEAD_IN]), u(meta[HEAD_B]), BIAS,
               wk, width, u(meta[W_CAT]), u(meta[W_Y]), 1)


@kernel
def stream_weights(params, steps):
    total = np.float32(0.0)
    for _ in range(steps):
        for j in range(params.shape[0]):
            total += params[j]
    return total


def median_us(fn, per):
    fn()
    runs = []
    for _ in range(9):
        t0 = time.perf_counter()
        fn()
        runs.append((time.perf_counter() - t0) / per * 1e6)
    return statistics.median(runs), min(runs), max(runs)


def main():
    rng = np.random.default_rng(0)
    s = 1 / 8
    layers = [RecurrentLayer("lstm", n_in, 64, rng.uniform(-s, s, (256, n_in)), rng.uniform(-s, s, (256, 64)),
                             rng.uniform(-s, s, 256), rng.uniform(-s, s, 256)) for n_in in (8, 64)]
    model = edgelstm.Model(ModelSpec.classic(tuple(layers), Linear(rng.uniform(-s, s, (1, 64)), np.zeros(1))))
    model.warmup()
    stream = model.stream()
    X = rng.normal(size=(T, 8)).astype(np.float32)
    work = model.new_work()
    x0 = X[0]
    rows = {
        "full step (in kernel)": median_us(lambda: stream.step_many(X), T),
        "matvec only": median_us(lambda: matvecs_only(model.params, model.meta, work, T), T),
        "read weights once (floor)": median_us(lambda: stream_weights(model.params, T), T),
        "Stream.step from Python": median_us(lambda: [stream.step(x0) for _ in range(T)], T),
    }
    full = rows["full step (in kernel)"][0]
    print(f"weights {model.memory_bytes / 1024:.0f} KiB float32; medians of 9 runs of {T} steps\n")
    print(f"{'part':<28}{'us/step':>9}{'min':>8}{'max':>8}{'of kernel step':>16}")
    for name, (med, lo, hi) in rows.items():
        print(f"{name:<28}{med:>9.2f}{lo:>8.2f}{hi:>8.2f}{med / full:>15.0%}")
    bw = model.memory_bytes / (rows["read weights once (floor)"][0] * 1e-6) / 1e9
    print(f"\nweight read bandwidth {bw:.0f} GB/s; Python call overhead "
          f"{rows['Stream.step from Python'][0] - full:.2f} us/step")
    write_json("profile_step", {"machine": machine(), "us_per_step": {k: v[0] for k, v in rows.items()},
                                "min_max": {k: v[1:] for k, v in rows.items()}, "weight_bandwidth_GBps": bw})


if __name__ == "__main__":
    main()
