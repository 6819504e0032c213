"""Keras 3 .keras archives and RTNeural JSON models, read without keras (and without running
anything from the file), streamed one step at a time and compared with keras' model.predict.

The committed fixtures (tests/data/keras, tests/data/rtneural; made by
tests/data/keras/make_fixtures.py) need h5py for the .keras weights and nothing for RTNeural
JSON; the `live` tests build fresh models with keras itself and skip without it.
"""

import copy
import io
import json
import random
import sys
import zipfile

import numpy as np
import pytest
from conftest import DATA

import edgelstm
from edgelstm import ModelFormatError
from edgelstm.cli import main as cli_main
from edgelstm.model.keras_file import read_keras
from edgelstm.model.loader import load_spec, sniff
from edgelstm.model.rtneural_json import read_rtneural

KERAS_DIR, RT_DIR = DATA / "keras", DATA / "rtneural"
sys.path.insert(0, str(KERAS_DIR))
import make_fixtures  # noqa: E402  (keras is imported only when a model is built)

try:
    import h5py
except ImportError:
    h5py = None
needs_h5py = pytest.mark.skipif(h5py is None, reason="reading .keras weights needs h5py: pip install 'edgelstm[keras]'")
ATOL = 1e-5


def _expected(folder):
    with np.load(folder / "expected.npz") as z:
        arrays = {k: z[k] for k in z.files}
    return {name: tuple(arrays[f"{name}/{part}"] for part in ("x", "steps", "y"))
            for name in sorted({k.split("/")[0] for k in arrays})}


KERAS_EXPECTED, RT_EXPECTED = _expected(KERAS_DIR), _expected(RT_DIR)


def streamed(model, x: np.ndarray) -> np.ndarray:
    """y (T, O) from feeding x (T, I) one step at a time."""
    s = model.stream()
    return np.stack([s.step(v) for v in x])


def assert_matches(model, x, steps, y):
    got = streamed(model, x)[steps]
    assert got.shape == y.shape
    np.testing.assert_allclose(got, y, atol=ATOL, rtol=0)


# ---- committed fixtures -------------------------------------------------------------------

@needs_h5py
@pytest.mark.parametrize("name", sorted(KERAS_EXPECTED))
def test_keras_file_streams_like_keras_predict(name):
    path = KERAS_DIR / f"{name}.keras"
    assert sniff(path) == "keras"
    assert_matches(edgelstm.load(path), *KERAS_EXPECTED[name])


@pytest.mark.parametrize("name", sorted(RT_EXPECTED))
def test_rtneural_json_streams_like_keras_predict(name):
    path = RT_DIR / f"{name}.json"
    assert sniff(path) == "rtneural"
    assert_matches(edgelstm.load(path), *RT_EXPECTED[name])


@needs_h5py
def test_keras_graph_and_provenance():
    spec = read_keras(KERAS_DIR / "functional_conv_last.keras")
    text = spec.describe()
    for part in ("CausalConv1d 2 -> 4, kernel 3, dilation 2", "gelu", "GRU 5 -> 4", "Linear 4 -> 2", "sigmoid"):
        assert part in text
    assert spec.source["format"] == "keras" and spec.source["keras_version"].startswith("3.")
    gru = spec.layers[0]
    assert not gru.b_ih.any() and not gru.b_hh.any()              # use_bias=False
    ln = read_keras(KERAS_DIR / "lstm2_layernorm.keras").post[0]
    assert ln.eps == pytest.approx(1e-3)


def test_rtneural_graph():
    spec = read_rtneural(RT_DIR / "rt_conv.json")
    text = spec.describe()
    for part in ("CausalConv1d 6 -> 4, kernel 3, dilation 2", "leaky_relu(0.25)", "elu(1)", "LSTM 4 -> 5", "softmax"):
        assert part in text
    assert spec.source == {"file": "rt_conv.json", "format": "rtneural"}


