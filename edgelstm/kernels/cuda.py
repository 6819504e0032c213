"""The CUDA kernel: every layer and the head in one launch; a group of threads per stream
shares out the hidden units, several streams per block.

Weights are the CPU kernels' packed vector (layout.py) with each matrix transposed, resident on
the device, so the threads sharing a stream's hidden units read weights coalesced. Per-stream
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

import numpy as np
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


def _with_globals(fn, **names):
    """The same Python function with some global names pointing elsewhere (at device functions)."""
    return types.FunctionType(fn.__code__, {**fn.__globals__, **names}, fn.__name__, fn.__defaults__,
                              fn.__closure__)


tanh = cuda.jit(device=True, inline="always")(gate_math.tanh.py_func)
sigmoid = cuda.jit(device=True, inline="always")(_with_globals(gate_math.sigmoid.py_func, tanh=tanh))


@cuda.jit(device=True, inline="always")
def _dot(params, w, rows, r, n, work, v, b):
    """Row r of the transposed (n, rows) matrix at params[w:] . work[v : v + n, b]. Transposed,
    the threads of a warp (consecutive r) read consecutive weights: one coalesced load."""
    acc = float32(0.0)                           # float32 throughout: Jetson GPUs are slow at float64
    for j in range(n):
        acc += params[w + j * rows + r] * work[v + j, b]
    return acc


def device_params(params: np.ndarray, meta: np.ndarray) -> np.ndarray:
    """The CPU kernels' parameter vector with every weight matrix transposed in place
    ((rows, cols) -> (cols, rows)); offsets stay valid, so meta is shared."""
    out = params.copy()

    def transpose(at, rows, cols):
        if at >= 0:
            out[at:at + rows * cols] = params[at:at + rows * cols].reshape(rows, cols).T.ravel()

    for k in range(int(meta[N_LAYERS])):
        row = HEADER_LEN + LAYER_LEN * k
        n_in, hid, n_out = (int(meta[row + f]) for f in (L_IN, L_HID, L_OUT))
        if meta[row + L_KIND] == KIND_LSTM:
            transpose(int(meta[row + L_WIH]), 4 * hid, n_in + n_out)
        else:
            transpose(int(meta[row + L_WIH]), 3 * hid, n_in)
            transpose(int(meta[row + L_WHH]), 3 * hid, hid)
        transpose(int(meta[row + L_WHR]), n_out, hid)
    transpose(int(meta[HEAD_W]), int(meta[N_OUT]), int(meta[HEAD_IN]))
    return out


@cuda.jit(device=True)
def _lstm_unit(params, meta, row, state, slot, work, b, u):
    """Unit u of an LSTM layer: gate rows i, f, g, o over cat = [input; h_prev]; writes the
    next c[u] and the unprojected h[u] (to tmp)."""
    hid, w, bias = meta[row + L_HID], meta[row + L_WIH], meta[row + L_BA]
    width = meta[row + L_IN] + meta[row + L_OUT]
    cat, c_at = meta[W_CAT], meta[row + L_C]
    g4 = 4 * hid
    gi = params[bias + u] + _dot(params, w, g4, u, width, work, cat, b)
    gf = params[bias + hid + u] + _dot(params, w, g4, hid + u, width, work, cat, b)
    gg = params[bias + 2 * hid + u] + _dot(params, w, g4, 2 * hid + u, width, work, cat, b)
    go = params[bias + 3 * hid + u] + _dot(params, w, g4, 3 * hid + u, width, work, cat, b)
    c = sigmoid(gf) * state[c_at + u, slot] + sigmoid(gi) * tanh(gg)
    work[meta[W_NEXT] + c_at + u, b] = c
    work[meta[W_TMP] + u, b] = sigmoid(go) * tanh(c)


@cuda.jit(device=True)
def _gru_unit(params, meta, row, state, slot, work, b, u):
    """Unit u of a GRU layer (rows r, z, n; b_hn stays inside r * (...)): writes the next h[u]."""
    n_in, hid = meta[row + L_IN], meta[row + L_HID]
    wih, whh, ba, bb = meta[row + L_WIH], meta[row + L_WHH], meta[row + L_BA], meta[row + L_BB]
    cat, h_at = meta[W_CAT], meta[row + L_H]
    g3 = 3 * hid
    r = sigmoid(params[ba + u] + _dot(params, wih, g3, u, n_in, work, cat, b)
                + _dot(params, whh, g3, u, hid, work, cat + n_in, b))
    z = sigmoid(params[ba + hid + u] + _dot(params, wih, g3, hid + u, n_in, work, cat, b)
                + _dot(params, whh, g3, hid + u, hid, work, cat + n_in, b))
    n = tanh(params[ba + 2 * hid + u] + _dot(params, wih, g3, 2 * hid + u, n_in, work, cat, b)
             + r * (params[bb + 2 * hid + u] + _dot(params, whh, g3, 2 * hid + u, hid, work, cat + n_in, b)))
    work[meta[W_NEXT] + h_at + u, b] = (float32(1.0) - z) * n + z * state[h_at + u, slot]


@cuda.jit
def step_streams(params, meta, state, slots, X, Y, work, status, n_rows):
    """Block row threadIdx.y steps batch row b (bank slot slots[b]) with X[b]; its threadIdx.x
    threads share the hidden units of every layer, meeting at syncthreads between phases.
    Writes Y[b] and status[b]; commits the next state only when it and Y[b] are finite."""
    t, step = cuda.threadIdx.x, cuda.blockDim.x
    b = cuda.blockIdx.x * cuda.blockDim.y + cuda.threadIdx.y
    active = b < n_rows                      # every thread reaches every syncthreads below
    slot = slots[b] if active else 0
    cat, nxt, tmp = meta[W_CAT], meta[W_NEXT], meta[W_TMP]
    if active:
        mean, scale = meta[IN_MEAN], meta[IN_SCALE]
        for j in range(t, meta[N_IN], step):
            work[cat + j, b] = (X[b, j] - params[mean + j]) * params[scale + j]
    for k in range(meta[N_LAYERS]):
        row = HEADER_LEN + LAYER_LEN * k
        n_in, hid, out, h_at = meta[row + L_IN], meta[row + L_HID], meta[row + L_OUT], meta[row + L_H]
        if active:
            for j in range(t, out, step):                        # cat = [layer input; h_prev]
                work[cat + n_in + j, b] = state[h_at + j, slot]
        cuda.syncthreads()
        is_lstm = meta[row + L_KIND] == KIND_LSTM
        if active:
            for u in range(t, hid, step):
                if is_lstm:
                    _lstm_unit(params, meta, row, state, slot, work, b, u)
                else:
                    _gru_unit(params, meta, row, state, slot, work, b, u)
        cuda.syncthreads()
        if active and is_lstm:                                   # h = W_hr h_full, or h_full
            whr = meta[row + L_WHR]
            for j in range(t, out, step):
                if whr >= 0:
                    work[nxt + h_at + j, b] = _dot(params, whr, out, j, hid, work, tmp, b)
                else:
                    work[nxt + h_at + j, b] = work[tmp + j, b]
        cuda.syncthreads()
        if active:
            for j in range(t, out, step):                        # the next layer's input
                work[cat + j, b] = work[nxt + h_at + j, b]
        cuda.syncthreads()

    y_at, n_out, n_state = meta[W_Y], meta[N_OUT], meta[N_STATE]
    if active:
        head_w, head_b, head_in = meta[HEAD_W], meta[HEAD_B], meta[HEAD_IN]
        out_mean, out_scale = meta[OUT_MEAN], meta[OUT_SCALE]
        for o in range(t, n_out, step):
            v = work[cat + o, b]
            if head_w >= 0:
                v = params[head_b + o] + _dot(params, head_w, n_out, o, head_in, work, cat, b)
            v = v * params[out_scale + o] + params[out_mean + o]
            work[y_at + o, b] = v
            Y[b, o] = v
    cuda.syncthreads()
    if active and t == 0:                                        # one verdict per stream
        ok = True
        for o in range(n_out):
            ok = ok and math.isfinite(work[y_at + o, b])
        for j in range(n_state):
            ok = ok and math.isfinite(work[nxt + j, b])
        status[b] = STATUS_OK if ok else STATUS_NUMERICAL
    cuda.syncthreads()
    if active and status[b] == STATUS_OK:
        for j in range(t, n_state, step):
            state[j, slot] = work[nxt + j, b]


def block_shape(widest_hidden: int) -> tuple[int, int]:
    """(threads per stream, streams per block): a warp multiple covering the widest layer,
    and enough streams to fill about 128 threads."""
    if config.ENABLE_CUDASIM:       # type: ignore[attr-defined]  # numba.config sets its options at run time
        return 4, 2
    per_stream = min(256, max(32, (widest_hidden + 31) // 32 * 32))
    return per_stream, max(1, 128 // per_stream)


def launch(params, meta, state, slots, X, Y, work, status, n_rows: int, shape: tuple[int, int],
           stream=0) -> None:
    per_stream, streams_per_block = shape
    blocks = (n_rows + streams_per_block - 1) // streams_per_block
    step_streams[blocks, (per_stream, streams_per_block), stream](params, meta, state, slots, X, Y, work, status,
                                                                  n_rows)


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
