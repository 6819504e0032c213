"""The one matrix-vector product every CPU kernel uses, over a tile of streams."""

import numpy as np

from .._numba import kernel

u = np.uint64
_0, _1, _2, _3, _4 = u(0), u(1), u(2), u(3), u(4)
_F0 = np.float32(0.0)
# has_bias values. NumPy booleans, not True/False: numba would compile matvec (and every
# helper passing the flag through) once per literal value.
BIAS, NO_BIAS = np.bool_(True), np.bool_(False)


@kernel
def matvec(params, w_off, n_rows, n_cols, bias_off, has_bias, wk, width, src, dst, B):
    """For each stream b < B of the tile: wk[b*width + dst + j] = W[j] . wk[b*width + src : + n_cols]
    (+ bias[j]), where W = params[w_off:] is (n_rows, n_cols) row-major.

    Four weight rows at a time: they stay in L1 while every stream of the tile uses them, and
    the k loop vectorises into four independent accumulators."""
    j = _0
    while j + _4 <= n_rows:
        r0 = w_off + j * n_cols
        r1, r2, r3 = r0 + n_cols, r0 + _2 * n_cols, r0 + _3 * n_cols
        for b in range(B):
            v = u(b) * width + src
            a0 = a1 = a2 = a3 = _F0
            for k in range(n_cols):
                s = wk[v + k]
                a0 += params[r0 + k] * s
                a1 += params[r1 + k] * s
                a2 += params[r2 + k] * s
                a3 += params[r3 + k] * s
            o = u(b) * width + dst + j
            wk[o], wk[o + _1], wk[o + _2], wk[o + _3] = a0, a1, a2, a3
        j += _4
    while j < n_rows:
        r0 = w_off + j * n_cols
        for b in range(B):
            v = u(b) * width + src
            a0 = _F0
            for k in range(n_cols):
                a0 += params[r0 + k] * wk[v + k]
            wk[u(b) * width + dst + j] = a0
        j += _1
    if has_bias:
        for b in range(B):
            o = u(b) * width + dst
            for j in range(n_rows):
                wk[o + j] += params[bias_off + j]
