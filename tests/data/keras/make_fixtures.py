"""Regenerate the Keras and RTNeural fixtures that tests/test_keras_rtneural.py reads.

    KERAS_BACKEND=torch .venv/bin/python tests/data/keras/make_fixtures.py

Needs keras 3 (any backend; torch is the one this project has) and h5py. Writes

  tests/data/keras/<name>.keras        model.save() of each KERAS model below
  tests/data/keras/expected.npz        <name>/x (T, I), <name>/steps (K,), <name>/y (K, O)
  tests/data/rtneural/<name>.json      RTNeural's model JSON, written by to_rtneural() below
  tests/data/rtneural/expected.npz     the same three arrays per model

y is keras' own model.predict over the whole sequence (for a model whose last recurrent layer
has return_sequences=False: predict on the first t+1 steps, for each t in steps), which the
tests compare with edgelstm streaming the sequence one step at a time.

to_rtneural() writes the schema of RTNeural's python/model_utils.py save_model (in_shape;
per layer type, activation, shape, weights = layer.get_weights(), plus kernel_size/dilation/
groups for conv1d and epsilon for batchnorm); it is this project's own code, not theirs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RTNEURAL = HERE.parent / "rtneural"
STEPS = 1000


def _keras():
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras
    return keras


def _randomise(model, seed: int) -> None:
    """Non-zero biases and a spread of statistics, so every array matters in the comparison."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        weights = layer.get_weights()
        names = [w.name for w in layer.weights]
        out = []
        for name, w in zip(names, weights):
            if name == "moving_variance":
                out.append(rng.uniform(0.3, 2.0, w.shape))
            elif name in ("moving_mean", "beta", "gamma") or "bias" in name:
                out.append(rng.normal(0.5 if name == "gamma" else 0.0, 0.4, w.shape))
            else:
                out.append(w)
        layer.set_weights([np.asarray(w, np.float32) for w in out])


# ---- the models ---------------------------------------------------------------------------

def lstm_softmax():
    k = _keras()
    return k.Sequential([k.Input((None, 3)), k.layers.LSTM(8, return_sequences=True),
                         k.layers.Dense(4, activation="softmax")])


def gru_mlp():
    k = _keras()
    return k.Sequential([k.Input((None, 3)), k.layers.GRU(6, return_sequences=True),   # reset_after=True
                         k.layers.Dense(8, activation="relu"), k.layers.Dense(2)])


def lstm2_layernorm():
    k = _keras()
    return k.Sequential([k.Input((None, 4)), k.layers.LSTM(6, return_sequences=True),
                         k.layers.LSTM(5, return_sequences=True), k.layers.LayerNormalization(epsilon=1e-3),
                         k.layers.Dense(3)])


def batchnorm_input():
    k = _keras()
    return k.Sequential([k.Input((None, 3)), k.layers.BatchNormalization(epsilon=1e-3),
                         k.layers.LSTM(4, return_sequences=True), k.layers.Dropout(0.3), k.layers.Dense(1)])


def functional_conv_last():
    """Functional chain: causal Conv1D, gelu Dense, a bias-free GRU returning its last step only."""
    k = _keras()
    x = k.Input((None, 2))
    y = k.layers.Conv1D(4, 3, dilation_rate=2, padding="causal", activation="tanh")(x)
    y = k.layers.Dense(5, activation="gelu")(y)
    y = k.layers.GRU(4, use_bias=False)(y)
    return k.Model(x, k.layers.Dense(2, activation="sigmoid")(y))


def sequential_misc():
    k = _keras()
    return k.Sequential([k.Input((None, 3)), k.layers.TimeDistributed(k.layers.Dense(4)), k.layers.LeakyReLU(0.1),
                         k.layers.LSTM(5, return_sequences=True, use_bias=False), k.layers.ELU(),
                         k.layers.Dense(3, activation="silu"), k.layers.Softmax()])


def rt_lstm():
    k = _keras()
    return k.Sequential([k.Input((None, 1)), k.layers.Dense(8, activation="tanh"),
                         k.layers.LSTM(12, return_sequences=True), k.layers.Dense(1)])


