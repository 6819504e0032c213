"""Many streams' step as matrix products (issue 13): what StreamBank.step runs once a batch holds
at least min_streams(meta) streams, NumPy has an optimised BLAS (blas_is_fast), and the model allows it
(sequence.sequence_ok: no projection, no peepholes; layout.stateless_graph: no conv or attention,
whose per-stream state the batch does not carry).

cpu.step walks the streams in tiles of eight, each weight row read once per tile. Here the
batch goes through layer by layer: the k streams' inputs and previous h stand side by side in
one matrix XH (k, I+H), and all k gate vectors are one product G = XH @ [W_ih W_hh]^T (a GRU
keeps W_hn h apart: two products), which np.matmul hands to NumPy's BLAS. Register-blocked
sgemm is what no Numba loop here came near (benchmarks/README.md, "bank.step"). The compiled
kernels around the products do what BLAS cannot: the pre chain and the gather of state rows,
the gate math, the post chain and heads, and the commit (a stream whose result is not finite
keeps its state, as in cpu.step). The summation order is BLAS's, so results match cpu.step's
to ~1e-6, not bit for bit.

A bank's buffers are one flat float32 array `buf`, capacity rows per region; `plan` (int64)
holds each region's offset and row width:
  S    (cap, n_state)   every stream's next state, committed at the end       plan[P_S]
  HL   (cap, H_last)    the last layer's h, the post chain's input           plan[P_HL]
  per layer l, from LAYERS_AT + PLAN_LEN * l:
  XH_l (cap, I_l + H_l) the layer's input x, then h_prev                      P_XH, P_XHW
  G_l  (cap, G_l)       its gates (G = 4H or 3H)                              P_G, P_GW
  GH_l (cap, 3H)        a GRU's W_hh h_prev, apart because r multiplies it    P_GH
Nothing is allocated per step by the kernels; the products write into their `out` views.
"""

from __future__ import annotations

import numpy as np

from .._numba import compiled_for, inline, kernel
from . import gate_math
from .cpu import STATUS_NONFINITE, STATUS_OK, TILE, _count_nonfinite, _first_nonfinite_row, post_and_heads
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

# Below this much work per call cpu.step's tiles win: the products' fixed cost (a few NumPy
# calls) is then a large share. Measured crossover: benchmarks/README.md, "bank.step".
MIN_FLOP_PER_CALL = 300_000
MIN_STREAMS = 8
P_S, P_HL = 0, 1
LAYERS_AT = 2
P_XH, P_XHW, P_G, P_GW, P_GH = range(5)
PLAN_LEN = 5
# NumPy builds whose matmul is an optimised sgemm; with another BLAS (the reference one) cpu.step stays
_FAST_BLAS = ("openblas", "mkl", "accelerate", "blis", "armpl")

sigmoid, tanh = gate_math.sigmoid, gate_math.tanh
u = np.uint64
_2, _3 = u(2), u(3)
_F1 = np.float32(1.0)


