"""How a ModelSpec is packed for the kernels: one flat float32 parameter vector plus an int64
table of offsets (`meta`), so a kernel call passes two arrays instead of dozens.

meta = [header (HEADER_LEN)] + [one row of LAYER_LEN per layer]
Matrices keep PyTorch's (outputs, inputs) row-major layout, so each output is a dot product
over a contiguous row. An LSTM layer's W_ih and W_hh are concatenated into one (4H, I + P)
matrix applied to the concatenated vector [input; h_prev]: one pass over the weights.
A stream's state row is [h_0, c_0, h_1, c_1, ...] (c absent for GRU layers).
A work row (one per stream in a tile) is [prev state | next state | cat | gates A | gates B | tmp | y],
where cat holds [layer input; h_prev] of the layer being computed.
"""

from __future__ import annotations

import numpy as np

from ..model.spec import GATES, ModelSpec

# header fields
N_LAYERS, N_IN, N_OUT, N_STATE, IN_MEAN, IN_SCALE, OUT_MEAN, OUT_SCALE = range(8)
HEAD_W, HEAD_B, HEAD_IN, W_PREV, W_NEXT, W_CAT, W_GA, W_GB, W_TMP, W_Y, WORK_WIDTH = range(8, 19)
HEADER_LEN = 20
# per-layer fields (HEAD_W/HEAD_B/L_WHR/L_C/L_WHH are -1 when absent); for LSTM, L_WIH is the
# concatenated (4H, I + P) matrix and L_WHH is unused
L_KIND, L_IN, L_HID, L_OUT, L_WIH, L_WHH, L_BA, L_BB, L_WHR, L_H, L_C = range(11)
LAYER_LEN = 12
KIND_LSTM, KIND_GRU = 0, 1


def pack(spec: ModelSpec) -> tuple[np.ndarray, np.ndarray]:
    """Returns (params float32 (P,), meta int64 (M,)) for the kernels."""
    chunks: list[np.ndarray] = []
    size = 0

    def put(a) -> int:
        nonlocal size
        a = np.ascontiguousarray(a, dtype=np.float32).ravel()
        chunks.append(a)
        size += a.size
        return size - a.size

    meta = np.full(HEADER_LEN + LAYER_LEN * len(spec.layers), -1, dtype=np.int64)
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
            meta[row + L_WIH], meta[row + L_WHH] = put(layer.w_ih), put(layer.w_hh)     # (3H, I), (3H, H)
            # r and z biases can be summed; b_hn must stay inside r * (W_hn h + b_hn).
            b_a = layer.b_ih.astype(np.float64).copy()
            b_a[: 2 * hid] += layer.b_hh[: 2 * hid]
            b_b = np.zeros(n_gates)
            b_b[2 * hid:] = layer.b_hh[2 * hid:]
            meta[row + L_BA], meta[row + L_BB] = put(b_a), put(b_b)
        if layer.w_hr is not None:
            meta[row + L_WHR] = put(layer.w_hr)                               # (P, H)
        h_size, c_size = layer.state_sizes
        meta[row + L_H] = state_off
        if c_size:
            meta[row + L_C] = state_off + h_size
        state_off += h_size + c_size
        widest_gates, widest_hidden = max(widest_gates, n_gates), max(widest_hidden, hid)
        widest_cat = max(widest_cat, layer.input_size + layer.output_size)

    n_in, n_out = spec.input_size, spec.output_size
    in_mean = spec.input_norm.mean if spec.input_norm is not None else np.zeros(n_in)
    in_std = spec.input_norm.std if spec.input_norm is not None else np.ones(n_in)
    out_mean = spec.output_norm.mean if spec.output_norm is not None else np.zeros(n_out)
    out_std = spec.output_norm.std if spec.output_norm is not None else np.ones(n_out)
    meta[N_LAYERS], meta[N_IN], meta[N_OUT], meta[N_STATE] = len(spec.layers), n_in, n_out, state_off
    meta[IN_MEAN], meta[IN_SCALE] = put(in_mean), put(1.0 / in_std.astype(np.float64))
    meta[OUT_MEAN], meta[OUT_SCALE] = put(out_mean), put(out_std)
    if spec.head is not None:
        meta[HEAD_W], meta[HEAD_B] = put(spec.head.weight), put(spec.head.bias)     # (O, H_last)
    meta[HEAD_IN] = spec.layers[-1].output_size
    # work row areas
    meta[W_PREV], meta[W_NEXT], meta[W_CAT] = 0, state_off, 2 * state_off
    meta[W_GA] = meta[W_CAT] + widest_cat
    meta[W_GB] = meta[W_GA] + widest_gates
    meta[W_TMP] = meta[W_GB] + widest_gates
    meta[W_Y] = meta[W_TMP] + widest_hidden
    meta[WORK_WIDTH] = meta[W_Y] + n_out
    params = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    params.flags.writeable = False
    meta.flags.writeable = False
    return params, meta
