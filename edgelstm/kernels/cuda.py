"""The CUDA kernel: one thread per stream, every layer and the head in one launch.

Weights are the CPU kernels' packed vector (layout.py) resident on the device; all threads of
a warp read the same weight at once (a broadcast), so many small streams run well. Per-stream
data is stream-minor so neighbouring threads touch neighbouring addresses:

  state (S, N)   column n is bank slot n: [h_0, c_0, h_1, c_1, ...]
  work  (W, B)   column b is batch row b's scratch, the CPU kernels' work row (layout.py)
  X (B, I), Y (B, O), slots (B,), status (B,)

The gate activations are gate_math's own Python functions compiled for the device, so the
CPU and GPU kernels share one formula. Inputs are checked on the host before the launch; the
kernel commits a stream's next state only if it and its outputs are finite.
"""

from __future__ import annotations

import math
import types

from numba import config, cuda, float32

from . import gate_math
from .layout import (
    HEAD_B,
    HEAD_IN,
    HEAD_W,
    HEADER_LEN,
    IN_MEAN,
    IN_SCALE,
    KIND_LSTM,
    L_BA,
    L_BB,
    L_C,
    L_H,
    L_HID,
    L_IN,
    L_KIND,
    L_OUT,
    L_WHH,
    L_WHR,
    L_WIH,
    LAYER_LEN,
    N_IN,
    N_LAYERS,
    N_OUT,
    N_STATE,
    OUT_MEAN,
    OUT_SCALE,
    W_CAT,
    W_NEXT,
    W_TMP,
    W_Y,
)

STATUS_OK, STATUS_NUMERICAL = 0, 2
# The simulator runs each thread as a Python thread: small blocks keep the CI tests quick.
THREADS_PER_BLOCK = 8 if config.ENABLE_CUDASIM else 128


def _with_globals(fn, **names):
    """The same Python function with some global names pointing elsewhere (at device functions)."""
    return types.FunctionType(fn.__code__, {**fn.__globals__, **names}, fn.__name__, fn.__defaults__,
                              fn.__closure__)


tanh = cuda.jit(device=True, inline="always")(gate_math.tanh.py_func)
sigmoid = cuda.jit(device=True, inline="always")(_with_globals(gate_math.sigmoid.py_func, tanh=tanh))


@cuda.jit(device=True, inline="always")
def _dot(params, w, n, work, v, b):
    """params[w : w + n] . work[v : v + n, b]"""
    acc = float32(0.0)                           # float32 throughout: Jetson GPUs are slow at float64
    for j in range(n):
        acc += params[w + j] * work[v + j, b]
    return acc


@cuda.jit(device=True)
def _lstm_layer(params, meta, row, state, slot, work, b):
    n_in, hid, out = meta[row + L_IN], meta[row + L_HID], meta[row + L_OUT]
    w, bias, whr = meta[row + L_WIH], meta[row + L_BA], meta[row + L_WHR]
    h_at, c_at = meta[row + L_H], meta[row + L_C]
    cat, nxt, tmp, width = meta[W_CAT], meta[W_NEXT], meta[W_TMP], n_in + out
    for j in range(hid):                         # gate rows i, f, g, o over [input; h_prev]
        gi = params[bias + j] + _dot(params, w + j * width, width, work, cat, b)
        gf = params[bias + hid + j] + _dot(params, w + (hid + j) * width, width, work, cat, b)
        gg = params[bias + 2 * hid + j] + _dot(params, w + (2 * hid + j) * width, width, work, cat, b)
        go = params[bias + 3 * hid + j] + _dot(params, w + (3 * hid + j) * width, width, work, cat, b)
        c = sigmoid(gf) * state[c_at + j, slot] + sigmoid(gi) * tanh(gg)
        work[nxt + c_at + j, b] = c
        work[tmp + j, b] = sigmoid(go) * tanh(c)
    for j in range(out):                         # h = W_hr h_full (projection) or h_full
        if whr >= 0:
            work[nxt + h_at + j, b] = _dot(params, whr + j * hid, hid, work, tmp, b)
        else:
            work[nxt + h_at + j, b] = work[tmp + j, b]


