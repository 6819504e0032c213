"""Compiled float32 kernels for the CPU: no allocation, no exceptions, state updated in place.

The entry point, step(params, meta, state, rows, xs, ys, work, status), returns an int
status (0 = success) and serves one stream's step, one stream's sequence and a bank's step.
It first checks its inputs are finite (the validation stage; it lives in the same compiled
call because a separate NumPy check costs more than a whole step), then computes every
stream's next state into `work` and commits it only if all of it is finite. So a rejected
call leaves `state` exactly as it was.

Shapes: params (P,) f32 and meta (M,) i64 from layout.pack; state (N, S) f32;
work (TILE, WORK_WIDTH) f32 scratch; xs (n * I,), ys (n * O,) f32 (readings and outputs
flattened, so one reading and a batch have the same type); rows (k,) i64; status (k,) i8.
Streams are processed TILE at a time so each weight row is read once per tile, not per stream.

All index arithmetic is unsigned (np.uint64) over flat views: NumPy-style negative-index
wrap-around checks on signed indices stop LLVM from vectorising, and per-row array views cost
an atomic reference-count pair each; both were measured to triple the step time.
"""

import numpy as np

from .._numba import inline, kernel
from . import gate_math
from .contract import STATUS_NONFINITE, STATUS_OK, TILE
from .cpu_graph import run_chain, run_plain_chain
from .layout import (
    H_COUNT,
    H_FIRST,
    H_SIZE,
    H_Y,
    HEAD_LEN,
    HEADER_LEN,
    HEADS_AT,
    KIND_LSTM,
    L_BA,
    L_BB,
    L_C,
    L_H,
    L_HID,
    L_IN,
    L_KIND,
    L_OUT,
    L_PEEP,
    L_WHH,
    L_WHR,
    L_WIH,
    LAYER_LEN,
    N_HEADS,
    N_IN,
    N_LAYERS,
    N_OUT,
    N_STATE,
    N_TRUNK,
    POST_COUNT,
    POST_FIRST,
    PRE_COUNT,
    PRE_FIRST,
    W_CAT,
    W_GA,
    W_GB,
    W_NEXT,
    W_PREV,
    W_TMP,
    W_TRUNK,
    W_VC,
    W_Y,
    WORK_WIDTH,
)
from .matvec import BIAS, NO_BIAS, matvec

sigmoid, tanh = gate_math.sigmoid, gate_math.tanh
u = np.uint64
_0, _1, _2, _3, _4 = u(0), u(1), u(2), u(3), u(4)
_F0, _F1 = np.float32(0.0), np.float32(1.0)


@inline
def _lstm_layer(params, meta, row, wk, width, src, B):
    n_in, hid, n_out = u(meta[row + L_IN]), u(meta[row + L_HID]), u(meta[row + L_OUT])
    cat, ga, prev, nxt, tmp = u(meta[W_CAT]), u(meta[W_GA]), u(meta[W_PREV]), u(meta[W_NEXT]), u(meta[W_TMP])
    h_off, c_off, projected = u(meta[row + L_H]), u(meta[row + L_C]), meta[row + L_WHR] >= 0
    for b in range(B):                             # cat = [layer input; h_prev]
        base = u(b) * width
        if src != cat:
            for j in range(n_in):
                wk[base + cat + j] = wk[base + src + j]
        for j in range(n_out):
            wk[base + cat + n_in + j] = wk[base + prev + h_off + j]
    matvec(params, u(meta[row + L_WIH]), _4 * hid, n_in + n_out, u(meta[row + L_BA]), BIAS,
            wk, width, cat, ga, B)
    h_dst = tmp if projected else nxt + h_off
    if meta[row + L_PEEP] >= 0:
        _peephole_gates(params, u(meta[row + L_PEEP]), hid, wk, width, ga, prev + c_off, nxt + c_off, h_dst, B)
    else:
        _gates(hid, wk, width, ga, prev + c_off, nxt + c_off, h_dst, B)
    if projected:                                  # h = W_hr (o * tanh(c))
        matvec(params, u(meta[row + L_WHR]), n_out, hid, _0, NO_BIAS, wk, width, tmp, nxt + h_off, B)


@inline
def _gates(hid, wk, width, ga, c_prev, c_next, h_dst, B):
    """c' = f * c + i * g, h' = o * tanh(c') from the pre-activation gates at ga."""
    # Short passes, each touching few regions of work, so LLVM can vectorise them.
    for b in range(B):
        g, base = u(b) * width + ga, u(b) * width
        for j in range(_2 * hid):                  # gate rows i, f, g, o
            wk[g + j] = sigmoid(wk[g + j])
        for j in range(_2 * hid, _3 * hid):
            wk[g + j] = tanh(wk[g + j])
        for j in range(_3 * hid, _4 * hid):
            wk[g + j] = sigmoid(wk[g + j])
        for j in range(hid):                       # c' = f * c + i * g
            wk[base + c_next + j] = (wk[g + hid + j] * wk[base + c_prev + j]
                                     + wk[g + j] * wk[g + _2 * hid + j])
        for j in range(hid):                       # h' = o * tanh(c')
            wk[base + h_dst + j] = wk[g + _3 * hid + j] * tanh(wk[base + c_next + j])


