"""Compiled kernels against the NumPy oracle, exactness between entry points, no allocation."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from specs import SPECS, graph_specs, random_spec

import edgelstm
from edgelstm.kernels import gate_math, reference


@pytest.mark.parametrize("name", sorted(SPECS))
def test_stream_matches_numpy_reference(rng, name):
    kw = SPECS[name]
    spec = random_spec(rng, proj=kw.pop("proj", (0,) * len(kw["kinds"])), **kw)
    xs = rng.normal(0, 2, (400, spec.input_size)).astype(np.float32)
    expected, _ = reference.run(spec, xs, dtype=np.float64)
    got = edgelstm.Model(spec).stream().step_many(xs)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("k", [1, 7, 8, 9, 17, 64])
def test_bank_equals_independent_streams(rng, k):
    """k streams (not always a multiple of the tile) stepped together == each stepped alone."""
    model = edgelstm.Model(random_spec(rng, kinds=("lstm", "gru"), hidden=(12, 10), proj=(0, 0)))
    xs = rng.normal(size=(20, k, model.input_size)).astype(np.float32)
    bank = model.bank(capacity=k + 3)
    ids = [f"sensor-{i}" for i in range(k)]
    got = np.array([bank.step(ids, xs[t]) for t in range(20)])
    for i in range(k):
        np.testing.assert_array_equal(got[:, i], model.stream().step_many(xs[:, i]))


def test_bank_subsets_and_order_do_not_leak_state(rng):
    model = edgelstm.Model(random_spec(rng))
    bank, a, b = model.bank(8), model.stream(), model.stream()
    xs = rng.normal(size=(30, 2, model.input_size)).astype(np.float32)
    for t in range(30):
        if t % 3 == 0:       # only a
            np.testing.assert_array_equal(bank.step(["a"], xs[t, :1])[0], a.step(xs[t, 0]))
        else:                # both, in reversed order
            y = bank.step(["b", "a"], xs[t, ::-1])
            np.testing.assert_array_equal(y[1], a.step(xs[t, 0]))
            np.testing.assert_array_equal(y[0], b.step(xs[t, 1]))


def test_gate_math_error_bounds():
    v = np.linspace(-30, 30, 200_001).astype(np.float32)

    @edgelstm._numba.kernel
    def apply(v, t, s):
        for i in range(v.shape[0]):
            t[i] = gate_math.tanh(v[i])
            s[i] = gate_math.sigmoid(v[i])

    t, s = np.empty_like(v), np.empty_like(v)
    apply(v, t, s)
    assert np.abs(t - np.tanh(v.astype(np.float64))).max() < 5e-7
    assert np.abs(s - 1 / (1 + np.exp(-v.astype(np.float64)))).max() < 2e-7


def test_hot_path_allocates_nothing():
    """NUMBA_NRT_STATS counts every allocation by compiled code: a kernel driven 1 time and
    1000 times from a compiled loop must allocate the same (a per-step temporary would add 999)."""
    script = textwrap.dedent("""
        import numpy as np, numba
        import edgelstm
        from numba.core.runtime import rtsys
        from edgelstm.kernels import cpu
        from edgelstm.model.layers import Linear
        from edgelstm.model.spec import ModelSpec, RecurrentLayer
        rng = np.random.default_rng(0)
        def layer(kind, i, h, g):
            return RecurrentLayer(kind, i, h, rng.normal(size=(g * h, i)), rng.normal(size=(g * h, h)),
                                  rng.normal(size=g * h), rng.normal(size=g * h))
        spec = ModelSpec.classic((layer("lstm", 4, 16, 4), layer("gru", 16, 8, 3)),
                                 Linear(rng.normal(size=(2, 8)), np.zeros(2)))
        model = edgelstm.Model(spec)
        p, m = model.params, model.meta
        state, work = np.zeros((4, spec.state_size), np.float32), model.new_work()
        rows, row0, st = np.arange(4), np.zeros(1, np.int64), np.zeros(4, np.int8)
        x, y = np.ones(4, np.float32), np.empty(2, np.float32)
        X, Y = np.ones(16, np.float32), np.empty(8, np.float32)

        @numba.njit
        def drive(n, p, m, state, rows, row0, x, y, X, Y, work, st):
            for _ in range(n):
                cpu.step(p, m, state, row0, x, y, work, st)        # one stream, one step
                cpu.step(p, m, state, rows, X, Y, work, st)        # four streams
                cpu.step(p, m, state, row0, X, Y, work, st)        # one stream, four steps
                cpu.step_graph(p, m, state, rows, X, Y, work, st)
        def allocs(n):
            before = rtsys.get_allocation_stats().alloc
            drive(n, p, m, state, rows, row0, x, y, X, Y, work, st)
            return rtsys.get_allocation_stats().alloc - before
        drive(1, p, m, state, rows, row0, x, y, X, Y, work, st)
        print(allocs(1), allocs(1000))
    """)
    env = dict(os.environ, NUMBA_NRT_STATS="1")
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    one, thousand = map(int, out.stdout.split())
    assert one == thousand, f"allocations grow with steps: {one} for 1, {thousand} for 1000"


@pytest.mark.parametrize("name", ["mlp_head", "norms_and_activations", "peephole", "causal_conv",
                                  "attention_pool", "two_heads"])
def test_graph_layers_match_numpy_reference(name):
    """Every layer around the recurrent core, streamed 300 steps, one stream and a bank of 11."""
    rng = np.random.default_rng(7)
    spec = graph_specs(rng)[name]
    xs = rng.normal(0, 2, (300, spec.input_size)).astype(np.float32)
    expected, _ = reference.run(spec, xs, dtype=np.float64)
    model = edgelstm.Model(spec)
    np.testing.assert_allclose(model.stream().step_many(xs), expected, atol=1e-5, rtol=0)
    bank = model.bank(16)
    ids = [f"s{i}" for i in range(11)]
    got = np.array([bank.step(ids, np.repeat(x[None], 11, axis=0)) for x in xs[:50]])
    for i in range(11):
        np.testing.assert_allclose(got[:, i], expected[:50], atol=1e-5, rtol=0)
