"""Random model specs of every shape the kernels support, built without torch (shared by the
kernel, export and CUDA tests)."""

import numpy as np

from edgelstm.engine import Model
from edgelstm.model.layers import Affine, Linear
from edgelstm.model.spec import GATES, ModelSpec, RecurrentLayer


def random_spec(rng, kinds=("lstm",), input_size=5, hidden=(16,), proj=(0,), head=3, norm=False, bias=True):
    layers, n_in = [], input_size
    for kind, h, p in zip(kinds, hidden, proj):
        g, s, out = GATES[kind] * h, 1 / np.sqrt(h), p or h
        b = (lambda: rng.uniform(-s, s, g)) if bias else (lambda: np.zeros(g))
        layers.append(RecurrentLayer(kind, n_in, h, rng.uniform(-s, s, (g, n_in)), rng.uniform(-s, s, (g, out)),
                                     b(), b(), rng.uniform(-s, s, (p, h)) if p else None))
        n_in = out
    head_layer = Linear(rng.uniform(-1, 1, (head, n_in)), rng.uniform(-1, 1, head)) if head else None
    out_size = head or n_in
    return ModelSpec.classic(
        tuple(layers), head_layer,
        Affine.normalise(rng.normal(size=input_size), rng.uniform(0.5, 2, input_size)) if norm else None,
        Affine.denormalise(rng.normal(size=out_size), rng.uniform(0.5, 2, out_size)) if norm else None)


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
    return Model(ModelSpec.classic((layer,), Linear(np.full((1, 1), 100.0), np.zeros(1)), None,
                                   Affine.denormalise(np.zeros(1), np.full(1, 1e38))))


def _linear(rng, n_in, n_out, name=""):
    s = 1 / np.sqrt(n_in)
    return Linear(rng.uniform(-s, s, (n_out, n_in)), rng.uniform(-s, s, n_out), name)


def graph_specs(rng) -> dict:
    """Random models using every layer of the graph, built without torch (name -> ModelSpec)."""
    from edgelstm.model.layers import Activation, AttentionPool, CausalConv1d, Head, LayerNorm

    def rec(kind, n_in, h, peephole=False):
        g, s = GATES[kind] * h, 1 / np.sqrt(h)
        return RecurrentLayer(kind, n_in, h, rng.uniform(-s, s, (g, n_in)), rng.uniform(-s, s, (g, h)),
                              rng.uniform(-s, s, g), rng.uniform(-s, s, g),
                              w_peep=rng.uniform(-s, s, (3, h)) if peephole else None)

    def act(kind, n, alpha=0.0):
        return Activation(kind, n, alpha)

    bn = Affine.batch_norm(rng.normal(size=6), rng.uniform(0.5, 2, 6), rng.uniform(0.5, 1.5, 6), rng.normal(size=6),
                           1e-5, "bn")
    conv = CausalConv1d(rng.uniform(-0.4, 0.4, (8, 5, 3)), rng.uniform(-0.4, 0.4, 8), dilation=2, name="conv")
    attn = AttentionPool((_linear(rng, 12, 6), act("tanh", 6), _linear(rng, 6, 1)), "attn")
    return {
        "mlp_head": ModelSpec((rec("lstm", 5, 16),), post=(
            _linear(rng, 16, 10), act("relu", 10), _linear(rng, 10, 3), act("softmax", 3))),
        "norms_and_activations": ModelSpec(
            (rec("gru", 7, 12),),
            pre=(bn, _linear(rng, 6, 7), act("leaky_relu", 7, 0.1), act("elu", 7, 0.7)),
            post=(LayerNorm(rng.uniform(0.5, 1.5, 12), rng.normal(size=12), 1e-5), act("gelu", 12),
                  _linear(rng, 12, 4), act("gelu_tanh", 4), act("silu", 4), act("sigmoid", 4), act("tanh", 4),
                  act("log_softmax", 4))),
        "peephole": ModelSpec((rec("lstm", 4, 9, peephole=True), rec("lstm", 9, 7, peephole=True)),
                              post=(_linear(rng, 7, 2),)),
        "causal_conv": ModelSpec((rec("lstm", 8, 10),), pre=(conv, act("relu", 8)), post=(_linear(rng, 10, 1),)),
        "attention_pool": ModelSpec((rec("gru", 3, 12),), post=(attn, _linear(rng, 12, 2))),
        "two_heads": ModelSpec((rec("lstm", 4, 11),), post=(act("relu", 11),), heads=(
            Head("label", (_linear(rng, 11, 3), act("softmax", 3))),
            Head("level", (_linear(rng, 11, 1), Affine.denormalise(20.0, 5.0))))),
    }
