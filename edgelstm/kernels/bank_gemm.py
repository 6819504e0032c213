"""The compiled kernels around a bank's matrix products (kernels/products.py says how the batch
goes through, and holds the buffers and the products themselves): gather (the pre chain and the
state rows into each layer's XH), layer_gates (the gate math on a product's result) and finish
(the post chain and heads, then the commit). Entry points in pairs, plain graph and any graph, as
cpu.step and step_graph.
"""

from __future__ import annotations

import numpy as np

from .._numba import inline, kernel
from . import gate_math
from .contract import STATUS_NONFINITE, STATUS_OK, TILE
from .cpu import _count_nonfinite, _first_nonfinite_row, post_and_heads
from .cpu_graph import run_chain, run_plain_chain
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
    W_VC,
    W_Y,
    WORK_WIDTH,
)
from .products import LAYERS_AT, P_HL, P_S, P_XH, P_XHW, PLAN_LEN

sigmoid, tanh = gate_math.sigmoid, gate_math.tanh
u = np.uint64
_2, _3 = u(2), u(3)
_F1 = np.float32(1.0)


@kernel
def gather(params, meta, state, rows, xs, work, buf, plan):
    """_gather for a plain graph."""
    return _gather(params, meta, state, rows, xs, work, buf, plan, run_plain_chain)


@kernel
def gather_graph(params, meta, state, rows, xs, work, buf, plan):
    """_gather for any stateless graph."""
    return _gather(params, meta, state, rows, xs, work, buf, plan, run_chain)


@kernel
def finish(params, meta, state, rows, ys, work, buf, plan, status):
    """_finish for a plain graph."""
    return _finish(params, meta, state, rows, ys, work, buf, plan, status, run_plain_chain)


@kernel
def finish_graph(params, meta, state, rows, ys, work, buf, plan, status):
    """_finish for any stateless graph."""
    return _finish(params, meta, state, rows, ys, work, buf, plan, status, run_chain)


@inline
def _gather(params, meta, state, rows, xs, work, buf, plan, chain):
    """Checks the readings, runs the pre chain into XH_0's x part, copies each stream's state row
    to S and each layer's h_prev into the h part of its XH. Returns -(i+1) if reading i holds
    NaN/Inf (nothing is written to state then), else 0."""
    n_in, k = meta[N_IN], rows.shape[0]
    bad = _first_nonfinite_row(xs, k, n_in)
    if bad >= 0:
        return -(bad + 1)
    st, wk = state.ravel(), work.ravel()
    width, raw, n_state, s_at = u(meta[WORK_WIDTH]), u(meta[W_VC]), u(meta[N_STATE]), u(plan[P_S])
    xh0, xw0 = u(plan[LAYERS_AT + P_XH]), u(plan[LAYERS_AT + P_XHW])
    rec_in = u(meta[HEADER_LEN + L_IN])
    for r0 in range(0, k, TILE):                  # pre chain, TILE streams at a time (a work row each)
        B = min(TILE, k - r0)
        for b in range(B):
            x, v = u(r0 + b) * u(n_in), u(b) * width + raw
            for j in range(u(n_in)):
                wk[v + j] = xs[x + j]
        src = chain(params, meta, meta[PRE_FIRST], meta[PRE_COUNT], wk, width, raw, B)
        for b in range(B):
            o, v = xh0 + u(r0 + b) * xw0, u(b) * width + src
            for j in range(rec_in):
                buf[o + j] = wk[v + j]
    for b in range(k):
        s, d = u(rows[b]) * n_state, s_at + u(b) * n_state
        for j in range(n_state):
            buf[d + j] = st[s + j]
    for layer in range(meta[N_LAYERS]):
        row, p = HEADER_LEN + LAYER_LEN * layer, LAYERS_AT + PLAN_LEN * layer
        n_in_l, hid, h_off = u(meta[row + L_IN]), u(meta[row + L_HID]), u(meta[row + L_H])
        xh, xw = u(plan[p + P_XH]), u(plan[p + P_XHW])
        for b in range(k):
            s, d = s_at + u(b) * n_state + h_off, xh + u(b) * xw + n_in_l
            for j in range(hid):
                buf[d + j] = buf[s + j]
    return 0


