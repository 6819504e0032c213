"""Committed PyTorch goldens, fed one sample at a time: runs without torch."""

import numpy as np
import pytest
from conftest import GOLDEN_NAMES, golden

import edgelstm
from edgelstm.kernels import reference
from edgelstm.model.state_dict import spec_from_state_dict


@pytest.mark.parametrize("name", GOLDEN_NAMES)
def test_stream_matches_torch_golden(name):
    weights, xs, ys = golden(name)
    model = edgelstm.Model(spec_from_state_dict(weights))
    s = model.stream()
    out = np.array([s.step(x) for x in xs])
    np.testing.assert_allclose(out, ys, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", GOLDEN_NAMES)
def test_reference_matches_torch_golden(name):
    weights, xs, ys = golden(name)
    spec = spec_from_state_dict(weights)
    out, _ = reference.run(spec, xs, dtype=np.float64)
    np.testing.assert_allclose(out, ys, atol=1e-5, rtol=0)


def test_golden_set_is_complete():
    assert {"lstm_2layer_head", "gru_2layer_head", "lstm_proj", "lstmcell_stack", "grucell_stack",
            "lstm_3layer_nobias", "lstm_norm"} <= set(GOLDEN_NAMES)
