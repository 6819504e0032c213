"""One stream's sequence, layer by layer (issue 13): the kernel behind Stream.step_many for long
sequences of a plain model (layout.plain_graph; no projection, no peepholes: sequence_ok).

cpu.step runs the whole model once per reading, so every layer's W_ih is read at every step.
Here the readings go through in blocks of T_BLOCK steps: the pre chain for all of the block,
then layer 1 for all of it (its input projection W_ih x_t + b for every t of the block is one
matrix product, each weight row read once per block; only W_hh is read per step), then layer
2, ..., then the post chain and heads. The summation order differs from cpu.step (W_ih x and
W_hh h are summed apart), so results match T calls of step to ~1e-6, not bit for bit.

Arguments as cpu.step's (one stream: rows = [row], xs holds T readings), plus tw (after
params): contract.transposed_weights(meta, params), the weights laid out for this kernel (W_ih^T and
W_hh^T per layer, so the inner loops run along gate rows: no horizontal sums), and seq: the
caller's scratch, (T_BLOCK, seq_width(meta)) float32; each row t is [A | B | G], A and B the
ping-pong layer inputs/outputs of step t of the block (sized to the widest), G its gates.
Nothing is allocated. The state backup lives in work row 1's prev area. Returns
-(t+1) if reading t holds NaN/Inf (nothing changed), (t+1) if step t's result (outputs or
state) was non-finite (state restored), else 0 -- the same as cpu.step's sequence case.
"""

import numpy as np

from .._numba import inline, kernel
from . import gate_math
from .contract import STATUS_NONFINITE, STATUS_OK, TILE
from .cpu import _count_nonfinite, _first_nonfinite_row, post_and_heads
from .cpu_graph import run_plain_chain
from .layout import (
    HEADER_LEN,
    KIND_LSTM,
    L_BA,
    L_BB,
    L_C,
    L_H,
    L_HID,
    L_IN,
    L_KIND,
    L_OUT,
    LAYER_LEN,
    N_IN,
    N_LAYERS,
    N_OUT,
    N_STATE,
    PRE_COUNT,
    PRE_FIRST,
    W_GB,
    W_VC,
    W_Y,
    WORK_WIDTH,
)

sigmoid, tanh = gate_math.sigmoid, gate_math.tanh
u = np.uint64
_0, _1, _2, _3, _4, _5, _6, _7, _8 = (u(k) for k in range(9))
_F0, _F1 = np.float32(0.0), np.float32(1.0)


