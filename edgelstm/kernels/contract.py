"""What the engine must know about the kernels without compiling them, importable without
numba (so a process running prebuilt kernels never imports it: kernels/prebuilt.py): the entry
points, scratch sizes, per-stream status codes, which models the layer-wise kernel serves, and
the weights laid out for it.
"""

import numpy as np

from .layout import (
    HEADER_LEN,
    KIND_LSTM,
    L_HID,
    L_IN,
    L_KIND,
    L_OUT,
    L_PEEP,
    L_WHH,
    L_WHR,
    L_WIH,
    LAYER_LEN,
    N_LAYERS,
    matrix,
)

# name: (module in edgelstm.kernels, function)
ENTRIES = {
    "step": ("cpu", "step"),                          # one stream, a sequence, or a bank (tiles)
    "step_graph": ("cpu", "step_graph"),
    "step_sequence": ("sequence", "step_sequence"),   # step_many, layer by layer
    "gather": ("bank_gemm", "gather"),                # a bank as matrix products (kernels/products.py)
    "gather_graph": ("bank_gemm", "gather_graph"),
    "layer_gates": ("bank_gemm", "layer_gates"),
    "finish": ("bank_gemm", "finish"),
    "finish_graph": ("bank_gemm", "finish_graph"),
}

TILE = 8                       # streams per tile of cpu.step; work has TILE rows
STATUS_OK, STATUS_NONFINITE = 0, 2
T_BLOCK = 64                   # steps per block of kernels/sequence.py: seq scratch is T_BLOCK rows
# one step takes cpu.step; the layer-wise kernel is already faster from T = 2 (bench_step.py)
MIN_STEPS = 2


def sequence_ok(meta) -> bool:
    """Whether the layer-wise sequence kernel serves the model: no projection (proj_size) and
    no peepholes (the caller checks plain_graph too)."""
    for k in range(int(meta[N_LAYERS])):
        row = HEADER_LEN + LAYER_LEN * k
        if meta[row + L_WHR] >= 0 or meta[row + L_PEEP] >= 0:
            return False
    return True


def seq_width(meta) -> int:
    """Floats per row of the sequence kernel's scratch: [A | B | G]."""
    vec, gates = 1, 1
    for k in range(int(meta[N_LAYERS])):
        row = HEADER_LEN + LAYER_LEN * k
        vec = max(vec, int(meta[row + L_IN]), int(meta[row + L_OUT]))
        gates = max(gates, (4 if meta[row + L_KIND] == KIND_LSTM else 3) * int(meta[row + L_HID]))
    return 2 * vec + gates


def transposed_weights(meta, params) -> np.ndarray:
    """The layer-wise kernel's weights (also the bank products'): per recurrent layer, in order,
    W_ih^T (I, G) then W_hh^T (H, G) (G = 4H or 3H gate rows), float32 flat, read-only. Built
    from params on first use, so a model that never needs them does not pay their memory."""
    parts = []
    for k in range(int(meta[N_LAYERS])):
        row = HEADER_LEN + LAYER_LEN * k
        n_in, hid, n_out = int(meta[row + L_IN]), int(meta[row + L_HID]), int(meta[row + L_OUT])
        if meta[row + L_KIND] == KIND_LSTM:
            w = matrix(params, meta[row + L_WIH], (4 * hid, n_in + n_out))
            w_ih, w_hh = w[:, :n_in], w[:, n_in:]
        else:
            w_ih = matrix(params, meta[row + L_WIH], (3 * hid, n_in))
            w_hh = matrix(params, meta[row + L_WHH], (3 * hid, hid))
        parts += [w_ih.T.ravel(), w_hh.T.ravel()]
    tw = np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)
    tw.flags.writeable = False
    return tw
