"""`edgelstm export-c`: the generated C, compiled with the system compiler, against the Python
engine over 10,000 streamed steps; float32 within 1e-5, int8 equal to the Python int8 model
within 1e-5 and to the float32 model within the documented bound."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
from bridge_build import BRIDGE, need_cc
from conftest import ROOT
from specs import SPECS, random_spec

import edgelstm
from edgelstm.cli import main as cli_main
from edgelstm.engine import Model
from edgelstm.export.c_source import export
from edgelstm.model.quantize import dequantized_spec, quantize_matrix

STEPS = 10_000
STRICT = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-Wshadow", "-Wconversion",
          "-Wno-sign-conversion"]
SANITIZE = ["-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all"]
INT8_BOUND = 0.1        # README, "The model on the board": int8 vs float32 outputs, |dy| max


def spec_named(name: str):
    if name == "bundled":
        return edgelstm.load(ROOT / "edgelstm" / "data" / "activity.elstm").spec
    kw = dict(SPECS[name])
    return random_spec(np.random.default_rng(len(name)), proj=kw.pop("proj", (0,) * len(kw["kinds"])), **kw)


def build(spec, out_dir, int8=False, flags=("-O2",)):
    export(spec, out_dir, int8=int8)
    exe = out_dir / "harness"
    proc = subprocess.run([need_cc(), *STRICT, *flags, f"-I{out_dir}", "-o", str(exe),
                           str(BRIDGE / "tests" / "model_harness.c"), str(out_dir / "model.c")],
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


def run_python(spec, xs):
    stream = Model(spec).stream()
    return stream.step_many(xs), stream.get_state().values


def inputs(spec, steps=STEPS, seed=0):
    xs = np.random.default_rng(seed).normal(size=(steps, spec.input_size)).astype(np.float32)
    norm = spec.classic_parts()[0]
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
    assert "flash (const data) 16,912 bytes" in out and "RAM 512 bytes per stream" in out
    assert "int8 vs float32" in out
    header = (tmp_path / "activity.h").read_text()
    assert "#define ACTIVITY_INT8 1" in header and "int activity_step(activity_state *s" in header
    assert cli_main(["export-c", str(ROOT / "edgelstm" / "data" / "activity.elstm"), "-o", str(tmp_path),
                     "--name", "not-an-identifier"]) == 1
