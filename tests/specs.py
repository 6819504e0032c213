"""Random model specs of every shape the kernels support, built without torch (shared by the
kernel, export and CUDA tests)."""

import numpy as np

from edgelstm.engine import Model
from edgelstm.model.spec import GATES, Dense, ModelSpec, Normalisation, RecurrentLayer


def random_spec(rng, kinds=("lstm",), input_size=5, hidden=(16,), proj=(0,), head=3, norm=False, bias=True):
    layers, n_in = [], input_size
    for kind, h, p in zip(kinds, hidden, proj):
        g, s, out = GATES[kind] * h, 1 / np.sqrt(h), p or h
        b = (lambda: rng.uniform(-s, s, g)) if bias else (lambda: np.zeros(g))
        layers.append(RecurrentLayer(kind, n_in, h, rng.uniform(-s, s, (g, n_in)), rng.uniform(-s, s, (g, out)),
                                     b(), b(), rng.uniform(-s, s, (p, h)) if p else None))
        n_in = out
    head_layer = Dense(rng.uniform(-1, 1, (head, n_in)), rng.uniform(-1, 1, head)) if head else None
    out_size = head or n_in
    return ModelSpec(tuple(layers), head_layer,
                     Normalisation(rng.normal(size=input_size), rng.uniform(0.5, 2, input_size)) if norm else None,
                     Normalisation(rng.normal(size=out_size), rng.uniform(0.5, 2, out_size)) if norm else None)


SPECS = {
    "lstm": dict(kinds=("lstm",), hidden=(16,)),
    "lstm_deep_odd_sizes": dict(kinds=("lstm", "lstm", "lstm"), hidden=(13, 7, 9), head=0),
    "lstm_proj": dict(kinds=("lstm", "lstm"), hidden=(20, 8), proj=(6, 5)),
    "gru": dict(kinds=("gru", "gru"), hidden=(11, 16), head=2),
    "gru_nobias": dict(kinds=("gru",), hidden=(10,), head=0, bias=False),
    "mixed_lstm_gru": dict(kinds=("gru", "lstm"), hidden=(9, 12), proj=(0, 0), norm=True),
}


def overflowing_model():
    """1 -> LSTM(1) -> y = 1e38 * 100 * h: y is 0 for x = 0 and overflows float32 for x = 50."""
    w = np.full((4, 1), 10.0)
    layer = RecurrentLayer("lstm", 1, 1, w, np.zeros((4, 1)), np.zeros(4), np.zeros(4))
    return Model(ModelSpec((layer,), Dense(np.full((1, 1), 100.0), np.zeros(1)), None,
                                    Normalisation(np.zeros(1), np.full(1, 1e38))))