@needs_h5py
def test_cli_inspect_and_convert(tmp_path, capsys):
    assert cli_main(["inspect", str(KERAS_DIR / "gru_mlp.keras")]) == 0
    assert "[keras]" in capsys.readouterr().out
    out = tmp_path / "m.elstm"
    assert cli_main(["convert", str(RT_DIR / "rt_gru.json"), "-o", str(out)]) == 0
    x, steps, y = RT_EXPECTED["rt_gru"]
    assert_matches(edgelstm.load(out), x, steps, y)
    assert cli_main(["inspect", str(RT_DIR / "rt_gru.json"), "--rnn", "lstm."]) == 1
    assert "holds its whole graph" in capsys.readouterr().err


def test_normalisation_options_wrap_the_graph():
    x, steps, y = RT_EXPECTED["rt_lstm"]
    mean, std = np.array([0.5]), np.array([2.0])
    model = edgelstm.load(RT_DIR / "rt_lstm.json", input_norm=(mean, std), output_norm=(np.array([1.0]), std))
    assert_matches(model, x * std + mean, steps, y * std + 1.0)
    with pytest.raises(ModelFormatError, match="drop arch=/rnn=/head="):
        load_spec(RT_DIR / "rt_lstm.json", head="fc.")


# ---- RTNeural: malformed and refused files (no package needed) -----------------------------

def rt_doc(name="rt_lstm"):
    return json.loads((RT_DIR / f"{name}.json").read_text())


def write(tmp_path, doc, name="m.json"):
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def refused(tmp_path, doc, match):
    path = write(tmp_path, doc)
    with pytest.raises(ModelFormatError, match=match):
        read_rtneural(path)


def test_rtneural_lstm_without_bias_is_a_zero_bias(tmp_path):
    doc = rt_doc()
    doc["layers"][1]["weights"][2] = [0.0] * len(doc["layers"][1]["weights"][2])
    zero = edgelstm.load(write(tmp_path, doc, "zero.json"))
    del doc["layers"][1]["weights"][2]
    none = edgelstm.load(write(tmp_path, doc, "none.json"))
    x = RT_EXPECTED["rt_lstm"][0][:50]
    np.testing.assert_array_equal(streamed(zero, x), streamed(none, x))


def _edit(name, fn):
    doc = rt_doc(name)
    fn(doc)
    return doc


def _set(path, value):
    def edit(doc):
        obj = doc
        for key in path[:-1]:
            obj = obj[key]
        obj[path[-1]] = value
    return edit


RT_REFUSALS = {
    "unknown type": ("rt_lstm", _set(["layers", 0, "type"], "flatten"), r"type 'flatten' is not one edgelstm reads"),
    "exporter's unknown": ("rt_lstm", _set(["layers", 0, "type"], "unknown"), "silently skips it"),
    "conv2d": ("rt_lstm", _set(["layers", 0, "type"], "conv2d"), "2-D convolution"),
    "batchnorm2d": ("rt_lstm", _set(["layers", 0, "type"], "batchnorm2d"), "2-D batch norm"),
    "4-D input": ("rt_lstm", _set(["in_shape"], [None, None, 4, 2]), "conv2d"),
    "missing weights": ("rt_lstm", lambda d: d["layers"][1].pop("weights"), r"has no weight arrays"),
    "wrong shape": ("rt_lstm", lambda d: d["layers"][1]["weights"][0].pop(), r"kernel: has shape \(7, 48\), "
                                                                             r"expected \(8, 48\)"),
    "ragged": ("rt_lstm", lambda d: d["layers"][1]["weights"][0][0].append(1.0), "not a rectangular array"),
    "huge size": ("rt_lstm", _set(["layers", 1, "shape"], [None, None, 1 << 30]), r"must be an integer in 1\.\."),
    "huge array": ("rt_lstm", _set(["layers", 1, "shape"], [None, None, 500_000]), "edgelstm refuses arrays"),
    "nan": ("rt_lstm", lambda d: d["layers"][2]["weights"][1].__setitem__(0, float("nan")), "NaN or Inf"),
    "lstm relu": ("rt_lstm", _set(["layers", 1, "activation"], "relu"), "always uses tanh"),
    "unknown activation": ("rt_lstm", _set(["layers", 0, "activation"], "gelu"), "not one RTNeural knows"),
    "no recurrent layer": ("rt_lstm", lambda d: d.__setitem__("layers", d["layers"][:1]), "no LSTM or GRU layer"),
    "gru reset_after=False": ("rt_gru", lambda d: d["layers"][1]["weights"].__setitem__(2, [0.0] * 24),
                              "reset_after=False"),
    "conv after the lstm": ("rt_conv", lambda d: d["layers"].insert(7, {
        "type": "conv1d", "activation": "", "shape": [None, None, 5], "kernel_size": [1], "dilation": [1],
        "groups": 1, "weights": [[np.eye(5).tolist()], [0.0] * 5]}), "input layer only"),
    "conv groups": ("rt_conv", _set(["layers", 1, "groups"], 2), "groups=1 only"),
    "prelu per feature": ("rt_conv", _set(["layers", 3, "weights"], [[[0.1, 0.2, 0.3, 0.4]]]), "slope per feature"),
    "batchnorm 3 arrays": ("rt_conv", lambda d: d["layers"][2]["weights"].pop(), "only one of"),
    "batchnorm epsilon": ("rt_conv", lambda d: d["layers"][2].pop("epsilon"), "epsilon"),
    "batchnorm negative var": ("rt_conv", lambda d: d["layers"][2]["weights"][3].__setitem__(0, -1.0),
                               "running_var and eps must be >= 0"),
    "activation size": ("rt_conv", _set(["layers", 4, "shape"], [None, None, 9]), "declares size 9 but receives 4"),
    "not a model": ("rt_lstm", lambda d: d.pop("layers"), "not an RTNeural model"),
}


