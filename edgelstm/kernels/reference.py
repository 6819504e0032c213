"""The plain NumPy oracle: one step of the model, written as the equations read.

Every compiled kernel is tested against this. It allocates freely and is slow on purpose.
State is a list of (h, c) per recurrent layer (c is None for GRU layers), then one entry per
stateful layer of the graph in the order of ModelSpec.chains(): a CausalConv1d's (history, C_in)
past inputs, oldest first; an AttentionPool's (m, d, acc).
"""

from __future__ import annotations

import math

import numpy as np

from ..model import layers as L
from ..model.spec import ModelSpec, RecurrentLayer


def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def _caster(dtype):
    return lambda a: a.astype(dtype)


def zero_state(spec: ModelSpec, dtype=np.float64) -> list:
    state: list = [
        (np.zeros(layer.output_size, dtype), np.zeros(layer.hidden_size, dtype) if layer.kind == "lstm" else None)
        for layer in spec.layers
    ]
    for _, chain in spec.chains():
        for layer in chain:
            if isinstance(layer, L.CausalConv1d):
                state.append(np.zeros((layer.history, layer.in_size), dtype))
            elif isinstance(layer, L.AttentionPool):
                state.append((np.zeros((), dtype), np.zeros((), dtype),
                              np.zeros(layer.in_size, dtype)))
    return state


_ERF = np.vectorize(math.erf, otypes=[np.float64])


def activation(kind: str, alpha: float, v):
    if kind == "relu":
        return np.maximum(v, 0)
    if kind == "leaky_relu":
        return np.where(v >= 0, v, alpha * v)
    if kind == "elu":
        return np.where(v > 0, v, alpha * np.expm1(np.minimum(v, 0)))
    if kind == "tanh":
        return np.tanh(v)
    if kind == "sigmoid":
        return _sigmoid(v)
    if kind == "gelu":
        return 0.5 * v * (1 + _ERF(v / np.sqrt(2)).astype(v.dtype))
    if kind == "gelu_tanh":
        return 0.5 * v * (1 + np.tanh(np.sqrt(2 / np.pi) * (v + 0.044715 * v ** 3)))
    if kind == "silu":
        return v * _sigmoid(v)
    shifted = v - v.max()
    if kind == "softmax":
        e = np.exp(shifted)
        return e / e.sum()
    return shifted - np.log(np.exp(shifted).sum())       # log_softmax


def apply(layer, v, state, dtype):
    """(layer(v), its next state); state is None for a layer without one."""
    w = _caster(dtype)
    if isinstance(layer, L.Linear):
        return w(layer.weight) @ v + w(layer.bias), None
    if isinstance(layer, L.Affine):
        return (v - w(layer.offset)) * w(layer.scale) + w(layer.shift), None
    if isinstance(layer, L.LayerNorm):
        mean = v.mean()
        var = ((v - mean) ** 2).mean()
        return (v - mean) / np.sqrt(var + layer.eps) * w(layer.weight) + w(layer.bias), None
    if isinstance(layer, L.Activation):
        return activation(layer.kind, layer.alpha, v), None
    if isinstance(layer, L.CausalConv1d):
        past = np.concatenate([state, v[None, :]])           # (history + 1, C_in), oldest first
        taps = past[::-1][::layer.dilation][::-1]             # (K, C_in): x[t - (K-1-k) d]
        out = np.einsum("oik,ki->o", w(layer.weight), taps) + w(layer.bias)
        return out, past[1:]
    m, d, acc = state                                         # AttentionPool, online softmax
    s = v
    for score_layer in layer.score:
        s, _ = apply(score_layer, s, None, dtype)
    s = s[0]
    if d == 0:
        return v.copy(), (s, np.ones((), dtype), v.copy())
    m_new = max(m, s)
    a, b = np.exp(m - m_new), np.exp(s - m_new)
    d_new, acc_new = d * a + b, acc * a + v * b
    return acc_new / d_new, (m_new, d_new, acc_new)


def _chain(chain, v, states, dtype):
    """Apply `chain`, taking each stateful layer's state from `states` (an iterator) into a list."""
    new = []
    for layer in chain:
        v, st = apply(layer, v, next(states) if isinstance(layer, L.STATEFUL) else None, dtype)
        if st is not None:
            new.append(st)
    return v, new


def lstm_layer(layer: RecurrentLayer, x, h, c, dtype):
    w = _caster(dtype)
    gates = w(layer.w_ih) @ x + w(layer.b_ih) + w(layer.w_hh) @ h + w(layer.b_hh)   # (4H,)
    i, f, g, o = np.split(gates, 4)
    if layer.w_peep is not None:             # i and f see the old cell, o the new one
        p_i, p_f, p_o = w(layer.w_peep)
        i, f = i + p_i * c, f + p_f * c
    c_new = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
    if layer.w_peep is not None:
        o = o + p_o * c_new
    h_new = _sigmoid(o) * np.tanh(c_new)
    if layer.w_hr is not None:
        h_new = w(layer.w_hr) @ h_new
    return h_new, c_new


def gru_layer(layer: RecurrentLayer, x, h, dtype):
    w = _caster(dtype)
    gi = w(layer.w_ih) @ x + w(layer.b_ih)      # (3H,)
    gh = w(layer.w_hh) @ h + w(layer.b_hh)      # (3H,) b_hn stays inside r * (...)
    i_r, i_z, i_n = np.split(gi, 3)
    h_r, h_z, h_n = np.split(gh, 3)
    r, z = _sigmoid(i_r + h_r), _sigmoid(i_z + h_z)
    n = np.tanh(i_n + r * h_n)
    return (1 - z) * n + z * h


def step(spec: ModelSpec, state: list, x, dtype=np.float64):
    """One step: returns (y, new_state); `state` is not modified."""
    n = len(spec.layers)
    extra = iter(state[n:])
    v, new_extra = _chain(spec.pre, np.asarray(x, dtype), extra, dtype)
    new_state: list = []
    for layer, (h, c) in zip(spec.layers, state[:n]):
        if layer.kind == "lstm":
            h, c = lstm_layer(layer, v, h, c, dtype)
        else:
            h = gru_layer(layer, v, h, dtype)
        new_state.append((h, c))
        v = h
    v, more = _chain(spec.post, v, extra, dtype)
    new_extra += more
    if spec.heads:
        outs = []
        for head in spec.heads:
            out, more = _chain(head.layers, v, extra, dtype)
            outs.append(out)
            new_extra += more
        v = np.concatenate(outs)
    return v, new_state + new_extra


def run(spec: ModelSpec, xs, dtype=np.float64, state=None):
    """Stream a (T, I) sequence from `state` (zero by default): returns (Y (T, O), final state)."""
    state = zero_state(spec, dtype) if state is None else state
    ys = []
    for x in xs:
        y, state = step(spec, state, x, dtype)
        ys.append(y)
    return np.array(ys), state
