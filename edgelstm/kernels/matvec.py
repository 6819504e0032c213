"""The one matrix-vector product every CPU kernel uses, over a tile of streams.

A model converted with float16 weights (layout.pack, WEIGHTS_HALF) stores its matrices as
IEEE half floats, two to a float32 slot of params: half the bytes to read per step, and the
math stays float32 (each weight widened as it is loaded: one instruction on CPUs with F16C or
on ARMv8).
"""

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

from .._numba import FASTMATH, kernel

u = np.uint64
_0, _1, _2, _3, _4 = u(0), u(1), u(2), u(3), u(4)
_F0 = np.float32(0.0)
# has_bias values. NumPy booleans, not True/False: numba would compile matvec (and every
# helper passing the flag through) once per literal value.
BIAS, NO_BIAS = np.bool_(True), np.bool_(False)


@intrinsic
def half_to_float(typingctx, bits):
    """float32 of the IEEE half float whose bits are `bits` (uint16): exact for every value."""
    if bits != types.uint16:
        return None

    def codegen(context, builder, signature, args):
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())
    return types.float32(types.uint16), codegen


def widen(w):
    """A weight as float32: itself, or the half float whose bits a uint16 holds (compiled code only)."""
    raise NotImplementedError("widen runs inside compiled kernels only")


@overload(widen, jit_options={"fastmath": FASTMATH})
def _widen(w):
    if w == types.uint16:
        return lambda w: half_to_float(w)
    return lambda w: w


@kernel
def matvec(params, w_off, n_rows, n_cols, bias_off, has_bias, wk, width, src, dst, B, half):
    """For each stream b < B of the tile: wk[b*width + dst + j] = W[j] . wk[b*width + src : + n_cols]
    (+ bias[j]), where W = params[w_off:] is (n_rows, n_cols) row-major, float32, or with
    half (a NumPy bool, not a literal) float16 packed from params[w_off] on (the bias stays float32).

    Four weight rows at a time: they stay in L1 while every stream of the tile uses them, and
    the k loop vectorises into four independent accumulators."""
    if half:
        _matvec_rows(params.view(np.uint16), _2 * w_off, n_rows, n_cols, wk, width, src, dst, B)
    else:
        _matvec_rows(params, w_off, n_rows, n_cols, wk, width, src, dst, B)
    if has_bias:
        for b in range(B):
            o = u(b) * width + dst
            for j in range(n_rows):
                wk[o + j] += params[bias_off + j]


@kernel
def _matvec_rows(W, w_off, n_rows, n_cols, wk, width, src, dst, B):
    """wk[b*width + dst + j] = W[j] . wk[b*width + src:] for W = W[w_off:] (n_rows, n_cols),
    float32 values or float16 bits (W's dtype picks `widen`: one compile for each)."""
    j = _0
    while j + _4 <= n_rows:
        r0 = w_off + j * n_cols
        r1, r2, r3 = r0 + n_cols, r0 + _2 * n_cols, r0 + _3 * n_cols
        for b in range(B):
            v = u(b) * width + src
            a0 = a1 = a2 = a3 = _F0
            for k in range(n_cols):
                s = wk[v + k]
                a0 += widen(W[r0 + k]) * s
                a1 += widen(W[r1 + k]) * s
                a2 += widen(W[r2 + k]) * s
                a3 += widen(W[r3 + k]) * s
            o = u(b) * width + dst + j
            wk[o], wk[o + _1], wk[o + _2], wk[o + _3] = a0, a1, a2, a3
        j += _4
    while j < n_rows:
        r0 = w_off + j * n_cols
        for b in range(B):
            v = u(b) * width + src
            a0 = _F0
            for k in range(n_cols):
                a0 += widen(W[r0 + k]) * wk[v + k]
            wk[u(b) * width + dst + j] = a0
        j += _1