@pytest.mark.parametrize("case", sorted(RT_REFUSALS))
def test_rtneural_refusals(tmp_path, case):
    name, edit, match = RT_REFUSALS[case]
    refused(tmp_path, _edit(name, edit), match)


def test_rtneural_dense_between_recurrent_layers(tmp_path):
    doc = rt_doc()
    lstm = copy.deepcopy(doc["layers"][1])
    dense = {"type": "dense", "activation": "", "shape": [None, None, 8],
             "weights": [np.eye(12)[:, :8].tolist(), [0.0] * 8]}
    doc["layers"][2:2] = [dense, lstm]
    refused(tmp_path, doc, r"layer 2 \(dense\) sits between two recurrent layers")


@pytest.mark.parametrize("text, match", [
    ('{"in_shape": [null, null, 1], "layers": [', "not valid JSON"),
    ('{"in_shape": 1, "layers": []}', "must be a non-empty list"),
    ('{"in_shape": [null, null, 1], "layers": ' + "[" * 5000 + "]" * 5000 + "}", "not valid JSON"),
    ('{"in_shape": [null, null, 1], "layers": [7]}', "expected a JSON object"),
    ('{"in_shape": [null, null, 1], "layers": [{"type": ["lstm"]}]}', '"type" must be a string'),
])
def test_rtneural_damaged_text(tmp_path, text, match):
    refused(tmp_path, text, match)


def test_other_json_is_not_sniffed_as_rtneural(tmp_path):
    with pytest.raises(ModelFormatError, match="unknown model format"):
        sniff(write(tmp_path, {"weights": [1, 2]}))


def _mutations(obj, path=()):
    """Every (path, replacement) that swaps one value of a JSON document for a wrong one."""
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, list):
        items = list(enumerate(obj))[:3]
    else:
        items = ()
    for key, value in items:
        for bad in (None, "x", -1, 0.5, [], {}, [[1.0, 2.0], [3.0]]):
            yield path + (key,), bad
        yield from _mutations(value, path + (key,))


def test_rtneural_fuzz_only_model_format_errors(tmp_path):
    """Any one value replaced by a wrong one: the reader loads or refuses, never crashes."""
    doc = rt_doc("rt_conv")
    cases = list(_mutations(doc))
    for path, bad in random.Random(0).sample(cases, min(400, len(cases))):
        broken = copy.deepcopy(doc)
        _set(list(path), bad)(broken)
        try:
            read_rtneural(write(tmp_path, broken))
        except ModelFormatError:
            pass


# ---- Keras: refused configs (checked before any weight is read: no h5py needed) -----------