@kernel
def accumulate(tw, w_off, n_k, n_j, src, s_off, s_w, dst, d_off, d_w, B):
    """For b < B: dst[b*d_w + d_off + j] += sum_k src[b*s_w + s_off + k] * WT[k, j], where
    WT = tw[w_off:] is (n_k, n_j) row-major (a transposed weight matrix). The j loop is the
    vectorised one: no horizontal sums, and each group of four WT rows is loaded once for
    four vectors b (outer products in registers), so a block of steps reads weights once."""
    b = 0
    while b + 4 <= B:
        x0 = u(b) * s_w + s_off
        x1, x2, x3 = x0 + s_w, x0 + _2 * s_w, x0 + _3 * s_w
        y0 = u(b) * d_w + d_off
        y1, y2, y3 = y0 + d_w, y0 + _2 * d_w, y0 + _3 * d_w
        k = _0
        while k + _8 <= n_k:                      # eight WT rows for four vectors
            w0 = w_off + k * n_j
            w1, w2, w3 = w0 + n_j, w0 + _2 * n_j, w0 + _3 * n_j
            w4, w5, w6, w7 = w0 + _4 * n_j, w0 + _5 * n_j, w0 + _6 * n_j, w0 + _7 * n_j
            p00, p01, p02, p03 = src[x0 + k], src[x0 + k + _1], src[x0 + k + _2], src[x0 + k + _3]
            p04, p05, p06, p07 = src[x0 + k + _4], src[x0 + k + _5], src[x0 + k + _6], src[x0 + k + _7]
            p10, p11, p12, p13 = src[x1 + k], src[x1 + k + _1], src[x1 + k + _2], src[x1 + k + _3]
            p14, p15, p16, p17 = src[x1 + k + _4], src[x1 + k + _5], src[x1 + k + _6], src[x1 + k + _7]
            p20, p21, p22, p23 = src[x2 + k], src[x2 + k + _1], src[x2 + k + _2], src[x2 + k + _3]
            p24, p25, p26, p27 = src[x2 + k + _4], src[x2 + k + _5], src[x2 + k + _6], src[x2 + k + _7]
            p30, p31, p32, p33 = src[x3 + k], src[x3 + k + _1], src[x3 + k + _2], src[x3 + k + _3]
            p34, p35, p36, p37 = src[x3 + k + _4], src[x3 + k + _5], src[x3 + k + _6], src[x3 + k + _7]
            for j in range(n_j):
                a0, a1, a2, a3 = tw[w0 + j], tw[w1 + j], tw[w2 + j], tw[w3 + j]
                a4, a5, a6, a7 = tw[w4 + j], tw[w5 + j], tw[w6 + j], tw[w7 + j]
                dst[y0 + j] += ((p00 * a0 + p01 * a1) + (p02 * a2 + p03 * a3)
                                + ((p04 * a4 + p05 * a5) + (p06 * a6 + p07 * a7)))
                dst[y1 + j] += ((p10 * a0 + p11 * a1) + (p12 * a2 + p13 * a3)
                                + ((p14 * a4 + p15 * a5) + (p16 * a6 + p17 * a7)))
                dst[y2 + j] += ((p20 * a0 + p21 * a1) + (p22 * a2 + p23 * a3)
                                + ((p24 * a4 + p25 * a5) + (p26 * a6 + p27 * a7)))
                dst[y3 + j] += ((p30 * a0 + p31 * a1) + (p32 * a2 + p33 * a3)
                                + ((p34 * a4 + p35 * a5) + (p36 * a6 + p37 * a7)))
            k += _8
        while k + _4 <= n_k:
            w0 = w_off + k * n_j
            w1, w2, w3 = w0 + n_j, w0 + _2 * n_j, w0 + _3 * n_j
            p00, p01, p02, p03 = src[x0 + k], src[x0 + k + _1], src[x0 + k + _2], src[x0 + k + _3]
            p10, p11, p12, p13 = src[x1 + k], src[x1 + k + _1], src[x1 + k + _2], src[x1 + k + _3]
            p20, p21, p22, p23 = src[x2 + k], src[x2 + k + _1], src[x2 + k + _2], src[x2 + k + _3]
            p30, p31, p32, p33 = src[x3 + k], src[x3 + k + _1], src[x3 + k + _2], src[x3 + k + _3]
            for j in range(n_j):
                a0, a1, a2, a3 = tw[w0 + j], tw[w1 + j], tw[w2 + j], tw[w3 + j]
                dst[y0 + j] += (p00 * a0 + p01 * a1) + (p02 * a2 + p03 * a3)
                dst[y1 + j] += (p10 * a0 + p11 * a1) + (p12 * a2 + p13 * a3)
                dst[y2 + j] += (p20 * a0 + p21 * a1) + (p22 * a2 + p23 * a3)
                dst[y3 + j] += (p30 * a0 + p31 * a1) + (p32 * a2 + p33 * a3)
            k += _4
        while k < n_k:
            w0 = w_off + k * n_j
            p0, p1, p2, p3 = src[x0 + k], src[x1 + k], src[x2 + k], src[x3 + k]
            for j in range(n_j):
                a0 = tw[w0 + j]
                dst[y0 + j] += p0 * a0
                dst[y1 + j] += p1 * a0
                dst[y2 + j] += p2 * a0
                dst[y3 + j] += p3 * a0
            k += _1
        b += 4
    while b < B:
        x0, y0 = u(b) * s_w + s_off, u(b) * d_w + d_off
        k = _0
        while k + _4 <= n_k:
            w0 = w_off + k * n_j
            w1, w2, w3 = w0 + n_j, w0 + _2 * n_j, w0 + _3 * n_j
            p0, p1, p2, p3 = src[x0 + k], src[x0 + k + _1], src[x0 + k + _2], src[x0 + k + _3]
            for j in range(n_j):
                dst[y0 + j] += (p0 * tw[w0 + j] + p1 * tw[w1 + j]) + (p2 * tw[w2 + j] + p3 * tw[w3 + j])
            k += _4
        while k < n_k:
            w0, p0 = w_off + k * n_j, src[x0 + k]
            for j in range(n_j):
                dst[y0 + j] += p0 * tw[w0 + j]
            k += _1
        b += 1


