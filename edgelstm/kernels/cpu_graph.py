"""Compiled float32 kernels for the layers around the recurrent core (model/layers.py).

Every function works on a tile of B streams in the flat work buffer `wk`, one row of `width`
floats per stream (layout.py names its areas), reading src and writing dst, never in place.
A chain of layers alternates between the VA and VB areas; an attention score between VC and
VD. Index arithmetic is unsigned for the reasons given in cpu.py.
"""

import math

import numpy as np

from .._numba import inline, kernel
from . import gate_math
from .layout import (
    ACT_CODES,
    O_AUX,
    O_AUX2,
    O_F0,
    O_IN,
    O_KIND,
    O_OUT,
    O_P0,
    O_P1,
    O_P2,
    O_STATE,
    OP_AFFINE,
    OP_ATTENTION,
    OP_CONV,
    OP_LAYER_NORM,
    OP_LEN,
    OP_LINEAR,
    OPS_AT,
    W_NEXT,
    W_PREV,
    W_VA,
    W_VB,
    W_VC,
    W_VD,
)
from .matvec import BIAS, matvec

u = np.uint64
_0, _1, _2 = u(0), u(1), u(2)
_F0, _F1, _HALF = np.float32(0.0), np.float32(1.0), np.float32(0.5)
_SQRT_HALF, _GELU_C = np.float32(math.sqrt(0.5)), np.float32(math.sqrt(2.0 / math.pi))
(RELU, LEAKY_RELU, ELU, TANH, SIGMOID, GELU, GELU_TANH, SILU, SOFTMAX, LOG_SOFTMAX) = (
    ACT_CODES[k] for k in ("relu", "leaky_relu", "elu", "tanh", "sigmoid", "gelu", "gelu_tanh", "silu",
                           "softmax", "log_softmax"))
sigmoid, tanh = gate_math.sigmoid, gate_math.tanh


@inline
def _elementwise(code, alpha, v):
    if code == RELU:
        return max(v, _F0)
    if code == LEAKY_RELU:
        return v if v >= _F0 else alpha * v
    if code == ELU:
        return v if v > _F0 else alpha * (np.float32(math.exp(v)) - _F1)
    if code == TANH:
        return tanh(v)
    if code == SIGMOID:
        return sigmoid(v)
    if code == GELU:
        return _HALF * v * (_F1 + np.float32(math.erf(v * _SQRT_HALF)))
    if code == GELU_TANH:
        return _HALF * v * (_F1 + tanh(_GELU_C * (v + np.float32(0.044715) * v * v * v)))
    return v * sigmoid(v)                       # SILU


@inline
def _activation(code, alpha, n, wk, width, src, dst, B):
    for b in range(B):
        s, d = u(b) * width + src, u(b) * width + dst
        if code == SOFTMAX or code == LOG_SOFTMAX:
            top = wk[s]
            for j in range(n):
                top = max(top, wk[s + j])
            total = _F0
            for j in range(n):
                total += np.float32(math.exp(wk[s + j] - top))
            if code == SOFTMAX:
                for j in range(n):
                    wk[d + j] = np.float32(math.exp(wk[s + j] - top)) / total
            else:
                log_total = np.float32(math.log(total))
                for j in range(n):
                    wk[d + j] = wk[s + j] - top - log_total
        else:
            for j in range(n):
                wk[d + j] = _elementwise(code, alpha, wk[s + j])


@inline
def _affine(params, offset, scale, shift, n, wk, width, src, dst, B):
    for b in range(B):
        s, d = u(b) * width + src, u(b) * width + dst
        for j in range(n):
            wk[d + j] = (wk[s + j] - params[offset + j]) * params[scale + j] + params[shift + j]


@inline
def _layer_norm(params, weight, bias, eps, n, wk, width, src, dst, B):
    for b in range(B):
        s, d = u(b) * width + src, u(b) * width + dst
        mean = _F0
        for j in range(n):
            mean += wk[s + j]
        mean /= np.float32(n)
        var = _F0
        for j in range(n):
            var += (wk[s + j] - mean) * (wk[s + j] - mean)
        inv = _F1 / np.float32(math.sqrt(var / np.float32(n) + eps))
        for j in range(n):
            wk[d + j] = (wk[s + j] - mean) * inv * params[weight + j] + params[bias + j]


@inline
def _apply_plain(params, meta, r, wk, width, src, dst, B):
    """Linear or Affine (row r of the table)."""
    n_in, n_out = u(meta[r + O_IN]), u(meta[r + O_OUT])
    p0, p1 = u(max(meta[r + O_P0], 0)), u(max(meta[r + O_P1], 0))
    if meta[r + O_KIND] == OP_LINEAR:
        matvec(params, p0, n_out, n_in, p1, BIAS, wk, width, src, dst, B)
    else:
        _affine(params, p0, p1, u(meta[r + O_P2]), n_in, wk, width, src, dst, B)


