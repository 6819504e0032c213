"""The zoo (tests/zoo.py): models users train, loaded from their bare state_dicts with arch=,
streamed 1,000 steps one reading at a time against the whole-sequence PyTorch forward."""

import numpy as np
import pytest
from conftest import DATA

import edgelstm
from edgelstm.kernels import reference
from edgelstm.model.state_dict import spec_from_state_dict

STEPS = 1000
ZOO_GOLDENS = sorted(p.stem[len("zoo_"):] for p in (DATA / "zoo").glob("zoo_*.npz"))


def zoo_golden(name):
    with np.load(DATA / "zoo" / f"zoo_{name}.npz", allow_pickle=False) as z:
        weights = {k[2:]: z[k] for k in z.files if k.startswith("w/")}
        return weights, str(z["arch"]), z["x"], z["y"]


@pytest.mark.parametrize("name", ZOO_GOLDENS)
def test_zoo_golden_streams_like_torch(name):
    """Committed goldens: runs without torch, CPU kernels and the NumPy oracle."""
    weights, arch, xs, ys = zoo_golden(name)
    spec = spec_from_state_dict(weights, arch=arch)
    np.testing.assert_allclose(edgelstm.Model(spec).stream().step_many(xs), ys, atol=1e-5, rtol=0)
    np.testing.assert_allclose(reference.run(spec, xs[:200])[0], ys[:200], atol=1e-5, rtol=0)


def test_zoo_goldens_are_committed():
    from zoo_names import ZOO_NAMES
    assert set(ZOO_NAMES) <= set(ZOO_GOLDENS), "run tests/data/make_golden.py"


@pytest.mark.torch
@pytest.mark.parametrize("name", __import__("zoo_names").ZOO_NAMES)
def test_zoo_model_streams_like_torch(name):
    import zoo
    net = zoo.build(name)
    arch = zoo.ZOO[name][1]
    xs = np.random.default_rng(3).normal(0, 1, (STEPS, _input_size(net))).astype(np.float32)
    expected = zoo.run(net, xs)
    weights = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    spec = spec_from_state_dict(weights, arch=arch)
    np.testing.assert_allclose(edgelstm.Model(spec).stream().step_many(xs), expected, atol=1e-5, rtol=0)


@pytest.mark.torch
@pytest.mark.parametrize("name", ["lstm_mlp_head", "batchnorm_input", "two_heads", "causal_conv"])
def test_zoo_state_dict_without_arch_is_refused_never_wrong(name):
    """Without arch= the loader must not guess: it refuses and proposes an arch."""
    import zoo
    weights = {k: v.detach().numpy() for k, v in zoo.build(name).state_dict().items()}
    with pytest.raises(edgelstm.ModelFormatError, match="arch="):
        spec_from_state_dict(weights)


def _input_size(net):
    for name, p in net.named_parameters():
        if p.ndim >= 2:
            return p.shape[1]
