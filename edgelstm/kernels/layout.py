"""How a ModelSpec is packed for the kernels: one flat float32 parameter vector plus an int64
table of offsets (`meta`), so a kernel call passes two arrays instead of dozens.

meta = [header (HEADER_LEN)] + [one row of LAYER_LEN per recurrent layer]
       + [one row of HEAD_LEN per head] + [one row of OP_LEN per layer of the graph]
The graph's layers (layers.py) are rows of one table: pre, post, each head's, then each
attention pool's score layers; a chain is (first row, count).
Matrices keep PyTorch's (outputs, inputs) row-major layout, so each output is a dot product
over a contiguous row. An LSTM layer's W_ih and W_hh are concatenated into one (4H, I + P)
matrix applied to the concatenated vector [input; h_prev]: one pass over the weights.
A stream's state row is [h_0, c_0, h_1, c_1, ...] (c absent for GRU layers).
A stream's state row is [h_0, c_0, h_1, c_1, ...] (c absent for GRU layers), then each
stateful graph layer's own (a causal convolution's past inputs, an attention pool's m, d, acc).
A work row (one per stream in a tile) is
  [prev state | next state | cat | gates A | gates B | tmp | y | VA | VB | VC | VD | trunk]
where cat holds [layer input; h_prev] of the layer being computed, VA/VB are the ping-pong
vectors of a chain of graph layers, VC/VD those of an attention score (VC also takes the raw
input, VD a convolution's [x_{t-(K-1)d}; ...; x_t]), and trunk keeps post's output for the heads.
The header's IN_*/OUT_*/HEAD_* fields describe the classic graph (normalise, stack, Linear,
de-normalise) for the CUDA kernel; they are -1 for any other graph.
"""

from __future__ import annotations

import numpy as np

from ..model import layers as L
from ..model.layers import ACTIVATIONS
from ..model.spec import GATES, ModelSpec

# header fields
N_LAYERS, N_IN, N_OUT, N_STATE, IN_MEAN, IN_SCALE, OUT_MEAN, OUT_SCALE = range(8)
HEAD_W, HEAD_B, HEAD_IN, W_PREV, W_NEXT, W_CAT, W_GA, W_GB, W_TMP, W_Y, WORK_WIDTH = range(8, 19)
PRE_FIRST, PRE_COUNT, POST_FIRST, POST_COUNT, HEADS_AT, N_HEADS, OPS_AT = range(19, 26)
W_VA, W_VB, W_VC, W_VD, W_TRUNK, N_TRUNK = range(26, 32)
HEADER_LEN = 32
# per-layer fields (HEAD_W/HEAD_B/L_WHR/L_C/L_WHH are -1 when absent); for LSTM, L_WIH is the
# concatenated (4H, I + P) matrix and L_WHH is unused
L_KIND, L_IN, L_HID, L_OUT, L_WIH, L_WHH, L_BA, L_BB, L_WHR, L_H, L_C, L_PEEP = range(12)
LAYER_LEN = 12
KIND_LSTM, KIND_GRU = 0, 1
# per-head fields: its chain, and where its output goes in y
H_FIRST, H_COUNT, H_Y, H_SIZE = range(4)
HEAD_LEN = 4
# per graph-layer fields. P0/P1/P2: params offsets of its arrays (-1 if none); STATE: offset
# in the state row (-1 if none); AUX/AUX2: per kind, see below; F0: params offset of a float.
O_KIND, O_IN, O_OUT, O_P0, O_P1, O_P2, O_STATE, O_AUX, O_AUX2, O_F0 = range(10)
OP_LEN = 10
#   LINEAR      P0 weight (O, I), P1 bias
#   AFFINE      P0 offset, P1 scale, P2 shift
#   LAYER_NORM  P0 weight, P1 bias, F0 eps
#   ACTIVATION  AUX activation code (ACT_*), F0 alpha
#   CONV        P0 weight (O, K * C_in) tap-major, P1 bias, AUX K, AUX2 dilation
#   ATTENTION   AUX first score row, AUX2 score row count
OP_LINEAR, OP_AFFINE, OP_LAYER_NORM, OP_ACTIVATION, OP_CONV, OP_ATTENTION = range(6)
ACT_CODES = {name: code for code, name in enumerate(ACTIVATIONS)}


class _Packer:
    """Appends float32 arrays to one parameter vector, returning each one's offset."""

    def __init__(self) -> None:
        self.chunks: list[np.ndarray] = []
        self.size = 0

    def put(self, a) -> int:
        a = np.ascontiguousarray(a, dtype=np.float32).ravel()
        self.chunks.append(a)
        self.size += a.size
        return self.size - a.size

    def params(self) -> np.ndarray:
        params = np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.float32)
        params.flags.writeable = False
        return params