@inline
def _set_bias(params, bias_off, n_j, dst, d_off, d_w, B):
    for b in range(B):
        o = u(b) * d_w + d_off
        for j in range(n_j):
            dst[o + j] = params[bias_off + j]


@kernel
def _lstm_run(params, tw, w, meta, row, st, s0, sq, sw, src, dst, g_off, n):
    """Layer `row` (LSTM) over n steps of the block: inputs at sq[t*sw + src], h_t to
    sq[t*sw + dst]; h and c carried in st. Returns the first step whose h or c is non-finite, or -1."""
    n_in, hid = u(meta[row + L_IN]), u(meta[row + L_HID])
    h, c, n_g = s0 + u(meta[row + L_H]), s0 + u(meta[row + L_C]), _4 * hid
    _set_bias(params, u(meta[row + L_BA]), n_g, sq, g_off, sw, n)
    accumulate(tw, w, n_in, n_g, sq, src, sw, sq, g_off, sw, n)
    w_hh = w + n_in * n_g
    bad = -1
    for t in range(n):
        g = u(t) * sw + g_off
        accumulate(tw, w_hh, hid, n_g, st, h, _0, sq, g, _0, 1)
        for j in range(_2 * hid):                  # gate rows i, f, g, o
            sq[g + j] = sigmoid(sq[g + j])
        for j in range(_2 * hid, _3 * hid):
            sq[g + j] = tanh(sq[g + j])
        for j in range(_3 * hid, _4 * hid):
            sq[g + j] = sigmoid(sq[g + j])
        for j in range(hid):                       # c' = f * c + i * g
            st[c + j] = sq[g + hid + j] * st[c + j] + sq[g + j] * sq[g + _2 * hid + j]
        o = u(t) * sw + dst
        for j in range(hid):                       # h' = o * tanh(c')
            v = sq[g + _3 * hid + j] * tanh(st[c + j])
            st[h + j] = v
            sq[o + j] = v
        if bad < 0 and _count_nonfinite(st, c, hid) + _count_nonfinite(st, h, hid):
            bad = t
    return bad


@kernel
def _gru_run(params, tw, w, meta, row, st, s0, sq, sw, src, dst, g_off, wk, gb, n):
    """As _lstm_run for a GRU layer; wk[gb:] takes W_hh h + b_hh per step."""
    n_in, hid = u(meta[row + L_IN]), u(meta[row + L_HID])
    h, n_g = s0 + u(meta[row + L_H]), _3 * hid
    _set_bias(params, u(meta[row + L_BA]), n_g, sq, g_off, sw, n)
    accumulate(tw, w, n_in, n_g, sq, src, sw, sq, g_off, sw, n)
    w_hh, b_b = w + n_in * n_g, u(meta[row + L_BB])
    bad = -1
    for t in range(n):
        a = u(t) * sw + g_off
        _set_bias(params, b_b, n_g, wk, gb, _0, 1)
        accumulate(tw, w_hh, hid, n_g, st, h, _0, wk, gb, _0, 1)
        for j in range(_2 * hid):                  # gate rows r, z, n
            sq[a + j] = sigmoid(sq[a + j] + wk[gb + j])
        for j in range(hid):                       # n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
            sq[a + _2 * hid + j] = tanh(sq[a + _2 * hid + j] + sq[a + j] * wk[gb + _2 * hid + j])
        o = u(t) * sw + dst
        for j in range(hid):                       # h' = (1 - z) * n + z * h
            z = sq[a + hid + j]
            v = (_F1 - z) * sq[a + _2 * hid + j] + z * st[h + j]
            st[h + j] = v
            sq[o + j] = v
        if bad < 0 and _count_nonfinite(st, h, hid):
            bad = t
    return bad