def keras_config(name="lstm_softmax"):
    with zipfile.ZipFile(KERAS_DIR / f"{name}.keras") as z:
        return json.loads(z.read("config.json"))


def keras_weights(name="lstm_softmax") -> bytes:
    with zipfile.ZipFile(KERAS_DIR / f"{name}.keras") as z:
        return z.read("model.weights.h5")


def keras_zip(tmp_path, config, weights=b"not hdf5", name="m.keras"):
    path = tmp_path / name
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("metadata.json", json.dumps({"keras_version": "3.15.1"}))
        z.writestr("config.json", config if isinstance(config, str) else json.dumps(config))
        if weights is not None:
            z.writestr("model.weights.h5", weights)
    return path


def layer_cfg(config, k):
    return config["config"]["layers"][k]["config"]


def _keras_edit(fn, name="lstm_softmax"):
    config = keras_config(name)
    fn(config)
    return config


LAMBDA = {"module": "keras.layers", "class_name": "Lambda", "registered_name": None,
          "config": {"name": "lam", "function": {"class_name": "__lambda__", "config": {"code": "4wEAAA=="}}}}
CUSTOM = {"module": "mypkg.layers", "class_name": "MyLayer", "registered_name": "mypkg>MyLayer",
          "config": {"name": "mine"}}

KERAS_REFUSALS = {
    "lambda": (lambda c: c["config"]["layers"].insert(2, LAMBDA), "Lambda layer is Python code"),
    "custom class": (lambda c: c["config"]["layers"].insert(2, CUSTOM), r"custom class \(mypkg>MyLayer\)"),
    "custom activation": (lambda c: layer_cfg(c, 2).update(activation={"class_name": "MyAct", "config": {}}),
                          "custom object"),
    "subclassed model": (lambda c: c.update(class_name="MyModel"), "subclassed Model is Python code"),
    "go_backwards": (lambda c: layer_cfg(c, 1).update(go_backwards=True), "go_backwards=True"),
    "hard_sigmoid": (lambda c: layer_cfg(c, 1).update(recurrent_activation="hard_sigmoid"), r"clip\(0\.2x \+ 0\.5\)"),
    "lstm relu": (lambda c: layer_cfg(c, 1).update(activation="relu"), "kernels use tanh"),
    "return_state": (lambda c: layer_cfg(c, 1).update(return_state=True), "return_state=True"),
    "gru reset_after=False": (lambda c: (c["config"]["layers"][1].update(class_name="GRU"),
                                         layer_cfg(c, 1).update(reset_after=False)), "reset_after=False"),
    "bidirectional": (lambda c: c["config"]["layers"][1].update(class_name="Bidirectional"), "cannot stream"),
    "simple rnn": (lambda c: c["config"]["layers"][1].update(class_name="SimpleRNN"), "LSTM and GRU layers only"),
    "unsupported layer": (lambda c: c["config"]["layers"][1].update(class_name="Flatten"),
                          "Flatten 'lstm': unsupported Keras layer"),
    "dense selu": (lambda c: layer_cfg(c, 2).update(activation="selu"), "activation 'selu' is not supported"),
    "dense hard_sigmoid": (lambda c: layer_cfg(c, 2).update(activation="hard_sigmoid"), "hard_sigmoid"),
    "huge units": (lambda c: layer_cfg(c, 1).update(units=1 << 30), r"units must be an integer in 1\.\."),
    "huge array": (lambda c: layer_cfg(c, 1).update(units=60_000), "edgelstm refuses arrays that large"),
    "float units": (lambda c: layer_cfg(c, 1).update(units=8.0), "must be an integer"),
    "no input shape": (lambda c: (c["config"]["layers"].pop(0), c["config"]["layers"][0].pop("build_config")),
                       "declare its input shape"),
    "2-D input": (lambda c: layer_cfg(c, 0).update(batch_shape=[None, 3]), r"\(batch, time, features\)"),
    "nested model": (lambda c: c["config"]["layers"][1].update(class_name="Sequential"), "nested in the model"),
    "no class name": (lambda c: c["config"]["layers"][1].pop("class_name"), "has no class_name"),
    "quantized": (lambda c: layer_cfg(c, 2).update(dtype={"class_name": "QuantizedDTypePolicy"}), "is quantized"),
    "layer norm over time": (lambda c: c["config"]["layers"].insert(2, {
        "class_name": "LayerNormalization", "config": {"name": "ln", "axis": 1}}), "across time"),
}


