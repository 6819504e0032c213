"""The stream contract: state carried, bad input refused with state untouched, state I/O."""

import numpy as np
import pytest
from conftest import golden
from specs import overflowing_model

import edgelstm
from edgelstm import InputError, NumericalError, StateError
from edgelstm.model.state_dict import spec_from_state_dict


@pytest.fixture(scope="module")
def model():
    weights, _, _ = golden("lstm_2layer_head")
    return edgelstm.Model(spec_from_state_dict(weights))


@pytest.fixture
def xs(rng, model):
    return rng.normal(size=(50, model.input_size)).astype(np.float32)


BAD_READINGS = {
    "nan": lambda x: np.where(np.arange(x.size) == 3, np.nan, x).astype(np.float32),
    "inf": lambda x: np.where(np.arange(x.size) == 0, -np.inf, x).astype(np.float32),
    "too short": lambda x: x[:-1],
    "too long": lambda x: np.append(x, 1.0).astype(np.float32),
    "2-D": lambda x: x[None, :],
    "strings": lambda x: np.array(["a"] * x.size),
    "complex": lambda x: x.astype(np.complex64),
    "float64 overflow": lambda x: np.full(x.size, 1e300),
    "object": lambda x: [object()] * x.size,
}


@pytest.mark.parametrize("bad", sorted(BAD_READINGS))
def test_bad_reading_raises_and_changes_nothing(model, xs, bad):
    expected = model.stream().step_many(xs)
    s = model.stream()
    got = []
    for t, x in enumerate(xs):
        if t == 20:
            before = s.get_state().values.copy()
            with pytest.raises(InputError):
                s.step(BAD_READINGS[bad](x))
            np.testing.assert_array_equal(s.get_state().values, before)
        got.append(s.step(x))
    np.testing.assert_allclose(np.array(got), expected, atol=1e-6, rtol=0)   # step_many: layer by layer


def test_lists_and_float64_are_accepted(model, xs):
    a, b = model.stream(), model.stream()
    np.testing.assert_array_equal(a.step(xs[0].tolist()), b.step(xs[0].astype(np.float64)))


def test_step_many_is_all_or_nothing(model, xs):
    s = model.stream()
    s.step_many(xs[:10])
    before = s.get_state().values.copy()
    bad = xs[10:].copy()
    bad[25, 1] = np.nan
    with pytest.raises(InputError, match="reading 25"):
        s.step_many(bad)
    np.testing.assert_array_equal(s.get_state().values, before)
    with pytest.raises(InputError, match="shape"):
        s.step_many(xs[:, :3])


def test_numerical_overflow_keeps_state():
    model, big, zero = overflowing_model(), np.full(1, 50.0, np.float32), np.zeros(1, np.float32)
    s = model.stream()
    s.step(np.full(1, 0.001, np.float32))
    before = s.get_state().values.copy()
    with pytest.raises(NumericalError, match="unchanged"):
        s.step(big)
    np.testing.assert_array_equal(s.get_state().values, before)
    with pytest.raises(NumericalError, match="step 3"):
        s.step_many(np.vstack([zero, zero, zero, big]))
    np.testing.assert_array_equal(s.get_state().values, before)     # all or nothing
    bank = model.bank(4)
    with pytest.raises(NumericalError) as info:
        bank.step(["ok", "big"], np.vstack([zero, big]))
    assert info.value.failed_ids == ["big"] and info.value.outputs[0, 0] == 0.0
    assert not bank.get_state("big").values.any() and "ok" in bank


def test_reset_and_state_round_trip(model, xs):
    s = model.stream()
    s.step_many(xs[:20])
    saved = s.get_state()
    tail = s.step_many(xs[20:])
    s.reset()
    np.testing.assert_array_equal(s.step_many(xs), model.stream().step_many(xs))
    other = model.stream()
    other.set_state(saved)
    np.testing.assert_array_equal(other.step_many(xs[20:]), tail)
    layers = saved.layers(model)
    assert [h.shape for h, _ in layers] == [(64,), (64,)] and [c.shape for _, c in layers] == [(64,), (64,)]


def test_state_from_another_model_is_refused(model):
    weights, _, _ = golden("gru_2layer_head")
    other = edgelstm.Model(spec_from_state_dict(weights))
    with pytest.raises(StateError, match="cannot move"):
        model.stream().set_state(other.stream().get_state())


def test_bank_rules(model, xs):
    bank = model.bank(capacity=2)
    bank.step(["a", "b"], xs[:2])
    with pytest.raises(StateError, match="twice"):
        bank.step(["a", "a"], xs[:2])
    with pytest.raises(StateError, match="full"):
        bank.step(["c"], xs[:1])
    bank.evict("b")
    bank.step(["c"], xs[:1])
    assert sorted(bank.ids) == ["a", "c"] and "b" not in bank
    before = bank.get_state("a").values.copy()
    bad = xs[:2].copy()
    bad[1, 0] = np.inf
    with pytest.raises(InputError, match="'c'"):
        bank.step(["a", "c"], bad)
    np.testing.assert_array_equal(bank.get_state("a").values, before)
    with pytest.raises(StateError, match="no stream"):
        bank.reset("zzz")
    s = model.stream()
    s.step(xs[0])
    bank.set_state("d", s.get_state()) if len(bank) < 2 else bank.set_state("a", s.get_state())
    np.testing.assert_array_equal(bank.get_state("a").values, s.get_state().values)


def test_warmup_and_repr(model):
    model.warmup()
    assert "2 layer(s)" in repr(model) and model.memory_bytes == model.params.nbytes


def test_bank_states_reads_many_streams_at_once(model, xs):
    bank = model.bank(capacity=4)
    bank.step(["a", "b", "c"], xs[:3])
    both = bank.states(["c", "a"])
    np.testing.assert_array_equal(both, np.stack([bank.get_state("c").values, bank.get_state("a").values]))
    both[:] = 0                                     # a copy: the bank is untouched
    assert bank.get_state("a").values.any()
    with pytest.raises(StateError):
        bank.states(["nope"])
