"""Big batches as matrix products (kernels/products.py, bank_gemm.py): the same results as cpu.step's tiles
and as the NumPy oracle, the same handling of bad readings and non-finite results, and no
allocation on the way."""

import textwrap
import tracemalloc

import numpy as np
import pytest
from allocations import assert_allocations_flat
from specs import SPECS, graph_specs, overflowing_model, random_spec

import edgelstm
from edgelstm.kernels import products as gemm_plan
from edgelstm.kernels import reference

pytestmark = pytest.mark.skipif(not gemm_plan.blas_is_fast(), reason="NumPy has no optimised BLAS here")
PLAIN = [name for name, kw in SPECS.items() if not any(kw.get("proj", ()))]


def products_and_tiles(spec):
    """Two models of spec: one whose banks take the products from MIN_STREAMS streams on (the
    test models are small, so their own threshold, min_streams, is higher), one that never does."""
    products, tiles = edgelstm.Model(spec), edgelstm.Model(spec)
    assert products.gemm
    products.gemm_min = gemm_plan.MIN_STREAMS
    tiles.gemm = False
    return products, tiles


def test_the_threshold_follows_the_work_per_stream(rng):
    small = edgelstm.Model(random_spec(rng, kinds=("lstm",), hidden=(8,), input_size=4))
    big = edgelstm.Model(random_spec(rng, kinds=("lstm", "lstm"), hidden=(64, 64), proj=(0, 0), input_size=8))
    assert small.gemm_min > 100 and big.gemm_min == gemm_plan.MIN_STREAMS


