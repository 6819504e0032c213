"""`edgelstm export-c`: the generated C, compiled with the system compiler, against the Python
engine: the classic models over 10,000 streamed steps, every layer graph of tests/specs.py and
the zoo's goldens over 1,000; float32 within 1e-5, int8 equal to the Python int8 model
(dequantized_spec) within 1e-5 and to the float32 model within the documented bound."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
from bridge_build import BRIDGE, need_cc
from conftest import ROOT
from specs import SPECS, graph_specs, random_spec
from test_zoo import ZOO_GOLDENS, zoo_golden

import edgelstm
from edgelstm.cli import main as cli_main
from edgelstm.engine import Model
from edgelstm.export.c_source import export, render
from edgelstm.model.layers import Activation, AttentionPool, CausalConv1d, Head, Linear
from edgelstm.model.quantize import dequantized_spec, quantize_matrix
from edgelstm.model.spec import ModelSpec, RecurrentLayer
from edgelstm.model.state_dict import spec_from_state_dict

STEPS = 10_000
GRAPH_STEPS = 1000
EDGES = ("edge_proj_peephole_pool_into_y", "edge_bare_heads")
GRAPHS = sorted(graph_specs(np.random.default_rng(0))) + list(EDGES)
STRICT = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-Wshadow", "-Wconversion",
          "-Wno-sign-conversion"]
SANITIZE = ["-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all"]
INT8_BOUND = 0.1        # README, "The model on the board": int8 vs float32 outputs, |dy| max

pytestmark = pytest.mark.integration      # every test here compiles and runs C


def spec_named(name: str):
    if name == "bundled":
        return edgelstm.load(ROOT / "edgelstm" / "data" / "activity.elstm").spec
    if name in EDGES:
        return edge_spec(name, np.random.default_rng(len(name)))
    if name in GRAPHS:
        return graph_specs(np.random.default_rng(len(name)))[name]
    kw = dict(SPECS[name])
    return random_spec(np.random.default_rng(len(name)), proj=kw.pop("proj", (0,) * len(kw["kinds"])), **kw)


def edge_spec(name, rng):
    """Corners of the buffer planning: a kernel-1 conv (no history), a projected peephole LSTM,
    an attention pool writing y itself with a score that starts with an activation; heads on
    the bare recurrent output, one with no layers at all."""
    def u(*shape):
        return rng.uniform(-0.5, 0.5, shape)
    lstm = RecurrentLayer("lstm", 4, 6, u(24, 4), u(24, 3), u(24), u(24), w_hr=u(3, 6), w_peep=u(3, 6))
    if name == "edge_bare_heads":
        gru = RecurrentLayer("gru", 3, 5, u(15, 3), u(15, 5), u(15), u(15))
        return ModelSpec((lstm, gru), pre=(Linear(u(4, 2), u(4)),),
                         heads=(Head("raw", ()), Head("probs", (Activation("softmax", 5),)),
                                Head("pooled", (AttentionPool((Activation("tanh", 5), Linear(u(1, 5), u(1)))),))))
    score = (Activation("relu", 3), Linear(u(2, 3), u(2)), Activation("silu", 2), Linear(u(1, 2), u(1)))
    return ModelSpec((lstm,), pre=(CausalConv1d(u(4, 2, 1), u(4)), Activation("tanh", 4)),
                     post=(AttentionPool(score),))


def build(spec, out_dir, int8=False, flags=("-O2",)):
    export(spec, out_dir, int8=int8)
    exe = out_dir / "harness"
    proc = subprocess.run([need_cc(), *STRICT, *flags, f"-I{out_dir}", "-o", str(exe),
                           str(BRIDGE / "tests" / "model_harness.c"), str(out_dir / "model.c"), "-lm"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return exe


def run_c(exe, spec, xs):
    """(Y (T, O), final state) from the compiled model fed xs one step at a time."""
    xs_path, out_path = exe.parent / "x.bin", exe.parent / "y.bin"
    xs.astype("<f4").tofile(xs_path)
    proc = subprocess.run([str(exe), "run", str(xs_path), str(out_path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = np.fromfile(out_path, "<f4")
    n_y = len(xs) * spec.output_size
    return out[:n_y].reshape(len(xs), spec.output_size), out[n_y:]


def assert_state_close(state_c, state_py):
    """Within 1e-5, relative for large values: an attention pool's d and acc are running sums
    that grow with the steps, where float32 spacing alone passes 1e-5."""
    np.testing.assert_allclose(state_c, state_py, rtol=1e-5, atol=1e-5)


def run_python(spec, xs):
    stream = Model(spec).stream()
    return stream.step_many(xs), stream.get_state().values


def inputs(spec, steps=STEPS, seed=0):
    xs = np.random.default_rng(seed).normal(size=(steps, spec.input_size)).astype(np.float32)
    norm = (spec.classic_parts() or (None,))[0]
    if norm is not None:
        xs = (xs / norm.scale + norm.offset).astype(np.float32)
    return xs


@pytest.mark.parametrize("name", ["bundled", *sorted(SPECS)])
def test_float32_matches_the_engine_over_10000_steps(name, tmp_path):
    spec = spec_named(name)
    xs = inputs(spec)
    y_c, state_c = run_c(build(spec, tmp_path), spec, xs)
    y_py, state_py = run_python(spec, xs)
    assert np.abs(y_c - y_py).max() <= 1e-5
    assert np.abs(state_c - state_py).max() <= 1e-5


@pytest.mark.parametrize("name", ["bundled", "gru", "lstm_proj"])
def test_int8_matches_python_int8_and_stays_near_float32(name, tmp_path):
    spec = spec_named(name)
    xs = inputs(spec)
    y_c, state_c = run_c(build(spec, tmp_path, int8=True), spec, xs)
    y_q, state_q = run_python(dequantized_spec(spec), xs)
    y_f, _ = run_python(spec, xs)
    assert np.abs(y_c - y_q).max() <= 1e-5           # both sides run the same int8 model
    assert np.abs(state_c - state_q).max() <= 1e-5
    assert np.abs(y_q - y_f).max() <= INT8_BOUND


def test_int8_quantisation_is_per_row_symmetric():
    w = np.array([[0.5, -1.0, 0.25], [0.0, 0.0, 0.0], [1e-3, 2e-3, -4e-3]], np.float32)
    m = quantize_matrix(w)
    assert m.q.dtype == np.int8 and np.abs(m.q).max() == 127 and m.q[0, 1] == -127
    assert m.scale[1] == 1.0 and not m.q[1].any()                 # an all-zero row stays zero
    assert np.abs(m.dequantized() - w).max() <= m.scale.max() / 2 + 1e-9


def test_nonfinite_input_is_refused_and_state_kept(tmp_path):
    spec = spec_named("lstm")
    xs = inputs(spec, steps=50)
    xs[20, 1] = np.nan
    y_c, state_c = run_c(build(spec, tmp_path, flags=SANITIZE), spec, xs)
    assert np.isnan(y_c[20]).all()
    y_py, state_py = run_python(spec, np.delete(xs, 20, axis=0))
    assert np.abs(np.delete(y_c, 20, axis=0) - y_py).max() <= 1e-5
    assert np.abs(state_c - state_py).max() <= 1e-5


def test_export_c_command(tmp_path, capsys):
    assert cli_main(["export-c", str(ROOT / "edgelstm" / "data" / "activity.elstm"), "-o", str(tmp_path),
                     "--name", "activity", "--int8"]) == 0
    out = capsys.readouterr().out
    assert "flash (const data) 16,912 bytes; RAM 512 bytes per stream + 140 bytes scratch" in out
    assert "int8 vs float32" in out
    header = (tmp_path / "activity.h").read_text()
    assert "#define ACTIVITY_INT8 1" in header and "int activity_step(activity_state *s" in header
    assert cli_main(["export-c", str(ROOT / "edgelstm" / "data" / "activity.elstm"), "-o", str(tmp_path),
                     "--name", "not-an-identifier"]) == 1


@pytest.mark.parametrize("name", GRAPHS)
def test_graph_float32_matches_the_engine(name, tmp_path):
    spec = spec_named(name)
    xs = inputs(spec, GRAPH_STEPS)
    y_c, state_c = run_c(build(spec, tmp_path), spec, xs)
    y_py, state_py = run_python(spec, xs)
    assert np.abs(y_c - y_py).max() <= 1e-5
    assert_state_close(state_c, state_py)


@pytest.mark.parametrize("name", GRAPHS)
def test_graph_int8_matches_python_int8_and_stays_near_float32(name, tmp_path):
    spec = spec_named(name)
    xs = inputs(spec, GRAPH_STEPS)
    y_c, state_c = run_c(build(spec, tmp_path, int8=True), spec, xs)
    y_q, state_q = run_python(dequantized_spec(spec), xs)
    y_f, _ = run_python(spec, xs)
    assert np.abs(y_c - y_q).max() <= 1e-5
    assert_state_close(state_c, state_q)
    assert np.abs(y_q - y_f).max() <= INT8_BOUND


@pytest.mark.parametrize("name", GRAPHS)
def test_graph_under_sanitizers_refuses_nonfinite_input(name, tmp_path):
    """ASan/UBSan over every layer kind (no scratch buffer overrun); a NaN step leaves the
    state (conv history and attention sums included) as it was."""
    spec = spec_named(name)
    xs = inputs(spec, steps=60)
    xs[30, 0] = np.inf
    y_c, state_c = run_c(build(spec, tmp_path, int8=name == "two_heads", flags=SANITIZE), spec, xs)
    assert np.isnan(y_c[30]).all()
    y_py, state_py = run_python(dequantized_spec(spec) if name == "two_heads" else spec, np.delete(xs, 30, axis=0))
    assert np.abs(np.delete(y_c, 30, axis=0) - y_py).max() <= 1e-5
    assert_state_close(state_c, state_py)


@pytest.mark.parametrize("name", ZOO_GOLDENS)
def test_zoo_golden_through_the_c_matches_torch(name, tmp_path):
    weights, arch, xs, ys = zoo_golden(name)
    spec = spec_from_state_dict(weights, arch=arch)
    y_c, _ = run_c(build(spec, tmp_path), spec, xs.astype(np.float32))
    np.testing.assert_allclose(y_c, ys, atol=1e-5, rtol=0)


def test_generated_c_holds_only_what_the_model_uses():
    classic = render(spec_named("bundled"))[0]
    assert "no libm calls" in classic["model.h"]
    for absent in ("gru_layer", "softmax", "conv_layer", "attention_pool", "expf(", "sqrtf("):
        assert absent not in classic["model.c"]
    graph = render(spec_named("norms_and_activations"))[0]
    assert "libm: erff, expf, logf, sqrtf (link with -lm)" in graph["model.h"]
    assert "lstm_layer" not in graph["model.c"] and "static void softmax(" not in graph["model.c"]
    heads = render(spec_named("two_heads"))[0]["model.h"]
    assert "#define MODEL_LABEL_AT 0" in heads and "#define MODEL_LEVEL_AT 3" in heads
    assert "#define MODEL_LEVEL_SIZE 1" in heads
    conv = spec_named("causal_conv")
    header = render(conv)[0]["model.h"]
    assert f"#define MODEL_STATE_SIZE {conv.state_size} " in header and "pre.0 history (20)" in header