@kernel
def apply_simple(params, meta, r, wk, width, src, dst, B):
    """A stateless layer: Linear, Affine, LayerNorm or an activation (row r of the table)."""
    kind, n_in = meta[r + O_KIND], u(meta[r + O_IN])
    if kind == OP_LINEAR or kind == OP_AFFINE:
        _apply_plain(params, meta, r, wk, width, src, dst, B)
    elif kind == OP_LAYER_NORM:
        _layer_norm(params, u(meta[r + O_P0]), u(meta[r + O_P1]), params[meta[r + O_F0]], n_in,
                    wk, width, src, dst, B)
    else:
        _activation(meta[r + O_AUX], params[meta[r + O_F0]], n_in, wk, width, src, dst, B)


@inline
def _conv(params, meta, r, wk, width, src, dst, B):
    """Causal Conv1d: gather [x_{t-(K-1)d}; ...; x_t] into VD, one product, then shift the
    stream's history (oldest first) by one input."""
    c_in, n_out, k_size, dil = u(meta[r + O_IN]), u(meta[r + O_OUT]), u(meta[r + O_AUX]), u(meta[r + O_AUX2])
    hist = (k_size - _1) * dil
    col, prev, nxt = u(meta[W_VD]), u(meta[W_PREV]) + u(meta[r + O_STATE]), u(meta[W_NEXT]) + u(meta[r + O_STATE])
    for b in range(B):
        base = u(b) * width
        for k in range(k_size):
            back = (k_size - _1 - u(k)) * dil          # how many steps ago this tap looks
            for j in range(c_in):
                if back == _0:
                    wk[base + col + u(k) * c_in + j] = wk[base + src + j]
                else:
                    wk[base + col + u(k) * c_in + j] = wk[base + prev + (hist - back) * c_in + j]
        for t in range(hist - _1):
            for j in range(c_in):
                wk[base + nxt + u(t) * c_in + j] = wk[base + prev + (u(t) + _1) * c_in + j]
        for j in range(c_in):
            wk[base + nxt + (hist - _1) * c_in + j] = wk[base + src + j]
    matvec(params, u(meta[r + O_P0]), n_out, k_size * c_in, u(meta[r + O_P1]), BIAS, wk, width, col, dst, B)


@inline
def _attention(params, meta, r, wk, width, src, dst, B):
    """Online softmax over time: state [m, d, acc]; d == 0 means nothing seen yet."""
    n, ops = u(meta[r + O_IN]), u(meta[OPS_AT])
    first, count = u(meta[r + O_AUX]), u(meta[r + O_AUX2])
    area_c, area_d = u(meta[W_VC]), u(meta[W_VD])
    s_src = src
    for k in range(count):
        s_dst = area_c if s_src != area_c else area_d
        apply_simple(params, meta, ops + (first + u(k)) * u(OP_LEN), wk, width, s_src, s_dst, B)
        s_src = s_dst
    prev, nxt = u(meta[W_PREV]) + u(meta[r + O_STATE]), u(meta[W_NEXT]) + u(meta[r + O_STATE])
    for b in range(B):
        base = u(b) * width
        score, m, d = wk[base + s_src], wk[base + prev], wk[base + prev + _1]
        if d == _F0:
            m_new, keep, take = score, _F0, _F1
        else:
            m_new = max(m, score)
            keep, take = np.float32(math.exp(m - m_new)), np.float32(math.exp(score - m_new))
        d_new = d * keep + take
        wk[base + nxt], wk[base + nxt + _1] = m_new, d_new
        for j in range(n):
            acc = wk[base + prev + _2 + j] * keep + wk[base + src + j] * take
            wk[base + nxt + _2 + j] = acc
            wk[base + dst + j] = acc / d_new


@kernel
def run_chain(params, meta, first, count, wk, width, src, B):
    """Apply table rows first .. first+count-1 to the vector at src; returns the area holding
    the result (src itself when count is 0)."""
    area_a, area_b, ops = u(meta[W_VA]), u(meta[W_VB]), u(meta[OPS_AT])
    for k in range(count):
        dst = area_a if src != area_a else area_b
        r = ops + (u(first) + u(k)) * u(OP_LEN)
        kind = meta[r + O_KIND]
        if kind == OP_CONV:
            _conv(params, meta, r, wk, width, src, dst, B)
        elif kind == OP_ATTENTION:
            _attention(params, meta, r, wk, width, src, dst, B)
        else:
            apply_simple(params, meta, r, wk, width, src, dst, B)
        src = dst
    return src


@kernel
def run_plain_chain(params, meta, first, count, wk, width, src, B):
    """run_chain for a model whose graph layers are all Linear or Affine (layout.plain_graph):
    its kernel tree then leaves out the other layers' code, most of a cold compile."""
    area_a, area_b, ops = u(meta[W_VA]), u(meta[W_VB]), u(meta[OPS_AT])
    for k in range(count):
        dst = area_a if src != area_a else area_b
        _apply_plain(params, meta, ops + (u(first) + u(k)) * u(OP_LEN), wk, width, src, dst, B)
        src = dst
    return src