@pytest.mark.parametrize("name", PLAIN)
@pytest.mark.parametrize("k", [gemm_plan.MIN_STREAMS, 45, 100])
def test_products_match_the_tiles_and_the_oracle(rng, name, k):
    kw = dict(SPECS[name])
    model, plain = products_and_tiles(random_spec(rng, proj=kw.pop("proj", (0,) * len(kw["kinds"])), **kw))
    xs = rng.normal(0, 2, (60, k, model.input_size)).astype(np.float32)
    products, tiled = model.bank(k + 5), plain.bank(k + 5)
    ids = [f"s{i}" for i in range(k)][::-1]          # rows in another order than the ids
    got = np.array([products.step(ids, x) for x in xs])
    want = np.array([tiled.step(ids, x) for x in xs])
    assert products._gemm is not None and tiled._gemm is None
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)
    np.testing.assert_allclose(products.states(ids), tiled.states(ids), atol=1e-6, rtol=0)
    for i in (0, k // 2, k - 1):
        expected, _ = reference.run(model.spec, xs[:, i], dtype=np.float64)
        np.testing.assert_allclose(got[:, i], expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["mlp_head", "norms_and_activations", "two_heads"])
def test_graph_layers_around_the_products(name):
    rng = np.random.default_rng(3)
    model, _ = products_and_tiles(graph_specs(rng)[name])
    k = 40
    xs = rng.normal(0, 2, (50, k, model.input_size)).astype(np.float32)
    bank = model.bank(k)
    got = np.array([bank.step(list(range(k)), x) for x in xs])
    assert bank._gemm is not None
    for i in (0, k - 1):
        expected, _ = reference.run(model.spec, xs[:, i], dtype=np.float64)
        np.testing.assert_allclose(got[:, i], expected, atol=1e-5, rtol=0)


def test_models_the_products_do_not_serve_take_the_tiles(rng):
    proj = edgelstm.Model(random_spec(rng, kinds=("lstm",), hidden=(8,), proj=(4,)))
    graphs = graph_specs(rng)
    assert not proj.gemm
    for name in ("peephole", "causal_conv", "attention_pool"):    # per-stream state outside the bank's rows
        assert not edgelstm.Model(graphs[name]).gemm, name
    bank = proj.bank(40)
    bank.step(list(range(40)), np.ones((40, proj.input_size), np.float32))
    assert bank._gemm is None


def test_without_an_optimised_blas_the_tiles_stay(rng, monkeypatch):
    monkeypatch.setattr(gemm_plan, "blas_name", lambda: "blas")   # the reference BLAS
    assert not edgelstm.Model(random_spec(rng)).gemm


def test_a_bad_reading_applies_nothing(rng):
    model, _ = products_and_tiles(random_spec(rng))
    bank, k = model.bank(64), 50
    ids = list(range(k))
    bank.step(ids, rng.normal(size=(k, model.input_size)).astype(np.float32))
    before = bank.states(ids).copy()
    X = rng.normal(size=(k, model.input_size)).astype(np.float32)
    X[37, 2] = np.nan
    with pytest.raises(edgelstm.InputError, match="stream 37"):
        bank.step(ids, X)
    np.testing.assert_array_equal(bank.states(ids), before)


def test_streams_with_non_finite_results_keep_their_state():
    model, plain = products_and_tiles(overflowing_model().spec)
    k = 40
    products, tiled = model.bank(k), plain.bank(k)
    ids = list(range(k))
    warm = np.full((k, 1), 0.001, np.float32)
    products.step(ids, warm)
    tiled.step(ids, warm)
    assert products._gemm is not None
    before = products.states(ids).copy()
    X = np.zeros((k, 1), np.float32)
    X[[3, 30]] = 50.0                                 # these two overflow
    with pytest.raises(edgelstm.NumericalError) as caught:
        products.step(ids, X)
    assert caught.value.failed_ids == [3, 30]
    np.testing.assert_array_equal(products.states([3, 30]), before[[3, 30]])
    others = [i for i in ids if i not in (3, 30)]
    tiled.step(others, X[others])
    np.testing.assert_allclose(products.states(others), tiled.states(others), atol=1e-6, rtol=0)


def test_a_step_allocates_no_array_data(rng):
    """NumPy reports its array buffers to tracemalloc: a step's products write into the bank's
    buffer (a temporary of G alone would be k x 4H floats)."""
    model, _ = products_and_tiles(random_spec(rng, kinds=("lstm", "gru"), hidden=(32, 32), proj=(0, 0), head=0))
    k = 64
    bank, ids = model.bank(k), list(range(k))
    X = rng.normal(size=(k, model.input_size)).astype(np.float32)
    bank.step(ids, X)
    assert bank._gemm is not None
    tracemalloc.start()
    try:
        bank.step(ids, X)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    y_bytes = k * model.output_size * 4               # the returned Y is the one array a step makes
    assert peak < y_bytes + 4096, f"a step allocated {peak} bytes"


def test_the_kernels_allocate_nothing():
    """As test_kernels.test_hot_path_allocates_nothing, for the three kernels around the products."""
    script = textwrap.dedent("""
        import numba, numpy as np, edgelstm
        from numba.core.runtime import rtsys
        from edgelstm.kernels import bank_gemm
        from edgelstm.kernels import products as gemm_plan
        from specs import random_spec
        model = edgelstm.Model(random_spec(np.random.default_rng(0), kinds=("lstm", "gru"), hidden=(16, 8),
                                           proj=(0, 0), norm=True))
        k = 40
        model.gemm_min = gemm_plan.MIN_STREAMS
        bank = model.bank(k)
        ids = list(range(k))
        X = np.ones((k, model.input_size), np.float32)
        bank.step(ids, X)
        gb = bank._gemm
        gather, gates, finish = bank_gemm.gather, bank_gemm.layer_gates, bank_gemm.finish
        p, m, state, work, status = model.params, model.meta, bank._state, bank._work, bank._status
        rows, xs, ys = bank.rows_for(ids), X.ravel(), np.empty(k * model.output_size, np.float32)
        (_, _, _, g0, gh0, _), (_, _, _, g1, gh1, _) = gb.layers
        o0, o1 = gb.outs

        @numba.njit
        def drive(n, p, m, state, rows, xs, ys, work, buf, plan, status, g0, gh0, g1, gh1, s, o0, o1):
            for _ in range(n):
                gather(p, m, state, rows, xs, work, buf, plan)
                gates(p, m, 0, g0, gh0, s, o0, rows.shape[0])
                gates(p, m, 1, g1, gh1, s, o1, rows.shape[0])
                finish(p, m, state, rows, ys, work, buf, plan, status)
        args = (p, m, state, rows, xs, ys, work, gb.buf, gb.plan, status, g0, gh0, g1, gh1, gb.state, o0, o1)
        def allocs(n):
            before = rtsys.get_allocation_stats().alloc
            drive(n, *args)
            return rtsys.get_allocation_stats().alloc - before
        drive(1, *args)
        print(allocs(1), allocs(500))
    """)
    assert_allocations_flat(script, 500)