def _recurrent_rows(spec: ModelSpec, meta: np.ndarray, packer: _Packer) -> dict:
    """Fills the layer rows; returns the widths the work row needs and the state used."""
    put = packer.put
    state_off, widest_gates, widest_hidden, widest_cat = 0, 1, 1, 1
    for k, layer in enumerate(spec.layers):
        row = HEADER_LEN + LAYER_LEN * k
        hid, n_gates = layer.hidden_size, GATES[layer.kind] * layer.hidden_size
        meta[row + L_KIND] = KIND_LSTM if layer.kind == "lstm" else KIND_GRU
        meta[row + L_IN], meta[row + L_HID], meta[row + L_OUT] = layer.input_size, hid, layer.output_size
        if layer.kind == "lstm":
            meta[row + L_WIH] = put(np.concatenate([layer.w_ih, layer.w_hh], axis=1))  # (4H, I+P)
            meta[row + L_BA] = put(layer.b_ih.astype(np.float64) + layer.b_hh)         # summed once
        else:
            meta[row + L_WIH], meta[row + L_WHH] = put(layer.w_ih), put(layer.w_hh)  # (3H, I), (3H, H)
            # r and z biases can be summed; b_hn must stay inside r * (W_hn h + b_hn).
            b_a = layer.b_ih.astype(np.float64).copy()
            b_a[: 2 * hid] += layer.b_hh[: 2 * hid]
            b_b = np.zeros(n_gates)
            b_b[2 * hid:] = layer.b_hh[2 * hid:]
            meta[row + L_BA], meta[row + L_BB] = put(b_a), put(b_b)
        if layer.w_hr is not None:
            meta[row + L_WHR] = put(layer.w_hr)                        # (P, H)
        if layer.w_peep is not None:
            meta[row + L_PEEP] = put(layer.w_peep)                            # (3, H) rows i, f, o
        h_size, c_size = layer.state_sizes
        meta[row + L_H] = state_off
        if c_size:
            meta[row + L_C] = state_off + h_size
        state_off += h_size + c_size
        widest_gates, widest_hidden = max(widest_gates, n_gates), max(widest_hidden, hid)
        widest_cat = max(widest_cat, layer.input_size + layer.output_size)
    return dict(state=state_off, gates=widest_gates, hidden=widest_hidden, cat=widest_cat)


def _flatten(spec: ModelSpec) -> tuple[list, list]:
    """(graph layers in table order, [(first, count) of pre, post, each head]); attention
    score layers are appended after every chain."""
    rows: list = []
    spans: list[tuple[int, int]] = []
    for _, chain in spec.chains():
        spans.append((len(rows), len(chain)))
        rows.extend(chain)
    k = 0
    while k < len(rows):
        if isinstance(rows[k], L.AttentionPool):
            rows.extend(rows[k].score)
        k += 1
    return rows, spans


def _op_rows(rows: list, meta: np.ndarray, at: int, packer: _Packer, state_off: int) -> tuple[int, int]:
    """Fills the graph-layer rows from meta[at]; returns (state used up to, widest vector)."""
    put = packer.put
    widest, score_at = 1, len(rows)
    score_seen = sum(len(x.score) for x in rows if isinstance(x, L.AttentionPool))
    score_at -= score_seen
    for k, layer in enumerate(rows):
        r = at + OP_LEN * k
        meta[r + O_IN], meta[r + O_OUT] = layer.in_size, layer.out_size
        widest = max(widest, layer.in_size, layer.out_size)
        if isinstance(layer, L.Linear):
            meta[r + O_KIND], meta[r + O_P0], meta[r + O_P1] = OP_LINEAR, put(layer.weight), put(layer.bias)
        elif isinstance(layer, L.Affine):
            meta[r + O_KIND] = OP_AFFINE
            meta[r + O_P0], meta[r + O_P1], meta[r + O_P2] = put(layer.offset), put(layer.scale), put(layer.shift)
        elif isinstance(layer, L.LayerNorm):
            meta[r + O_KIND], meta[r + O_P0], meta[r + O_P1] = OP_LAYER_NORM, put(layer.weight), put(layer.bias)
            meta[r + O_F0] = put([layer.eps])
        elif isinstance(layer, L.Activation):
            meta[r + O_KIND], meta[r + O_AUX], meta[r + O_F0] = OP_ACTIVATION, ACT_CODES[layer.kind], put([layer.alpha])
        elif isinstance(layer, L.CausalConv1d):
            meta[r + O_KIND] = OP_CONV
            meta[r + O_P0] = put(np.transpose(layer.weight, (0, 2, 1)))     # (O, K, C_in)
            meta[r + O_P1], meta[r + O_AUX], meta[r + O_AUX2] = put(layer.bias), layer.kernel_size, layer.dilation
            meta[r + O_STATE] = state_off
            state_off += layer.state_size
            widest = max(widest, layer.kernel_size * layer.in_size)
        else:
            meta[r + O_KIND], meta[r + O_AUX], meta[r + O_AUX2] = OP_ATTENTION, score_at, len(layer.score)
            meta[r + O_STATE] = state_off
            state_off += layer.state_size
            score_at += len(layer.score)
    return state_off, widest