def min_streams(meta: np.ndarray) -> int:
    """The smallest batch that takes the products for this model (MIN_FLOP_PER_CALL of gate rows)."""
    flop = 0
    for k in range(int(meta[N_LAYERS])):
        row = HEADER_LEN + LAYER_LEN * k
        gates = (4 if meta[row + L_KIND] == KIND_LSTM else 3) * int(meta[row + L_HID])
        flop += 2 * gates * int(meta[row + L_IN] + meta[row + L_HID])
    return max(MIN_STREAMS, -(-MIN_FLOP_PER_CALL // max(flop, 1)))


def blas_name() -> str:
    """The BLAS NumPy was built with, as numpy.show_config names it ("" if it does not say)."""
    try:
        return str(np.show_config(mode="dicts")["Build Dependencies"]["blas"]["name"])
    except (KeyError, TypeError, AttributeError):
        return ""


def blas_is_fast() -> bool:
    name = blas_name().lower()
    return any(fast in name for fast in _FAST_BLAS)


class GemmBank:
    """One bank's buffers and the products' weight views; step() is cpu.step's bank case."""

    def __init__(self, meta: np.ndarray, tw: np.ndarray, capacity: int):
        """tw: sequence.transposed_weights(meta, params): per layer W_ih^T (I, G) then W_hh^T (H, G),
        which for an LSTM is [W_ih W_hh]^T (I+H, G) row-major as it stands."""
        n_layers = int(meta[N_LAYERS])
        self.plan = np.zeros(LAYERS_AT + PLAN_LEN * n_layers, np.int64)
        sizes = []
        at, w_at = 0, 0

        def region(width: int) -> int:
            nonlocal at
            at += capacity * width
            return at - capacity * width

        self.plan[P_S] = region(int(meta[N_STATE]))
        for k in range(n_layers):
            row, p = HEADER_LEN + LAYER_LEN * k, LAYERS_AT + PLAN_LEN * k
            n_in, hid = int(meta[row + L_IN]), int(meta[row + L_HID])
            lstm = meta[row + L_KIND] == KIND_LSTM
            n_g = (4 if lstm else 3) * hid
            self.plan[p + P_XH], self.plan[p + P_XHW] = region(n_in + hid), n_in + hid
            self.plan[p + P_G], self.plan[p + P_GW] = region(n_g), n_g
            self.plan[p + P_GH] = -1 if lstm else region(n_g)
            sizes.append((bool(lstm), n_in, hid, n_g, w_at))
            w_at += (n_in + hid) * n_g
        last = HEADER_LEN + LAYER_LEN * (n_layers - 1)
        self.plan[P_HL] = region(int(meta[last + L_OUT]))
        self.plan.flags.writeable = False
        self.buf = np.zeros(at, np.float32)
        self.layers = []
        for k, (lstm, n_in, hid, n_g, w) in enumerate(sizes):
            p = LAYERS_AT + PLAN_LEN * k
            xh = self._view(self.plan[p + P_XH], capacity, n_in + hid)
            g = self._view(self.plan[p + P_G], capacity, n_g)
            wt = tw[w:w + (n_in + hid) * n_g].reshape(n_in + hid, n_g)
            gh = None if lstm else self._view(self.plan[p + P_GH], capacity, n_g)
            self.layers.append((lstm, n_in, xh, g, g if gh is None else gh, wt))
        self.state = self._view(self.plan[P_S], capacity, int(meta[N_STATE]))
        self.outs = [xh for _, _, xh, _, _, _ in self.layers[1:]]
        self.outs.append(self._view(self.plan[P_HL], capacity, int(meta[last + L_OUT])))

    def _view(self, offset, rows: int, width: int) -> np.ndarray:
        return self.buf[int(offset):int(offset) + rows * width].reshape(rows, width)

    def step(self, kernels, params, meta, state, rows, xs, ys, work, status) -> int:
        """As cpu.step for k = len(rows) streams (same arguments, same return value)."""
        gather, layer_gates, finish = kernels
        k = rows.shape[0]
        rc = gather(params, meta, state, rows, xs, work, self.buf, self.plan)
        if rc < 0:
            return rc
        for layer, (lstm, n_in, xh, g, gh, wt) in enumerate(self.layers):
            if lstm:
                np.matmul(xh[:k], wt, out=g[:k])
            else:
                np.matmul(xh[:k, :n_in], wt[:n_in], out=g[:k])
                np.matmul(xh[:k, n_in:], wt[n_in:], out=gh[:k])
            layer_gates(params, meta, layer, g, gh, self.state, self.outs[layer], k)
        return finish(params, meta, state, rows, ys, work, self.buf, self.plan, status)


def compile_kernels(params, meta, state, work, status, plain: bool):
    """The three kernels' entry points for these argument types (compiled or loaded from the cache);
    plain: the model's graph layers are all Linear or Affine (layout.plain_graph)."""
    buf, plan = np.zeros(1, np.float32), np.zeros(1, np.int64)
    plan.flags.writeable = False
    rows, flat, rect = np.zeros(1, np.int64), np.zeros(1, np.float32), np.zeros((1, 1), np.float32)
    first, gates, last = dispatchers(plain)
    return (compiled_for(first, params, meta, state, rows, flat, work, buf, plan),
            compiled_for(gates, params, meta, 0, rect, rect, rect, rect, 0),
            compiled_for(last, params, meta, state, rows, flat, work, buf, plan, status))


def dispatchers(plain: bool) -> tuple:
    """The dispatchers of the three kernels compile_kernels compiles: gather, layer_gates, finish."""
    return (gather if plain else gather_graph), layer_gates, (finish if plain else finish_graph)


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