def rt_gru():
    """The shape of RTNeural's own python/gru.py test model."""
    k = _keras()
    return k.Sequential([k.Input((None, 1)), k.layers.TimeDistributed(k.layers.Dense(8, activation="tanh")),
                         k.layers.GRU(8, return_sequences=True), k.layers.Dense(8, activation="sigmoid"),
                         k.layers.Dense(1)])


def rt_conv():
    k = _keras()
    return k.Sequential([
        k.Input((None, 2)), k.layers.Dense(6, activation="tanh"),
        k.layers.Conv1D(4, 3, dilation_rate=2, padding="causal", activation="tanh"),
        k.layers.BatchNormalization(epsilon=0.01),
        k.layers.PReLU(alpha_initializer=k.initializers.Constant(0.25), shared_axes=[1, 2]),
        k.layers.Activation("elu"), k.layers.LSTM(5, return_sequences=True),
        k.layers.BatchNormalization(center=False, scale=False, epsilon=0.5),
        k.layers.Dense(3, activation="softmax")])


KERAS = {f.__name__: f for f in (lstm_softmax, gru_mlp, lstm2_layernorm, batchnorm_input, functional_conv_last,
                                 sequential_misc)}
RT = {f.__name__: f for f in (rt_lstm, rt_gru, rt_conv)}


def build(name: str, seed: int = 0):
    """The model `name`, with seeded random weights."""
    _keras().utils.set_random_seed(seed)
    model = {**KERAS, **RT}[name]()
    _randomise(model, seed)
    return model


def reference(model, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(steps, y): keras' own outputs for x (T, I) at those steps."""
    y = model.predict(x[None], verbose=0)
    if y.ndim == 3:
        return np.arange(len(x)), y[0]
    steps = np.array([0, 1, 9, 99, len(x) - 1])
    return steps, np.concatenate([model.predict(x[None, :t + 1], verbose=0) for t in steps])


def inputs(n_in: int, seed: int) -> np.ndarray:
    return np.random.default_rng(100 + seed).normal(size=(STEPS, n_in)).astype(np.float32)


# ---- RTNeural's schema --------------------------------------------------------------------

def _rt_type(layer) -> str:
    k = _keras()
    for cls, name in ((k.layers.TimeDistributed, "time-distributed-dense"), (k.layers.GRU, "gru"),
                      (k.layers.LSTM, "lstm"), (k.layers.Dense, "dense"), (k.layers.Conv1D, "conv1d"),
                      (k.layers.PReLU, "prelu"), (k.layers.BatchNormalization, "batchnorm"),
                      (k.layers.Activation, "activation")):
        if isinstance(layer, cls):
            return name
    return "unknown"


def _rt_activation(layer) -> str:
    cfg = layer.get_config()
    name = (cfg.get("layer") or {}).get("config", {}).get("activation") if "layer" in cfg else cfg.get("activation")
    return name if name in ("tanh", "relu", "sigmoid", "softmax", "elu") else ""


def to_rtneural(model) -> dict:
    """The model as RTNeural's model_utils.save_model would write it."""
    layers = []
    for layer in model.layers:
        entry = {"type": _rt_type(layer), "activation": _rt_activation(layer),
                 "shape": list(layer.output.shape)}
        if entry["type"] == "conv1d":
            entry.update(kernel_size=list(layer.kernel_size), dilation=list(layer.dilation_rate), groups=layer.groups)
        if entry["type"] == "batchnorm":
            entry["epsilon"] = layer.epsilon
        entry["weights"] = [w.tolist() for w in layer.get_weights()]
        layers.append(entry)
    return {"in_shape": list(model.input_shape), "layers": layers}


def main():
    expected = {"keras": {}, "rtneural": {}}
    for seed, name in enumerate([*KERAS, *RT]):
        model = build(name, seed)
        x = inputs(model.input_shape[-1], seed)
        steps, y = reference(model, x)
        if name in KERAS:
            model.save(HERE / f"{name}.keras")
            where = expected["keras"]
        else:
            RTNEURAL.mkdir(exist_ok=True)
            (RTNEURAL / f"{name}.json").write_text(json.dumps(to_rtneural(model)))
            where = expected["rtneural"]
        where.update({f"{name}/x": x, f"{name}/steps": steps, f"{name}/y": y})
    np.savez_compressed(HERE / "expected.npz", **expected["keras"])
    np.savez_compressed(RTNEURAL / "expected.npz", **expected["rtneural"])


if __name__ == "__main__":
    main()
