"""Many streams' step as matrix products (issue 13): what StreamBank.step runs once a batch holds
at least min_streams(meta) streams, NumPy has an optimised BLAS (blas_is_fast), and the model allows it
(contract.sequence_ok: no projection, no peepholes; layout.stateless_graph: no conv or attention,
whose per-stream state the batch does not carry).

cpu.step walks the streams in tiles of eight, each weight row read once per tile. Here the
batch goes through layer by layer: the k streams' inputs and previous h stand side by side in
one matrix XH (k, I+H), and all k gate vectors are one product G = XH @ [W_ih W_hh]^T (a GRU
keeps W_hn h apart: two products), which np.matmul hands to NumPy's BLAS. Register-blocked
sgemm is what no Numba loop here came near (benchmarks/README.md, "bank.step"). The compiled
kernels around the products (kernels/bank_gemm.py) do what BLAS cannot: the pre chain and the gather of state rows,
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

from .layout import HEADER_LEN, KIND_LSTM, L_HID, L_IN, L_KIND, L_OUT, LAYER_LEN, N_LAYERS, N_STATE

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
        """tw: contract.transposed_weights(meta, params): per layer W_ih^T (I, G) then W_hh^T (H, G),
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