@kernel
def layer_gates(params, meta, layer, G, GH, S, out, k):
    """Layer `layer`'s gate math for k streams once its products are in G (and GH, a GRU's): c'
    into S, h' into `out` (the next layer's XH, whose first H columns are its x, or HL), then
    into S. All (cap, width) views of the bank's buffer: h' is stored to `out` only in the gate
    loop and copied to S after it, because two stores into one array at offsets LLVM cannot
    tell apart keep the loop from vectorising (several times slower)."""
    row = HEADER_LEN + LAYER_LEN * layer
    hid, ba = u(meta[row + L_HID]), u(meta[row + L_BA])
    g, gh, s, o = G.ravel(), GH.ravel(), S.ravel(), out.ravel()
    gw, sw, ow = u(G.shape[1]), u(S.shape[1]), u(out.shape[1])
    lstm = meta[row + L_KIND] == KIND_LSTM
    c_off, h_off, bb = u(max(meta[row + L_C], 0)), u(meta[row + L_H]), u(max(meta[row + L_BB], 0))
    for b in range(k):
        a, c, h, y = u(b) * gw, u(b) * sw + c_off, u(b) * sw + h_off, u(b) * ow
        if lstm:
            for j in range(hid):                   # gate rows i, f, g, o
                i = sigmoid(g[a + j] + params[ba + j])
                f = sigmoid(g[a + hid + j] + params[ba + hid + j])
                n = tanh(g[a + _2 * hid + j] + params[ba + _2 * hid + j])
                og = sigmoid(g[a + _3 * hid + j] + params[ba + _3 * hid + j])
                cell = f * s[c + j] + i * n         # c' = f * c + i * g
                s[c + j] = cell
                o[y + j] = og * tanh(cell)          # h' = o * tanh(c')
        else:
            for j in range(hid):                   # gate rows r, z, n
                r = sigmoid(g[a + j] + params[ba + j] + gh[a + j] + params[bb + j])
                z = sigmoid(g[a + hid + j] + params[ba + hid + j] + gh[a + hid + j] + params[bb + hid + j])
                m = _2 * hid + j                    # n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
                n = tanh(g[a + m] + params[ba + m] + r * (gh[a + m] + params[bb + m]))
                o[y + j] = (_F1 - z) * n + z * s[h + j]     # h' = (1 - z) * n + z * h
        for j in range(hid):
            s[h + j] = o[y + j]


@inline
def _finish(params, meta, state, rows, ys, work, buf, plan, status, chain):
    """Post chain and heads from HL into ys; commits each stream's S row whose outputs and state
    are all finite, else marks it STATUS_NONFINITE. Returns how many were not committed."""
    k, st, wk = rows.shape[0], state.ravel(), work.ravel()
    width, raw, y_area = u(meta[WORK_WIDTH]), u(meta[W_VC]), u(meta[W_Y])
    n_state, s_at, n_out, hl = u(meta[N_STATE]), u(plan[P_S]), u(meta[N_OUT]), u(plan[P_HL])
    n_last = u(meta[HEADER_LEN + LAYER_LEN * (meta[N_LAYERS] - 1) + L_OUT])
    failed = 0
    for r0 in range(0, k, TILE):
        B = min(TILE, k - r0)
        for b in range(B):
            o, v = hl + u(r0 + b) * n_last, u(b) * width + raw
            for j in range(n_last):
                wk[v + j] = buf[o + j]
        post_and_heads(params, meta, wk, width, raw, B, chain)
        for b in range(B):
            i = r0 + b
            w, y, s = u(b) * width + y_area, u(i) * n_out, s_at + u(i) * n_state
            for j in range(n_out):
                ys[y + j] = wk[w + j]
            if _count_nonfinite(ys, y, n_out) + _count_nonfinite(buf, s, n_state) == 0:
                d = u(rows[i]) * n_state
                for j in range(n_state):
                    st[d + j] = buf[s + j]
                status[i] = STATUS_OK
            else:
                status[i] = STATUS_NONFINITE
                failed += 1
    return failed
