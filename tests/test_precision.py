"""float16 weights (model/precision.py, kernels/matvec.py): what is rounded, that every kernel
computes exactly with the rounded weights (the NumPy oracle runs the same spec), the file
round trip, and the refusals."""

import dataclasses
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from allocations import assert_allocations_flat
from conftest import ROOT
from specs import SPECS, graph_specs, random_spec

import edgelstm
from edgelstm.errors import BackendError, ModelFormatError
from edgelstm.kernels import bank_gemm, reference
from edgelstm.model import deploy
from edgelstm.model.spec import ModelSpec


def every_spec(rng) -> dict:
    out = {}
    for name, kw in SPECS.items():
        kw = dict(kw)
        out[name] = random_spec(rng, proj=kw.pop("proj", (0,) * len(kw["kinds"])), **kw)
    return {**out, **graph_specs(rng)}


SPEC_NAMES = sorted(every_spec(np.random.default_rng(0)))


def test_only_matrices_are_rounded_and_the_hash_changes(rng):
    spec = random_spec(rng, kinds=("lstm", "gru"), hidden=(12, 8), proj=(5, 0), norm=True)
    half = spec.with_weights("float16")
    for a, b in zip(spec.layers, half.layers):
        for name in ("w_ih", "w_hh"):
            assert not np.array_equal(getattr(a, name), getattr(b, name))
            np.testing.assert_array_equal(getattr(b, name), getattr(a, name).astype(np.float16).astype(np.float32))
        np.testing.assert_array_equal(a.b_ih, b.b_ih)                    # biases stay float32
    assert half.layers[0].w_hr is not None and half.weights == "float16"
    np.testing.assert_array_equal(half.pre[0].offset, spec.pre[0].offset)   # normalisation too
    assert half.content_hash() != spec.content_hash()
    assert "weights" not in spec.architecture()            # float32 models keep the hash they had
    assert half.with_weights("float16").content_hash() == half.content_hash()


@pytest.mark.parametrize("name", SPEC_NAMES)
def test_every_kernel_computes_with_the_rounded_weights(name):
    rng = np.random.default_rng(5)
    half = every_spec(rng)[name].with_weights("float16")
    model = edgelstm.Model(half)
    model.gemm_min = bank_gemm.MIN_STREAMS             # these models are small: take the products at 40 streams
    xs = rng.normal(0, 2, (300, half.input_size)).astype(np.float32)
    expected, _ = reference.run(half, xs, dtype=np.float64)
    s = model.stream()
    np.testing.assert_allclose(np.array([s.step(x) for x in xs]), expected, atol=1e-5, rtol=0)
    np.testing.assert_allclose(model.stream().step_many(xs), expected, atol=1e-5, rtol=0)
    for k in (5, 40):                                      # cpu.step's tiles, then matrix products if it can
        bank = model.bank(k)
        got = np.array([bank.step(list(range(k)), np.repeat(x[None], k, axis=0)) for x in xs[:60]])
        np.testing.assert_allclose(got[:, k - 1], expected[:60], atol=1e-5, rtol=0)


def test_the_packed_matrices_take_half_the_bytes(rng):
    spec = random_spec(rng, kinds=("lstm", "lstm"), input_size=8, hidden=(64, 64), proj=(0, 0), head=1)
    full, half = edgelstm.Model(spec), edgelstm.Model(spec.with_weights("float16"))
    assert 0.49 < half.memory_bytes / full.memory_bytes < 0.52


def test_the_file_keeps_the_precision(rng, tmp_path):
    half = random_spec(rng).with_weights("float16")
    path = tmp_path / "m.elstm"
    digest = deploy.save(half, path)
    back = deploy.load(path)
    assert back.weights == "float16" and back.content_hash() == digest == half.content_hash()


def test_refusals(rng):
    spec = random_spec(rng)
    with pytest.raises(ModelFormatError, match="not float16"):
        ModelSpec(spec.layers, spec.pre, spec.post, weights="float16")
    with pytest.raises(ModelFormatError, match="weights must be one of"):
        ModelSpec(spec.layers, weights="bfloat16")
    w_hh = spec.layers[0].w_hh.copy()
    w_hh[0, 0] = 1e5
    big = dataclasses.replace(spec, layers=(dataclasses.replace(spec.layers[0], w_hh=w_hh),))
    with pytest.raises(ModelFormatError, match="beyond float16's range"):
        big.with_weights("float16")
    with pytest.raises(BackendError, match="float16 weights"):
        edgelstm.Model(spec.with_weights("float16")).bank(4, backend="cuda")


def test_convert_prints_what_float16_costs(tmp_path):
    out = tmp_path / "a16.elstm"
    run = subprocess.run([sys.executable, "-m", "edgelstm", "convert", str(ROOT / "edgelstm" / "data" / "activity.pt"),
                          "-o", str(out), "--precision", "float16"], capture_output=True, text=True, timeout=300,
                         cwd=ROOT)
    assert run.returncode == 0, run.stderr
    assert "float16 weights: max |y - y_float32| = " in run.stdout
    assert deploy.load(out).weights == "float16"
    shown = subprocess.run([sys.executable, "-m", "edgelstm", "inspect", str(out)], capture_output=True, text=True,
                           timeout=300, cwd=ROOT)
    assert "float16 matrices" in shown.stdout


def test_the_float16_step_allocates_nothing():
    """As test_kernels.test_hot_path_allocates_nothing, for a model with float16 weights."""
    script = textwrap.dedent("""
        import numba, numpy as np, edgelstm
        from numba.core.runtime import rtsys
        from edgelstm.kernels import cpu
        from specs import random_spec
        model = edgelstm.Model(random_spec(np.random.default_rng(0), kinds=("lstm", "gru"), hidden=(16, 8),
                                           proj=(0, 0)).with_weights("float16"))
        p, m = model.params, model.meta
        state, work = np.zeros((4, model.state_size), np.float32), model.new_work()
        rows, st = np.arange(4), np.zeros(4, np.int8)
        X, Y = np.ones(4 * model.input_size, np.float32), np.empty(4 * model.output_size, np.float32)

        @numba.njit
        def drive(n, p, m, state, rows, X, Y, work, st):
            for _ in range(n):
                cpu.step(p, m, state, rows, X, Y, work, st)
        def allocs(n):
            before = rtsys.get_allocation_stats().alloc
            drive(n, p, m, state, rows, X, Y, work, st)
            return rtsys.get_allocation_stats().alloc - before
        drive(1, p, m, state, rows, X, Y, work, st)
        print(allocs(1), allocs(1000))
    """)
    assert_allocations_flat(script, 1000)
