"""Compiled kernels against the NumPy oracle, exactness between entry points, no allocation."""

import textwrap

import numpy as np
import pytest
from allocations import assert_allocations_flat
from specs import SPECS, graph_specs, overflowing_model, random_spec

import edgelstm
from edgelstm.kernels import contract, gate_math, reference


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
    """k streams (not always a multiple of the tile) stepped together == each stepped alone
    (to 1e-6: step_many runs layer by layer, in another summation order)."""
    model = edgelstm.Model(random_spec(rng, kinds=("lstm", "gru"), hidden=(12, 10), proj=(0, 0)))
    xs = rng.normal(size=(20, k, model.input_size)).astype(np.float32)
    bank = model.bank(capacity=k + 3)
    ids = [f"sensor-{i}" for i in range(k)]
    got = np.array([bank.step(ids, xs[t]) for t in range(20)])
    for i in range(k):
        np.testing.assert_allclose(got[:, i], model.stream().step_many(xs[:, i]), atol=1e-6, rtol=0)


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


_ALLOCATION_PRELUDE = textwrap.dedent("""
        import numpy as np, numba
        import edgelstm
        from numba.core.runtime import rtsys
        from edgelstm.kernels import contract, cpu, sequence
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
""")   # a model of both layer kinds, for the NUMBA_NRT_STATS tests


def test_hot_path_allocates_nothing():
    """NUMBA_NRT_STATS counts every allocation by compiled code: a kernel driven 1 time and
    1000 times from a compiled loop must allocate the same (a per-step temporary would add 999)."""
    script = _ALLOCATION_PRELUDE + textwrap.dedent("""
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
    assert_allocations_flat(script, 1000)


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


# --- the layer-wise sequence kernel (kernels/sequence.py, issue 13)

def _layerwise(model, state, xs):
    """Runs kernels.sequence.step_sequence on a copy of state; returns (rc, ys, new state)."""
    from edgelstm.kernels import sequence
    st = state.reshape(1, -1).copy()
    ys = np.full((xs.shape[0], model.output_size), -7.0, np.float32)
    rc = sequence.step_sequence(model.params, contract.transposed_weights(model.meta, model.params), model.meta,
                                st, np.zeros(1, np.int64), np.ascontiguousarray(xs).reshape(-1), ys.reshape(-1),
                                model.new_work(), model.new_seq(), np.zeros(1, np.int8))
    return rc, ys, st[0]


@pytest.mark.parametrize("kinds, hidden, head, norm", [
    (("lstm",), (16,), 3, False),
    (("lstm", "lstm"), (64, 64), 1, False),
    (("lstm", "lstm", "lstm"), (13, 7, 9), 0, True),
    (("gru", "lstm"), (9, 12), 2, True),
    (("gru",), (5,), 0, False),
])
@pytest.mark.parametrize("T", [1, 3, 63, 64, 65, 200])
def test_layerwise_matches_step_by_step(rng, kinds, hidden, head, norm, T):
    """Within 1e-6 of T calls of step (the summation order differs), outputs and state,
    from a non-zero state, for T below, at and across the block size."""
    spec = random_spec(rng, kinds=kinds, hidden=hidden, proj=(0,) * len(kinds), head=head, norm=norm)
    model = edgelstm.Model(spec)
    assert model.layerwise
    s = model.stream()
    s.step_many(rng.normal(size=(5, spec.input_size)).astype(np.float32))    # a non-zero start
    start = s.get_state().values.copy()
    xs = rng.normal(0, 2, (T, spec.input_size)).astype(np.float32)
    expected = np.array([s.step(x).copy() for x in xs])
    rc, ys, state = _layerwise(model, start, xs)
    assert rc == 0
    np.testing.assert_allclose(ys, expected, atol=1e-6, rtol=0)
    np.testing.assert_allclose(state, s.get_state().values, atol=1e-6, rtol=0)


def test_layerwise_not_used_for_projection_or_peepholes(rng):
    spec = random_spec(rng, kinds=("lstm",), hidden=(8,), proj=(4,))
    assert not edgelstm.Model(spec).layerwise
    xs = rng.normal(size=(100, spec.input_size)).astype(np.float32)
    model = edgelstm.Model(spec)
    s = model.stream()
    np.testing.assert_array_equal(model.stream().step_many(xs), np.array([s.step(x).copy() for x in xs]))


def test_layerwise_rejects_nonfinite_input_untouched(rng):
    model = edgelstm.Model(random_spec(rng, kinds=("lstm", "gru"), hidden=(12, 10), proj=(0, 0)))
    start = rng.normal(size=model.state_size).astype(np.float32)
    for bad in (0, 70, 199):
        xs = rng.normal(size=(200, model.input_size)).astype(np.float32)
        xs[bad, 1] = np.inf if bad % 2 else np.nan
        rc, ys, state = _layerwise(model, start, xs)
        assert rc == -(bad + 1)
        assert (ys == -7.0).all()                                   # nothing was computed
        np.testing.assert_array_equal(state, start)


@pytest.mark.parametrize("t_bad", [0, 3, 64, 130])
def test_layerwise_nonfinite_result_restores_state(t_bad):
    """Step t_bad overflows: rc t_bad + 1 (as cpu.step's), state as before the call; through
    the engine, NumericalError names the step and the stream continues from its old state."""
    model, big = overflowing_model(), 50.0
    xs = np.zeros((150, 1), np.float32)
    xs[t_bad] = big
    start = np.full(model.state_size, 0.01, np.float32)
    rc, _, state = _layerwise(model, start, xs)
    assert rc == t_bad + 1
    np.testing.assert_array_equal(state, start)
    s = model.stream()
    s.step_many(np.full((20, 1), 0.001, np.float32))
    before = s.get_state().values.copy()
    with pytest.raises(edgelstm.NumericalError, match=f"step {t_bad}"):
        s.step_many(xs)
    np.testing.assert_array_equal(s.get_state().values, before)


def test_layerwise_hot_path_allocates_nothing():
    """As test_hot_path_allocates_nothing, for kernels.sequence.step_sequence over several blocks."""
    script = _ALLOCATION_PRELUDE + textwrap.dedent("""
        tw = contract.transposed_weights(m, p)
        state, work, seq = np.zeros((1, spec.state_size), np.float32), model.new_work(), model.new_seq()
        row0, st = np.zeros(1, np.int64), np.zeros(1, np.int8)
        X, Y = np.ones(4 * 150, np.float32) * 0.1, np.empty(2 * 150, np.float32)

        @numba.njit
        def drive(n, p, tw, m, state, row0, X, Y, work, seq, st):
            for _ in range(n):
                sequence.step_sequence(p, tw, m, state, row0, X, Y, work, seq, st)
        def allocs(n):
            before = rtsys.get_allocation_stats().alloc
            drive(n, p, tw, m, state, row0, X, Y, work, seq, st)
            return rtsys.get_allocation_stats().alloc - before
        drive(1, p, tw, m, state, row0, X, Y, work, seq, st)
        print(allocs(1), allocs(100))
    """)
    assert_allocations_flat(script, 100)
