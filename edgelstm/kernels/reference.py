"""The plain NumPy oracle: one step of the model, written as the equations read.

Every compiled kernel is tested against this. It allocates freely and is slow on purpose.
State is a list of (h, c) per layer; c is None for GRU layers.
"""

from __future__ import annotations

import numpy as np

from ..model.spec import ModelSpec, RecurrentLayer


def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def _caster(dtype):
    return lambda a: a.astype(dtype)


def zero_state(spec: ModelSpec, dtype=np.float64) -> list:
    return [
        (np.zeros(layer.output_size, dtype), np.zeros(layer.hidden_size, dtype) if layer.kind == "lstm" else None)
        for layer in spec.layers
    ]


def lstm_layer(layer: RecurrentLayer, x, h, c, dtype):
    w = _caster(dtype)
    gates = w(layer.w_ih) @ x + w(layer.b_ih) + w(layer.w_hh) @ h + w(layer.b_hh)   # (4H,)
    i, f, g, o = np.split(gates, 4)
    c_new = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
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
    v = np.asarray(x, dtype)
    if spec.input_norm is not None:
        v = (v - spec.input_norm.mean.astype(dtype)) / spec.input_norm.std.astype(dtype)
    new_state = []
    for layer, (h, c) in zip(spec.layers, state):
        if layer.kind == "lstm":
            h, c = lstm_layer(layer, v, h, c, dtype)
        else:
            h = gru_layer(layer, v, h, dtype)
        new_state.append((h, c))
        v = h
    if spec.head is not None:
        v = spec.head.weight.astype(dtype) @ v + spec.head.bias.astype(dtype)
    if spec.output_norm is not None:
        v = v * spec.output_norm.std.astype(dtype) + spec.output_norm.mean.astype(dtype)
    return v, new_state


def run(spec: ModelSpec, xs, dtype=np.float64, state=None):
    """Stream a (T, I) sequence from `state` (zero by default): returns (Y (T, O), final state)."""
    state = zero_state(spec, dtype) if state is None else state
    ys = []
    for x in xs:
        y, state = step(spec, state, x, dtype)
        ys.append(y)
    return np.array(ys), state