@inline
def _peephole_gates(params, peep, hid, wk, width, ga, c_prev, c_next, h_dst, B):
    """As _gates, with i and f seeing the old cell and o the new one (weights p_i, p_f, p_o)."""
    for b in range(B):
        g, base = u(b) * width + ga, u(b) * width
        for j in range(hid):
            c = wk[base + c_prev + j]
            i = sigmoid(wk[g + j] + params[peep + j] * c)
            f = sigmoid(wk[g + hid + j] + params[peep + hid + j] * c)
            c_new = f * c + i * tanh(wk[g + _2 * hid + j])
            wk[base + c_next + j] = c_new
            o = sigmoid(wk[g + _3 * hid + j] + params[peep + _2 * hid + j] * c_new)
            wk[base + h_dst + j] = o * tanh(c_new)


@inline
def _gru_layer(params, meta, row, wk, width, src, B):
    n_in, hid = u(meta[row + L_IN]), u(meta[row + L_HID])
    ga, gb, prev, nxt = u(meta[W_GA]), u(meta[W_GB]), u(meta[W_PREV]), u(meta[W_NEXT])
    h_off = u(meta[row + L_H])
    matvec(params, u(meta[row + L_WIH]), _3 * hid, n_in, u(meta[row + L_BA]), BIAS, wk, width, src, ga, B)
    matvec(params, u(meta[row + L_WHH]), _3 * hid, hid, u(meta[row + L_BB]), BIAS, wk, width, prev + h_off, gb, B)
    for b in range(B):
        a, c, base = u(b) * width + ga, u(b) * width + gb, u(b) * width
        for j in range(_2 * hid):                  # gate rows r, z, n
            wk[a + j] = sigmoid(wk[a + j] + wk[c + j])
        for j in range(hid):                       # n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
            wk[a + _2 * hid + j] = tanh(wk[a + _2 * hid + j] + wk[a + j] * wk[c + _2 * hid + j])
        for j in range(hid):                       # h' = (1 - z) * n + z * h
            z = wk[a + hid + j]
            wk[base + nxt + h_off + j] = (_F1 - z) * wk[a + _2 * hid + j] + z * wk[base + prev + h_off + j]


@inline
def _forward_tile(params, meta, xs, x0, wk, B, chain):
    """Next state and output, in work, for B streams whose prev state is already there.
    xs is X flattened; the tile's first input row is x0; chain runs the graph layers."""
    width, n_in, raw = u(meta[WORK_WIDTH]), u(meta[N_IN]), u(meta[W_VC])
    for b in range(B):
        x, v = (u(x0) + u(b)) * n_in, u(b) * width + raw
        for j in range(n_in):
            wk[v + j] = xs[x + j]
    src = chain(params, meta, meta[PRE_FIRST], meta[PRE_COUNT], wk, width, raw, B)
    src = _recurrent(params, meta, wk, width, src, B)
    post_and_heads(params, meta, wk, width, src, B, chain)


@inline
def post_and_heads(params, meta, wk, width, src, B, chain):
    """The post chain and heads, from the vector at src of B work rows into their y area;
    chain: run_plain_chain or run_chain."""
    top = chain(params, meta, meta[POST_FIRST], meta[POST_COUNT], wk, width, src, B)
    y_area = u(meta[W_Y])
    if meta[N_HEADS] == 0:
        _copy(wk, width, top, y_area, u(meta[N_OUT]), B)
        return
    trunk = u(meta[W_TRUNK])
    _copy(wk, width, top, trunk, u(meta[N_TRUNK]), B)
    for hd in range(meta[N_HEADS]):
        hrow = meta[HEADS_AT] + HEAD_LEN * hd
        out = chain(params, meta, meta[hrow + H_FIRST], meta[hrow + H_COUNT], wk, width, trunk, B)
        _copy(wk, width, out, y_area + u(meta[hrow + H_Y]), u(meta[hrow + H_SIZE]), B)


@kernel
def _recurrent(params, meta, wk, width, src, B):
    """The recurrent layers, on the vector at src; returns where the last layer's h is.
    A kernel of its own, not inlined, so step and step_graph share one compile of it."""
    for k in range(meta[N_LAYERS]):
        row = HEADER_LEN + LAYER_LEN * k
        if meta[row + L_KIND] == KIND_LSTM:
            _lstm_layer(params, meta, row, wk, width, src, B)
        else:
            _gru_layer(params, meta, row, wk, width, src, B)
        src = u(meta[W_NEXT]) + u(meta[row + L_H])
    return src