def matrix(params: np.ndarray, offset, shape: tuple[int, int]) -> np.ndarray:
    """The (rows, cols) matrix packed at params[offset] (a view)."""
    n, at = shape[0] * shape[1], int(offset)
    return params[at:at + n].reshape(shape)


def plain_graph(meta: np.ndarray) -> bool:
    """Whether every graph layer is Linear or Affine: such a model runs on cpu.step, whose
    kernel tree (and so its cold compile) leaves out every other layer kind."""
    kinds = meta[int(meta[OPS_AT]) + O_KIND::OP_LEN]
    return bool(np.isin(kinds, (OP_LINEAR, OP_AFFINE)).all())


def stateless_graph(meta: np.ndarray) -> bool:
    """Whether no graph layer keeps per-stream state (a causal conv's ring, attention's running
    sums): such layers can run on a batch without the stream's state rows (kernels/bank_gemm.py)."""
    kinds = meta[int(meta[OPS_AT]) + O_KIND::OP_LEN]
    return bool(np.isin(kinds, (OP_LINEAR, OP_AFFINE, OP_LAYER_NORM, OP_ACTIVATION)).all())


def pack(spec: ModelSpec) -> tuple[np.ndarray, np.ndarray]:
    """Returns (params float32 (P,), meta int64 (M,)) for the kernels."""
    packer = _Packer()
    put = packer.put
    rows, spans = _flatten(spec)
    heads_at = HEADER_LEN + LAYER_LEN * len(spec.layers)
    ops_at = heads_at + HEAD_LEN * len(spec.heads)
    meta = np.full(ops_at + OP_LEN * len(rows), -1, dtype=np.int64)
    widths = _recurrent_rows(spec, meta, packer)
    state_off, widest = _op_rows(rows, meta, ops_at, packer, widths["state"])
    (pre_first, pre_count), (post_first, post_count) = spans[:2]
    meta[PRE_FIRST], meta[PRE_COUNT], meta[POST_FIRST], meta[POST_COUNT] = pre_first, pre_count, post_first, post_count
    meta[HEADS_AT], meta[N_HEADS], meta[OPS_AT] = heads_at, len(spec.heads), ops_at
    for k, ((first, count), (_, y0, size)) in enumerate(zip(spans[2:], spec.outputs)):
        row = heads_at + HEAD_LEN * k
        meta[row + H_FIRST], meta[row + H_COUNT], meta[row + H_Y], meta[row + H_SIZE] = first, count, y0, size
    n_in, n_out = spec.input_size, spec.output_size
    meta[N_LAYERS], meta[N_IN], meta[N_OUT], meta[N_STATE] = len(spec.layers), n_in, n_out, state_off
    meta[N_TRUNK] = spec.trunk_size
    classic = spec.classic_parts()
    if classic is not None:
        norm, head, denorm = classic
        rec_in, rec_out = spec.layers[0].input_size, (head.out_size if head else spec.layers[-1].output_size)
        meta[IN_MEAN] = put(norm.offset if norm else np.zeros(rec_in))
        meta[IN_SCALE] = put(norm.scale if norm else np.ones(rec_in))
        meta[OUT_MEAN] = put(denorm.shift if denorm else np.zeros(rec_out))
        meta[OUT_SCALE] = put(denorm.scale if denorm else np.ones(rec_out))
        if head is not None:
            meta[HEAD_W], meta[HEAD_B] = put(head.weight), put(head.bias)     # (O, H_last)
    meta[HEAD_IN] = spec.layers[-1].output_size
    widest = max(widest, n_in, n_out, spec.trunk_size, spec.layers[-1].output_size)
    # work row areas
    meta[W_PREV], meta[W_NEXT], meta[W_CAT] = 0, state_off, 2 * state_off
    meta[W_GA] = meta[W_CAT] + widths["cat"]
    meta[W_GB] = meta[W_GA] + widths["gates"]
    meta[W_TMP] = meta[W_GB] + widths["gates"]
    meta[W_Y] = meta[W_TMP] + widths["hidden"]
    for k, area in enumerate((W_VA, W_VB, W_VC, W_VD, W_TRUNK)):
        meta[area] = meta[W_Y] + n_out + k * widest
    meta[WORK_WIDTH] = meta[W_TRUNK] + widest
    meta.flags.writeable = False
    return packer.params(), meta