@cuda.jit(device=True)
def _gru_layer(params, meta, row, state, slot, work, b):
    n_in, hid = meta[row + L_IN], meta[row + L_HID]
    wih, whh, ba, bb = meta[row + L_WIH], meta[row + L_WHH], meta[row + L_BA], meta[row + L_BB]
    h_at = meta[row + L_H]
    cat, nxt = meta[W_CAT], meta[W_NEXT]
    for j in range(hid):                         # rows r, z, n; b_hn stays inside r * (...)
        r = sigmoid(params[ba + j] + _dot(params, wih + j * n_in, n_in, work, cat, b)
                    + _dot(params, whh + j * hid, hid, work, cat + n_in, b))
        z = sigmoid(params[ba + hid + j] + _dot(params, wih + (hid + j) * n_in, n_in, work, cat, b)
                    + _dot(params, whh + (hid + j) * hid, hid, work, cat + n_in, b))
        n = tanh(params[ba + 2 * hid + j] + _dot(params, wih + (2 * hid + j) * n_in, n_in, work, cat, b)
                 + r * (params[bb + 2 * hid + j]
                        + _dot(params, whh + (2 * hid + j) * hid, hid, work, cat + n_in, b)))
        work[nxt + h_at + j, b] = (float32(1.0) - z) * n + z * state[h_at + j, slot]


@cuda.jit
def step_streams(params, meta, state, slots, X, Y, work, status, n_rows):
    """Batch row b = cuda.grid(1) steps bank slot slots[b] with X[b]; writes Y[b], status[b]."""
    b = cuda.grid(1)
    if b >= n_rows:
        return
    slot = slots[b]
    cat, nxt, mean, scale = meta[W_CAT], meta[W_NEXT], meta[IN_MEAN], meta[IN_SCALE]
    for j in range(meta[N_IN]):
        work[cat + j, b] = (X[b, j] - params[mean + j]) * params[scale + j]
    for k in range(meta[N_LAYERS]):
        row = HEADER_LEN + LAYER_LEN * k
        n_in, out, h_at = meta[row + L_IN], meta[row + L_OUT], meta[row + L_H]
        for j in range(out):                     # cat = [layer input; h_prev]
            work[cat + n_in + j, b] = state[h_at + j, slot]
        if meta[row + L_KIND] == KIND_LSTM:
            _lstm_layer(params, meta, row, state, slot, work, b)
        else:
            _gru_layer(params, meta, row, state, slot, work, b)
        for j in range(out):                     # the next layer's input
            work[cat + j, b] = work[nxt + h_at + j, b]

    ok = True
    y_at, n_out, head_w, head_b, head_in = meta[W_Y], meta[N_OUT], meta[HEAD_W], meta[HEAD_B], meta[HEAD_IN]
    out_mean, out_scale = meta[OUT_MEAN], meta[OUT_SCALE]
    for o in range(n_out):
        v = work[cat + o, b]
        if head_w >= 0:
            v = params[head_b + o] + _dot(params, head_w + o * head_in, head_in, work, cat, b)
        v = v * params[out_scale + o] + params[out_mean + o]
        work[y_at + o, b] = v
        ok = ok and math.isfinite(v)
    n_state = meta[N_STATE]
    for j in range(n_state):
        ok = ok and math.isfinite(work[nxt + j, b])
    for o in range(n_out):
        Y[b, o] = work[y_at + o, b]
    if ok:
        for j in range(n_state):
            state[j, slot] = work[nxt + j, b]
        status[b] = STATUS_OK
    else:
        status[b] = STATUS_NUMERICAL


def launch(params, meta, state, slots, X, Y, work, status, n_rows: int, stream=0) -> None:
    blocks = (n_rows + THREADS_PER_BLOCK - 1) // THREADS_PER_BLOCK
    step_streams[blocks, THREADS_PER_BLOCK, stream](params, meta, state, slots, X, Y, work, status, n_rows)


@cuda.jit
def read_slot(state, slot, out):
    """out[:] = state[:, slot] (one stream's state, for get_state and checkpoints)."""
    j = cuda.grid(1)
    if j < out.shape[0]:
        out[j] = state[j, slot]


@cuda.jit
def write_slot(state, slot, values):
    j = cuda.grid(1)
    if j < values.shape[0]:
        state[j, slot] = values[j]