@inline
def _copy(wk, width, src, dst, n, B):
    for b in range(B):
        for j in range(n):
            wk[u(b) * width + dst + j] = wk[u(b) * width + src + j]


@inline
def _load_prev(meta, st, rows, r0, wk, B):
    """Copy each tile stream's state row into the prev area of its work row."""
    width, n_state, prev = u(meta[WORK_WIDTH]), u(meta[N_STATE]), u(meta[W_PREV])
    for b in range(B):
        s, w = u(rows[r0 + b]) * n_state, u(b) * width + prev
        for j in range(n_state):
            wk[w + j] = st[s + j]


@inline
def _commit_tile(params, meta, st, rows, r0, ys, y0, wk, status, B):
    """Write y and commit the next state of each stream whose results are all finite;
    returns how many were not (their state is left as it was)."""
    width, n_state, n_out = u(meta[WORK_WIDTH]), u(meta[N_STATE]), u(meta[N_OUT])
    nxt, y_area = u(meta[W_NEXT]), u(meta[W_Y])
    failed = 0
    for b in range(B):
        w, y = u(b) * width, (u(y0) + u(b)) * n_out
        for j in range(n_out):
            ys[y + j] = wk[w + y_area + j]
        if _count_nonfinite(ys, y, n_out) + _count_nonfinite(wk, w + nxt, n_state) == 0:
            s = u(rows[r0 + b]) * n_state
            for j in range(n_state):
                st[s + j] = wk[w + nxt + j]
            status[r0 + b] = STATUS_OK
        else:
            status[r0 + b] = STATUS_NONFINITE
            failed += 1
    return failed


@inline
def _count_nonfinite(a, start, n):
    """How many of a[start:start+n] are NaN/Inf (isfinite stays truthful: FASTMATH has no nnan/ninf)."""
    count = 0
    for j in range(n):
        count += not np.isfinite(a[start + j])
    return count


@inline
def _first_nonfinite_row(xs, n_rows, n_cols):
    """Index of the first row of the flat (n_rows, n_cols) input holding NaN/Inf, or -1."""
    for t in range(n_rows):
        if _count_nonfinite(xs, u(t) * u(n_cols), u(n_cols)):
            return t
    return -1


@kernel
def step(params, meta, state, rows, xs, ys, work, status):
    """The entry point for a model whose graph layers are all Linear or Affine
    (layout.plain_graph); step_graph for any other. See _step for the arguments."""
    return _step(params, meta, state, rows, xs, ys, work, status, run_plain_chain)


@kernel
def step_graph(params, meta, state, rows, xs, ys, work, status):
    """The entry point for any model (see step)."""
    return _step(params, meta, state, rows, xs, ys, work, status, run_chain)


@inline
def _step(params, meta, state, rows, xs, ys, work, status, chain):
    """xs holds n = len(xs) / I readings flat, ys receives n outputs.
    n == len(rows): one step of each of n streams (rows[i] is the state row of reading i);
    returns -(i+1) if reading i holds NaN/Inf (nothing changed), else how many streams'
    results were non-finite (their state kept).
    n > len(rows) == 1: n steps of the stream in row rows[0], all or nothing: returns -(t+1)
    if reading t holds NaN/Inf, (t+1) if step t's result was non-finite (state restored to
    what it was before the call), else 0. One stream stepped once is both cases at once.

    Every caller passes the same argument types, so numba compiles the kernel tree once; each
    further signature (or a literal constant passed to a helper) would compile all of it again.
    """
    n_in = meta[N_IN]
    n, k = xs.shape[0] // n_in, rows.shape[0]
    st, wk = state.ravel(), work.ravel()
    bad = _first_nonfinite_row(xs, n, n_in)
    if bad >= 0:
        return -(bad + 1)
    sequence = n != k
    n_state, backup = u(meta[N_STATE]), u(meta[WORK_WIDTH])   # work row 1 holds the backup
    s0 = _0
    if sequence:
        s0 = u(rows[0]) * n_state
        for j in range(n_state):
            wk[backup + j] = st[s0 + j]
    failed, r0, B, x0 = 0, k - k, k, k - k     # int64 zeros, like the loop's: one compile
    # One loop, one call site per helper: the helpers are inlined where they are called.
    for it in range(n if sequence else (k + TILE - 1) // TILE):
        if sequence:
            x0 = it
        else:
            r0 = x0 = it * TILE
            B = min(TILE, k - r0)
        _load_prev(meta, st, rows, r0, wk, B)
        _forward_tile(params, meta, xs, x0, wk, B, chain)
        bad = _commit_tile(params, meta, st, rows, r0, ys, x0, wk, status, B)
        if sequence and bad:
            for j in range(n_state):
                st[s0 + j] = wk[backup + j]
            return it + 1
        failed += bad
    return failed