@pytest.mark.parametrize("case", sorted(KERAS_REFUSALS))
def test_keras_refusals(tmp_path, case):
    edit, match = KERAS_REFUSALS[case]
    with pytest.raises(ModelFormatError, match=match):
        read_keras(keras_zip(tmp_path, _keras_edit(edit)))


def _branch(config):
    """functional_conv_last with its Dense reading both the conv and the input (a merge)."""
    dense = [x for x in config["config"]["layers"] if x["class_name"] == "Dense"][0]
    tensor = dense["inbound_nodes"][0]["args"][0]
    extra = copy.deepcopy(tensor)
    extra["config"]["keras_history"][0] = config["config"]["layers"][0]["name"]
    dense["inbound_nodes"][0]["args"] = [[tensor, extra]]


@pytest.mark.parametrize("edit, match", [
    (_branch, "takes 2 inputs"),
    (lambda c: c["config"]["layers"][2]["inbound_nodes"].append({"args": [], "kwargs": {}}), "is called 2 times"),
    (lambda c: c["config"].update(output_layers=[[x["name"], 0, 0] for x in c["config"]["layers"][-2:]]),
     "2 outputs"),
    (lambda c: c["config"]["layers"].append({"class_name": "Dense", "name": "stray", "config": {"name": "stray"},
                                             "inbound_nodes": []}), r"\['stray'\] are not on the path"),
    (lambda c: c["config"].update(input_layers="nonsense"), "input_layers .* is malformed"),
])
def test_keras_functional_must_be_a_chain(tmp_path, edit, match):
    config = keras_config("functional_conv_last")
    edit(config)
    with pytest.raises(ModelFormatError, match=match):
        read_keras(keras_zip(tmp_path, config))


@pytest.mark.parametrize("make, match", [
    (lambda p: p.write_bytes(b"PK\x03\x04" + b"\x00" * 40), "damaged|unknown model format"),
    (lambda p: keras_zip(p.parent, "{not json", name=p.name), "config.json is not valid JSON"),
    (lambda p: keras_zip(p.parent, "[" * 5000 + "]" * 5000, name=p.name), "not valid JSON|JSON object"),
    (lambda p: keras_zip(p.parent, keras_config(), weights=None, name=p.name), "no model.weights.h5"),
])
def test_keras_damaged_archives(tmp_path, make, match):
    path = tmp_path / "m.keras"
    make(path)
    with pytest.raises(ModelFormatError, match=match):
        edgelstm.load(path)


def test_keras_without_h5py_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(ModelFormatError, match=r"needs h5py: pip install 'edgelstm\[keras\]'"):
        read_keras(keras_zip(tmp_path, keras_config()))


def test_keras_fuzz_config_only_model_format_errors(tmp_path):
    """Any one config value replaced by a wrong one: refused or loaded, never a crash."""
    config = keras_config("functional_conv_last")
    weights = keras_weights("functional_conv_last") if h5py is not None else b"not hdf5"
    cases = list(_mutations(config))
    for path, bad in random.Random(1).sample(cases, min(300, len(cases))):
        broken = copy.deepcopy(config)
        _set(list(path), bad)(broken)
        try:
            read_keras(keras_zip(tmp_path, broken, weights))
        except ModelFormatError:
            pass


# ---- Keras: weights that disagree with the config (need h5py) ------------------------------

def edited_weights(edit, name="lstm_softmax") -> bytes:
    buf = io.BytesIO(keras_weights(name))
    with h5py.File(buf, "a") as h5:
        edit(h5)
    return buf.getvalue()