@kernel
def step_sequence(params, tw, meta, state, rows, xs, ys, work, seq, status):
    """See the module docstring."""
    n_in = meta[N_IN]
    n = xs.shape[0] // n_in
    st, wk, sq = state.ravel(), work.ravel(), seq.ravel()
    bad = _first_nonfinite_row(xs, n, n_in)
    if bad >= 0:
        return -(bad + 1)
    width, n_state, n_out = u(meta[WORK_WIDTH]), u(meta[N_STATE]), u(meta[N_OUT])
    sw, t_block = u(seq.shape[1]), seq.shape[0]
    backup, raw, y_area, gb = width, u(meta[W_VC]), u(meta[W_Y]), u(meta[W_GB])
    s0 = u(rows[0]) * n_state                      # back up into work row 1's prev area
    for j in range(n_state):
        wk[backup + j] = st[s0 + j]
    vec = _0                                       # A and B are vec wide
    for k in range(meta[N_LAYERS]):
        row = HEADER_LEN + LAYER_LEN * k
        vec = max(vec, u(meta[row + L_IN]), u(meta[row + L_OUT]))
    rec_in = u(meta[HEADER_LEN + L_IN])
    g_off = _2 * vec
    for t0 in range(0, n, t_block):
        m = min(t_block, n - t0)
        for c0 in range(0, m, TILE):               # pre chain, TILE steps at a time (a work row each), into A
            B = min(TILE, m - c0)
            for b in range(B):
                x, v = u(t0 + c0 + b) * u(n_in), u(b) * width + raw
                for j in range(u(n_in)):
                    wk[v + j] = xs[x + j]
            src = run_plain_chain(params, meta, meta[PRE_FIRST], meta[PRE_COUNT], wk, width, raw, B)
            for b in range(B):
                o, v = u(c0 + b) * sw, u(b) * width + src
                for j in range(rec_in):
                    sq[o + j] = wk[v + j]
        first_bad = m
        a, b, w = _0, vec, _0
        for k in range(meta[N_LAYERS]):
            row = HEADER_LEN + LAYER_LEN * k
            n_g = (_4 if meta[row + L_KIND] == KIND_LSTM else _3) * u(meta[row + L_HID])
            if meta[row + L_KIND] == KIND_LSTM:
                lb = _lstm_run(params, tw, w, meta, row, st, s0, sq, sw, a, b, g_off, m)
            else:
                lb = _gru_run(params, tw, w, meta, row, st, s0, sq, sw, a, b, g_off, wk, gb, m)
            w += (u(meta[row + L_IN]) + u(meta[row + L_HID])) * n_g
            if lb >= 0:
                first_bad = min(first_bad, lb)
            a, b = b, a
        n_last = u(meta[HEADER_LEN + LAYER_LEN * (meta[N_LAYERS] - 1) + L_OUT])
        for c0 in range(0, m, TILE):               # post chain and heads, TILE steps at a time
            B = min(TILE, m - c0)
            for b in range(B):
                o, v = u(c0 + b) * sw + a, u(b) * width + raw
                for j in range(n_last):
                    wk[v + j] = sq[o + j]
            post_and_heads(params, meta, wk, width, raw, B, run_plain_chain)
            for b in range(B):
                t, w = c0 + b, u(b) * width + y_area
                y = u(t0 + t) * n_out
                for j in range(n_out):
                    ys[y + j] = wk[w + j]
                if t < first_bad and _count_nonfinite(ys, y, n_out):
                    first_bad = t
        if first_bad < m:
            for j in range(n_state):
                st[s0 + j] = wk[backup + j]
            status[0] = STATUS_NONFINITE
            return t0 + first_bad + 1
    status[0] = STATUS_OK
    return 0
