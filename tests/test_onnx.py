"""ONNX files (edgelstm.model.onnx_file): read without the onnx package and without torch.

* committed fixtures (tests/data/onnx, made by make_onnx.py) streamed one reading at a time
  against ONNX Runtime's whole-sequence outputs: needs nothing beyond edgelstm;
* damaged files (truncated, bytes flipped, absurd shapes, cycles...): always a ModelFormatError;
* graphs built with onnx.helper for what the reader refuses, or what torch never emits;
* torch.onnx.export round trips of the zoo with both exporters (@pytest.mark.torch).
"""

import importlib.util
import os
import shutil

import numpy as np
import pytest
from conftest import DATA
from ort_probe import need_ort, ort_usable

import edgelstm
from edgelstm import ModelFormatError
from edgelstm.kernels import reference
from edgelstm.model.loader import load_spec, sniff
from edgelstm.model.onnx_file import read_onnx

ONNX_DATA = DATA / "onnx"
FIXTURES = sorted(p.stem for p in ONNX_DATA.glob("*.npz"))
STEPS = 1000


def _make_onnx():
    spec = importlib.util.spec_from_file_location("make_onnx", ONNX_DATA / "make_onnx.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_onnx = _make_onnx()


def golden(name):
    with np.load(ONNX_DATA / f"{name}.npz", allow_pickle=False) as z:
        return z["x"].astype(np.float32), z["steps"], z["y"]


def stream(spec, xs):
    return edgelstm.Model(spec).stream().step_many(xs)


def needs_onnx():
    return pytest.importorskip("onnx", reason="building test graphs needs the onnx package (pip install onnx)")


def ort_session(path):
    ort = need_ort()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


# --- committed fixtures: no torch, no onnx ---

@pytest.mark.parametrize("name", FIXTURES)
def test_fixture_streams_like_onnx_runtime(name):
    """1,000 readings one at a time match ONNX Runtime over the whole sequence (or over each
    prefix, for a model whose ONNX output is the last step only)."""
    xs, steps, ys = golden(name)
    model = edgelstm.load(ONNX_DATA / f"{name}.onnx")
    got = model.stream().step_many(xs)
    np.testing.assert_allclose(got[steps - 1], ys, atol=1e-5, rtol=0)
    short = steps[steps <= 200]
    np.testing.assert_allclose(reference.run(model.spec, xs[:200])[0][short - 1], ys[:len(short)], atol=1e-5, rtol=0)


def test_fixtures_are_committed_and_small():
    expected = set(make_onnx.TORCH_FIXTURES) | set(make_onnx.HELPER_FIXTURES) | {"external_lstm"}
    assert expected <= set(FIXTURES), "run tests/data/onnx/make_onnx.py"
    for path in ONNX_DATA.glob("*.onnx"):
        assert path.stat().st_size < 60_000, path


def test_what_the_fixtures_become():
    """The exporters' wrappers fold away: only real layers are left."""
    def layers(name):
        return load_spec(ONNX_DATA / f"{name}.onnx").describe()
    assert "layer 1: LSTM 16 -> 16" in layers("lstm2_mlp_head_sigmoid") and "silu" in layers("lstm2_mlp_head_sigmoid")
    two = load_spec(ONNX_DATA / "two_heads.onnx")
    assert [h.name for h in two.heads] == ["y_0", "y_1"] and two.output_size == 5
    outs = load_spec(ONNX_DATA / "two_outputs.onnx")
    assert [h.name for h in outs.heads] == ["y0", "y1"]
    conv = load_spec(ONNX_DATA / "causal_conv_dilated_gru.onnx")
    assert type(conv.pre[0]).__name__ == "CausalConv1d" and conv.pre[0].dilation == 2
    assert type(load_spec(ONNX_DATA / "batchnorm_input.onnx").pre[0]).__name__ == "Affine"
    assert load_spec(ONNX_DATA / "peephole_lstm.onnx").layers[0].w_peep is not None
    last = load_spec(ONNX_DATA / "last_step_lstm2.onnx")
    assert last.source["last_step_outputs"] == ["y"] and len(last.layers) == 2
    assert load_spec(ONNX_DATA / "two_heads.onnx").source["format"] == "onnx"


def test_sniff_and_convert(tmp_path, capsys):
    from edgelstm.cli import main
    from edgelstm.model import deploy
    path = ONNX_DATA / "gru_mlp_head_softmax.onnx"
    assert sniff(path) == "onnx"
    assert main(["convert", str(path), "-o", str(tmp_path / "m.elstm")]) == 0
    assert "GRU 6 -> 16" in capsys.readouterr().out
    assert deploy.load(tmp_path / "m.elstm").content_hash() == read_onnx(path).content_hash()


def test_normalisation_options_and_state_dict_options():
    path = ONNX_DATA / "lstm_mlp_head.onnx"
    spec = read_onnx(path, input_norm=(np.zeros(6), np.full(6, 2.0)), output_norm=(np.ones(3), np.ones(3)))
    assert len(spec.pre) == 1 and len(spec.post) == 4
    for option in ({"arch": "lstm"}, {"rnn": "rnn."}, {"head": False}):
        with pytest.raises(ModelFormatError, match="ONNX file's graph already says"):
            read_onnx(path, **option)


# --- damaged files: never a traceback ---

def _damaged(tmp_path, data: bytes, name="bad.onnx"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("cut", [1, 2, 10, 100, 1000, 4000, -200, -3, -1])
def test_truncated_file(tmp_path, cut):
    data = (ONNX_DATA / "lstm_mlp_head.onnx").read_bytes()
    with pytest.raises(ModelFormatError):
        edgelstm.load(_damaged(tmp_path, data[:cut]))


def test_flipped_bytes_never_crash(tmp_path):
    """300 copies with a few random bytes changed: each loads or raises ModelFormatError."""
    data = bytearray((ONNX_DATA / "two_heads.onnx").read_bytes())
    rng = np.random.default_rng(0)
    outcomes = {"loaded": 0, "refused": 0}
    for _ in range(300):
        mutant = bytearray(data)
        for k in rng.integers(0, len(data), rng.integers(1, 4)):
            mutant[k] = int(rng.integers(0, 256))
        try:
            read_onnx(_damaged(tmp_path, bytes(mutant)))
            outcomes["loaded"] += 1
        except ModelFormatError:
            outcomes["refused"] += 1
    assert outcomes["refused"] > 50, outcomes


def test_not_onnx_at_all(tmp_path):
    with pytest.raises(ModelFormatError, match="no graph"):
        edgelstm.load(_damaged(tmp_path, b"\x08\x07\x12\x03abc"))
    with pytest.raises(ModelFormatError):
        edgelstm.load(_damaged(tmp_path, b"hello world, not a model"))


# --- graphs built with onnx.helper ---

def _lstm_model(*, lstm_attrs=None, lstm_inputs=None, after=(), inits=(), outputs=None, inputs=None,
                kind="LSTM", opset=20, x_shape=(1, "T", 4), before=None):
    """x (1, T, 4) -> Transpose -> LSTM(H=5) -> Squeeze -> Transpose -> [after] -> y."""
    onnx = needs_onnx()
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(0)
    gates = 4 if kind == "LSTM" else 3
    base = [numpy_helper.from_array(rng.uniform(-.5, .5, (1, gates * 5, 4)).astype(np.float32), "W"),
            numpy_helper.from_array(rng.uniform(-.5, .5, (1, gates * 5, 5)).astype(np.float32), "R"),
            numpy_helper.from_array(np.array([1], np.int64), "one")]
    attrs = {"hidden_size": 5, **({"linear_before_reset": 1} if kind == "GRU" else {}), **(lstm_attrs or {})}
    nodes = before if before is not None else [helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0, 2], name="t0")]
    nodes = nodes + [helper.make_node(kind, lstm_inputs or ["xt", "W", "R"], ["Y", "Y_h"] + (["Y_c"] if kind == "LSTM"
                                                                                       else []), name="rnn", **attrs),
                     helper.make_node("Squeeze", ["Y", "one"], ["Ys"], name="sq"),
                     helper.make_node("Transpose", ["Ys"], ["h"], perm=[1, 0, 2], name="t1")]
    nodes += list(after) or [helper.make_node("Identity", ["h"], ["y"], name="out")]
    ins = [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))] + list(inputs or [])
    outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in (outputs or ["y"])]
    graph = helper.make_graph(nodes, "g", ins, outs, base + list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return onnx, model


def _load(tmp_path, model, name="m.onnx"):
    import onnx
    path = tmp_path / name
    onnx.save(model, str(path))
    return read_onnx(path)


def test_plain_helper_graph_matches_onnx_runtime(tmp_path):
    _, model = _lstm_model()
    spec = _load(tmp_path, model)
    xs = np.random.default_rng(1).normal(size=(STEPS, 4)).astype(np.float32)
    want = ort_session(tmp_path / "m.onnx").run(None, {"x": xs[None]})[0][0]
    np.testing.assert_allclose(stream(spec, xs), want, atol=1e-5, rtol=0)


def test_layer_chain_matches_onnx_runtime(tmp_path):
    """Constant arithmetic (folded into Affine layers), every elementwise activation, and feature
    slicing and gathering (as one-hot Linear layers) after the recurrent layer."""
    needs_onnx()
    from onnx import helper, numpy_helper
    rng = np.random.default_rng(6)
    consts = {f"c{k}": rng.uniform(0.5, 1.5, (5,)).astype(np.float32) for k in range(4)}
    consts.update(s=np.array([1], np.int64), e=np.array([5], np.int64), ax=np.array([-1], np.int64),
                  idx=np.array([3, 0, 2], np.int64))
    chain = [("Sub", ["h", "c0"]), ("Div", ["v0", "c1"]), ("LeakyRelu", ["v1"], {"alpha": 0.2}), ("Mul", ["c2", "v2"]),
             ("Add", ["v3", "c3"]), ("Elu", ["v4"], {"alpha": 0.5}), ("Gelu", ["v5"]), ("Neg", ["v6"]),
             ("Slice", ["v7", "s", "e", "ax"]), ("Gather", ["v8", "idx"], {"axis": 2}), ("Sigmoid", ["v9"])]
    nodes = [helper.make_node(op, ins, [f"v{k}" if k < len(chain) - 1 else "y"], **(rest[0] if rest else {}))
             for k, (op, ins, *rest) in enumerate(chain)]
    _, model = _lstm_model(after=nodes, inits=[numpy_helper.from_array(v, k) for k, v in consts.items()])
    spec = _load(tmp_path, model)
    assert spec.output_size == 3
    xs = np.random.default_rng(7).normal(size=(STEPS, 4)).astype(np.float32)
    want = ort_session(tmp_path / "m.onnx").run(None, {"x": xs[None]})[0][0]
    np.testing.assert_allclose(stream(spec, xs), want, atol=1e-5, rtol=0)


def test_peephole_lstm_matches_onnx_runtime_in_both_layouts(tmp_path):
    needs_onnx()
    import onnx
    xs = np.random.default_rng(2).normal(size=(STEPS, 4)).astype(np.float32)
    onnx.save(make_onnx.peephole_lstm(layout=0), str(tmp_path / "p0.onnx"))
    onnx.save(make_onnx.peephole_lstm(layout=1), str(tmp_path / "p1.onnx"))
    want = ort_session(tmp_path / "p0.onnx").run(None, {"x": xs[None]})[0][0]
    for name in ("p0", "p1"):                           # ONNX Runtime cannot run layout=1 itself
        spec = read_onnx(tmp_path / f"{name}.onnx")
        assert spec.layers[0].w_peep is not None
        np.testing.assert_allclose(stream(spec, xs), want, atol=1e-5, rtol=0)


def test_gru_linear_before_reset_1_matches_and_0_is_refused(tmp_path):
    needs_onnx()
    import onnx
    onnx.save(make_onnx.gru_lbr(1), str(tmp_path / "g1.onnx"))
    xs = np.random.default_rng(3).normal(size=(STEPS, 3)).astype(np.float32)
    want = ort_session(tmp_path / "g1.onnx").run(None, {"x": xs[:, None]})[0][:, 0]
    np.testing.assert_allclose(stream(read_onnx(tmp_path / "g1.onnx"), xs), want, atol=1e-5, rtol=0)
    onnx.save(make_onnx.gru_lbr(0), str(tmp_path / "g0.onnx"))
    with pytest.raises(ModelFormatError, match="linear_before_reset=0 applies the reset gate before"):
        read_onnx(tmp_path / "g0.onnx")


def test_time_axis_found_when_batch_and_time_are_both_named(tmp_path):
    """(T, N, 4) fed straight to a layout=0 LSTM: (batch, time) is tried first, then (time, batch)."""
    needs_onnx()
    from onnx import helper
    _, model = _lstm_model(x_shape=("T", "N", 4), before=[helper.make_node("Identity", ["x"], ["xt"])],
                           after=[helper.make_node("Identity", ["Ys"], ["y"])])
    spec = _load(tmp_path, model)
    xs = np.random.default_rng(4).normal(size=(50, 4)).astype(np.float32)
    want = ort_session(tmp_path / "m.onnx").run(None, {"x": xs[:, None]})[0][:, 0]
    np.testing.assert_allclose(stream(spec, xs), want, atol=1e-5, rtol=0)


def _refusal_cases():
    """name: (builder kwargs factory, expected message)."""
    def t(op, *a, **kw):
        from onnx import helper
        return helper.make_node(op, *a, **kw)

    def init(name, a):
        from onnx import numpy_helper
        return numpy_helper.from_array(np.asarray(a), name)

    def second_input():
        from onnx import TensorProto, helper
        return {"inputs": [helper.make_tensor_value_info("h0", TensorProto.FLOAT, [1, 1, 5])],
                "lstm_inputs": ["xt", "W", "R", "", "", "h0"]}

    return {
        "bidirectional": (lambda: {"lstm_attrs": {"direction": "bidirectional"}}, "needs future inputs"),
        "reverse": (lambda: {"lstm_attrs": {"direction": "reverse"}}, "needs future inputs"),
        "clip": (lambda: {"lstm_attrs": {"clip": 3.0}}, "clip=3"),
        "input_forget": (lambda: {"lstm_attrs": {"input_forget": 1}}, "input_forget=1"),
        "activations": (lambda: {"lstm_attrs": {"activations": ["Sigmoid", "Relu", "Tanh"]}}, "only the defaults"),
        "initial_h": (lambda: {"lstm_inputs": ["xt", "W", "R", "", "", "h0"],
                               "inits": [init("h0", np.full((1, 1, 5), 0.5, np.float32))]}, "non-zero constant"),
        "sequence_lens": (lambda: {"lstm_inputs": ["xt", "W", "R", "", "lens"],
                                   "inits": [init("lens", np.array([7], np.int32))]}, "sequence_lens"),
        "second_input": (second_input, "streams one input"),
        "cell_state_output": (lambda: {"outputs": ["y", "Y_c"]}, "cell state Y_c"),
        "unknown_op": (lambda: {"after": [t("Softplus", ["h"], ["y"], name="sp")]},
                       "unsupported ONNX op Softplus at node 'sp'.*supported: "),
        "custom_domain": (lambda: {"after": [t("Relu", ["h"], ["y"], domain="com.example")]}, "custom operator domain"),
        "missing_initializer": (lambda: {"lstm_inputs": ["xt", "W", "Rmissing"]}, "initializer is missing"),
        "cycle": (lambda: {"after": [t("Add", ["h", "z"], ["y"], name="a"), t("Relu", ["y"], ["z"], name="b")]},
                  "cycle"),
        "residual": (lambda: {"after": [t("Add", ["h", "h"], ["y"])]}, "combines two values"),
        "steps_slice": (lambda: {"inits": [init("s", [2]), init("e", [9]), init("ax", [1])],
                                 "after": [t("Slice", ["h", "s", "e", "ax"], ["y"])]}, "only the last step"),
        "softmax_over_time": (lambda: {"after": [t("Softmax", ["h"], ["y"], axis=1)]}, "only the feature axis"),
        "softmax_opset12_default_axis": (lambda: {"opset": 12, "after": [t("Softmax", ["h"], ["y"])]},
                                         "only the feature axis"),
        "lstm_output_c": (lambda: {"after": [t("Identity", ["Y_c"], ["y"])]}, "cell state Y_c"),
        "stacked_h_n": (lambda: {"inits": [init("two", np.array([0], np.int64))],
                                 "after": [t("Concat", ["Y_h", "Y_h"], ["y"], axis=0)]}, "hidden state of every layer"),
        "weights_from_input": (lambda: {"lstm_inputs": ["xt", "xt", "R"]}, "must be a constant"),
        "absurd_constant": (lambda: {"inits": [init("shape", np.array([1 << 20, 1 << 20], np.int64))],
                                     "after": [t("ConstantOfShape", ["shape"], ["c"]), t("Add", ["h", "c"], ["y"])]},
                            "absurd allocation"),
        "centred_conv": (lambda: {"inits": [init("cw", np.ones((4, 4, 3), np.float32))],
                                  "before": [t("Transpose", ["x"], ["xc"], perm=[0, 2, 1]),
                                             t("Conv", ["xc", "cw"], ["c"], pads=[1, 1]),
                                             t("Transpose", ["c"], ["xt"], perm=[2, 0, 1])]},
                         "a centred convolution needs future inputs"),
        "short_conv": (lambda: {"inits": [init("cw", np.ones((4, 4, 3), np.float32))],
                                "before": [t("Transpose", ["x"], ["xc"], perm=[0, 2, 1]),
                                           t("Conv", ["xc", "cw"], ["c"]),
                                           t("Transpose", ["c"], ["xt"], perm=[2, 0, 1])]}, "needs 2"),
    }


REFUSALS = _refusal_cases()


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_refused_with_the_reason(tmp_path, case):
    kwargs, message = REFUSALS[case]
    needs_onnx()
    _, model = _lstm_model(**kwargs())
    with pytest.raises(ModelFormatError, match=message):
        _load(tmp_path, model)


def test_absurd_tensor_shapes(tmp_path):
    onnx = needs_onnx()
    from onnx import TensorProto
    for dims, message in (([1 << 33], "absurd shape"), ([1 << 20, 1 << 20], "over the"), ([64, 64], "needs 16,384")):
        _, model = _lstm_model()
        bad = model.graph.initializer[1]
        bad.ClearField("raw_data")
        bad.ClearField("dims")
        bad.dims.extend(dims)
        bad.data_type = TensorProto.FLOAT
        bad.raw_data = b"\0" * 16
        onnx.save(model, str(tmp_path / "m.onnx"))
        with pytest.raises(ModelFormatError, match=message):
            read_onnx(tmp_path / "m.onnx")


def _external(tmp_path, **entries):
    """The committed external-data fixture with its location/offset/length rewritten."""
    import onnx
    model = onnx.load(str(ONNX_DATA / "external_lstm.onnx"), load_external_data=False)
    shutil.copy(ONNX_DATA / "external_lstm.onnx.data", tmp_path / "external_lstm.onnx.data")
    tensor = next(t for t in model.graph.initializer if t.name == "W")
    for entry in tensor.external_data:
        if entry.key in entries:
            entry.value = str(entries[entry.key])
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("entries, message", [
    ({"location": "../external_lstm.onnx.data"}, "could leave the model's directory"),
    ({"location": "/etc/passwd"}, "could leave the model's directory"),
    ({"location": "missing.data"}, "is missing"),
    ({"offset": 1100}, "truncated"),
    ({"length": 10}, "needs 384"),
])
def test_external_data_is_checked(tmp_path, entries, message):
    needs_onnx()
    with pytest.raises(ModelFormatError, match=message):
        read_onnx(_external(tmp_path, **entries))


def test_external_data_symlink_out_of_the_directory_is_refused(tmp_path):
    needs_onnx()
    path = _external(tmp_path)
    (tmp_path / "model").mkdir()
    os.rename(path, tmp_path / "model" / "m.onnx")
    os.symlink(tmp_path / "external_lstm.onnx.data", tmp_path / "model" / "external_lstm.onnx.data")
    with pytest.raises(ModelFormatError, match="outside the model's directory"):
        read_onnx(tmp_path / "model" / "m.onnx")


# --- torch.onnx.export round trips ---

LIVE = ["lstm_mlp_head", "gru_mlp_head_softmax", "two_heads", "lstm_layernorm_after", "batchnorm_input",
        "layernorm_input_gelu", "linear_tanh_input_gru", "causal_conv", "Lstm2Linear", "GruLinear", "LastStep",
        "HnLast", "TwoOutputs", "TimeMajor"]
DYNAMO = ["lstm_mlp_head", "two_heads", "batchnorm_input", "causal_conv", "Lstm2Linear", "HnLast"]


def _torch_expected(net, xs, time_major=False):
    import torch
    with torch.no_grad():
        x = torch.from_numpy(xs)[:, None] if time_major else torch.from_numpy(xs)[None]
        out = net(x)
    outs = out if isinstance(out, tuple) else (out,)
    return np.concatenate([(o[:, 0] if time_major else o[0]).numpy() for o in outs], -1)


@pytest.mark.slow           # each export runs in a fresh interpreter (a dynamo exporter quirk)
@pytest.mark.torch
@pytest.mark.parametrize("model, exporter", [(m, "torchscript") for m in LIVE] + [(m, "dynamo") for m in DYNAMO])
def test_torch_export_streams_like_torch_and_onnx_runtime(tmp_path, model, exporter):
    pytest.importorskip("onnx", reason="torch.onnx.export needs the onnx package")
    if exporter == "dynamo":
        pytest.importorskip("onnxscript", reason="the dynamo exporter needs onnxscript")
    time_major = model == "TimeMajor"
    path = tmp_path / f"{model}.onnx"
    make_onnx.export_torch(model, path, exporter, time_axis=0 if time_major else 1)
    net = make_onnx.build_torch(model)
    xs = np.random.default_rng(5).normal(size=(STEPS, make_onnx.input_size(net))).astype(np.float32)
    spec = read_onnx(path)
    got = stream(spec, xs)
    steps, want = make_onnx.ort_outputs(path, xs, time_major) if ort_usable() else (None, None)
    if spec.source["last_step_outputs"]:
        np.testing.assert_allclose(got[steps - 1], want, atol=1e-5, rtol=0)
        np.testing.assert_allclose(got[-1], _torch_expected(net, xs, time_major).reshape(-1), atol=1e-5, rtol=0)
        return
    np.testing.assert_allclose(got, _torch_expected(net, xs, time_major), atol=1e-5, rtol=0)
    if want is not None:
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


@pytest.mark.torch
def test_torch_export_of_a_centred_conv_is_refused(tmp_path):
    pytest.importorskip("onnx")
    make_onnx.export_torch("CentredConv", tmp_path / "c.onnx", "torchscript")
    with pytest.raises(ModelFormatError, match="a centred convolution needs future inputs"):
        read_onnx(tmp_path / "c.onnx")


@pytest.mark.slow
@pytest.mark.torch
def test_lstm_with_proj_size_is_refused(tmp_path):
    """ONNX's LSTM has no projection: the TorchScript exporter refuses nn.LSTM(proj_size=...); the
    dynamo one writes a node with hidden_size = proj_size that no runtime can run."""
    import torch
    pytest.importorskip("onnxscript")
    with pytest.raises(Exception, match="projections"):
        make_onnx.export_torch("lstm_proj_mlp_head", tmp_path / "p.onnx", "torchscript")
    make_onnx.export_torch("lstm_proj_mlp_head", tmp_path / "p.onnx", "dynamo")
    with pytest.raises(ModelFormatError, match="ONNX's LSTM has no projection"):
        read_onnx(tmp_path / "p.onnx")
    del torch


@pytest.mark.parametrize("fixture", ["lstm_mlp_head", "peephole_lstm", "last_step_lstm2"])
def test_verify_against_the_onnx_file_it_came_from(tmp_path, fixture):
    """`edgelstm verify` with ONNX Runtime: every step (or every prefix, for a last-step model)."""
    need_ort()
    from edgelstm.model import deploy
    from edgelstm.verify import verify
    src = ONNX_DATA / f"{fixture}.onnx"
    deploy.save(edgelstm.load(src).spec, tmp_path / "m.elstm")
    verdict = verify(edgelstm.load(tmp_path / "m.elstm"), src, steps=300)
    assert verdict.passed(1e-5) and "ONNX Runtime" in verdict.reference, verdict


# The whole zoo through torch.onnx.export (TorchScript exporter): what ONNX can hold streams;
# what torch cannot export, or what the exported graph cannot stream, is named.
ZOO_NOT_EXPORTED = {"lstm_proj_mlp_head", "conv_bn_silu_lstm_proj_layernorm"}     # torch: no proj_size in ONNX
ZOO_REFUSED = {
    "attention_pool": "shape depends on the sequence length", "attention_pool_mlp_gru": "shape depends on",
    "attention_pool_mlp_lstm": "shape depends on",             # the causal mask is built from T
    "lstmcell_stack_gelu_head": "selects step", "grucell_stack_tanh_head": "selects step",   # a loop unrolled for T
}


@pytest.mark.torch
@pytest.mark.parametrize("name", __import__("zoo_names").ZOO_NAMES)
def test_every_zoo_model_exported_to_onnx_streams_or_is_refused_by_name(tmp_path, name):
    pytest.importorskip("onnx", reason="torch.onnx.export needs the onnx package")
    if name in ZOO_NOT_EXPORTED:
        pytest.skip("torch.onnx.export cannot export an LSTM with proj_size")
    path = tmp_path / f"{name}.onnx"
    make_onnx.export_torch(name, path, "torchscript")
    if name in ZOO_REFUSED:
        with pytest.raises(ModelFormatError, match=ZOO_REFUSED[name]):
            read_onnx(path)
        return
    net = make_onnx.build_torch(name)
    xs = np.random.default_rng(5).normal(size=(STEPS, make_onnx.input_size(net))).astype(np.float32)
    got = stream(read_onnx(path), xs)
    np.testing.assert_allclose(got, _torch_expected(net, xs), atol=1e-5, rtol=0)
    if ort_usable():
        _, want = make_onnx.ort_outputs(path, xs, False)
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