@needs_h5py
@pytest.mark.parametrize("edit, match", [
    (lambda h: h.__delitem__("layers/dense"), "Dense 'dense': its weights are missing"),
    (lambda h: h.__delitem__("layers/lstm/cell/vars/2"), r"holds 2 arrays for it, expected 3"),
    (lambda h: h["layers/dense/vars"].create_dataset("2", data=np.zeros(3)), "quantized"),
    (lambda h: (h["layers/dense/vars"].__delitem__("0"), h["layers/dense/vars"].create_dataset(
        "0", data=np.zeros((8, 4), np.int8))), "stored as int8"),
    (lambda h: (h["layers/dense/vars"].__delitem__("1"), h["layers/dense/vars"].create_dataset(
        "1", data=np.full(4, np.nan, np.float32))), "NaN or Inf"),
])
def test_keras_bad_weights(tmp_path, edit, match):
    with pytest.raises(ModelFormatError, match=match):
        read_keras(keras_zip(tmp_path, keras_config(), edited_weights(edit)))


@needs_h5py
def test_keras_config_and_weights_disagree(tmp_path):
    config = _keras_edit(lambda c: layer_cfg(c, 2).update(units=5))
    with pytest.raises(ModelFormatError, match=r"kernel has shape \(8, 4\); its config implies \(8, 5\)"):
        read_keras(keras_zip(tmp_path, config, keras_weights()))


@needs_h5py
def test_keras_weights_found_by_class_order_when_names_differ(tmp_path):
    """Groups are named by class and position; a renamed layer is still found (Keras' own rule)."""
    config = _keras_edit(lambda c: layer_cfg(c, 1).update(name="renamed"))
    weights = edited_weights(lambda h: h["layers/lstm/vars"].attrs.__delitem__("name"))
    model = edgelstm.load(keras_zip(tmp_path, config, weights))
    assert_matches(model, *KERAS_EXPECTED["lstm_softmax"])


# ---- live: fresh models from keras itself --------------------------------------------------

@pytest.fixture(scope="module")
def keras():
    try:
        return make_fixtures._keras()
    except Exception as exc:                  # ImportError, or a backend that cannot start
        pytest.skip(f"needs keras 3 (pip install keras; KERAS_BACKEND=torch): {exc}")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")          # keras' own, under numpy 2
@pytest.mark.parametrize("name", sorted(make_fixtures.KERAS) + sorted(make_fixtures.RT))
def test_live_keras_model_streams_like_predict(keras, tmp_path, name):
    model = make_fixtures.build(name, seed=7)
    x = make_fixtures.inputs(model.input_shape[-1], seed=7)
    steps, y = make_fixtures.reference(model, x)
    path = tmp_path / f"{name}.keras"
    model.save(path)
    assert_matches(edgelstm.load(path), x, steps, y)
    if name in make_fixtures.RT:
        rt = write(tmp_path, make_fixtures.to_rtneural(model), f"{name}.json")
        assert_matches(edgelstm.load(rt), x, steps, y)


@pytest.mark.parametrize("build, match", [
    (lambda k: k.Sequential([k.Input((None, 3)), k.layers.Lambda(lambda t: t * 2), k.layers.LSTM(2)]),
     "Lambda layer is Python code"),
    (lambda k: k.Sequential([k.Input((None, 3)), k.layers.GRU(2, reset_after=False)]), "reset_after=False"),
    (lambda k: k.Sequential([k.Input((None, 3)), k.layers.Bidirectional(k.layers.LSTM(2))]), "cannot stream"),
    (lambda k: k.Sequential([k.Input((None, 3)), k.layers.LSTM(2, recurrent_activation="hard_sigmoid")]),
     "hard_sigmoid"),
    (lambda k: k.Sequential([k.Input((None, 3)), k.layers.LSTM(4, return_sequences=True), k.layers.Dense(4),
                             k.layers.LSTM(2)]), "Dense 'dense.*' sits between two recurrent layers"),
    (lambda k: k.Sequential([k.Input((None, 3)), k.layers.PReLU(alpha_initializer="random_uniform", shared_axes=[1]),
                             k.layers.LSTM(2)]), "slope per feature"),
])
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_live_keras_refusals(keras, tmp_path, build, match):
    path = tmp_path / "m.keras"
    build(keras).save(path)
    with pytest.raises(ModelFormatError, match=match):
        edgelstm.load(path)
