"""Whole pickled modules without torch and without running their code: TorchScript archives
map from their forward() text; torch.save(model) pickles propose an arch the user confirms."""

import numpy as np
import pytest
import zoo_names
from conftest import DATA

import edgelstm
from edgelstm.errors import ModelFormatError

TS = DATA / "torchscript"
FIXTURES = sorted(p.stem for p in TS.glob("*.pt"))
TRACEABLE = [n for n in zoo_names.ZOO_NAMES if not n.startswith(("attention_pool", "lstmcell", "grucell"))]


@pytest.mark.parametrize("fixture", FIXTURES)
def test_committed_torchscript_archives_stream_like_torch(fixture):
    with np.load(TS / f"{fixture}.npz") as z:
        xs, ys = z["x"], z["y"]
    model = edgelstm.load(TS / f"{fixture}.pt")
    assert model.spec.source["format"] == "torchscript"
    np.testing.assert_allclose(model.stream().step_many(xs), ys, atol=1e-5, rtol=0)


def test_torchscript_fixtures_are_committed():
    assert len(FIXTURES) >= 3, "run tests/data/torchscript/make_torchscript.py"


@pytest.mark.torch
@pytest.mark.parametrize("mode", ["script", "trace"])
@pytest.mark.parametrize("name", TRACEABLE)
def test_every_traceable_zoo_model_as_torchscript(tmp_path, name, mode):
    import torch
    import zoo
    net = zoo.build(name)
    n_in = next(p for p in net.parameters() if p.ndim >= 2).shape[1]
    try:
        m = torch.jit.script(net) if mode == "script" else torch.jit.trace(net, torch.zeros(1, 5, n_in))
    except Exception as exc:            # torch's own limits (a lambda attribute cannot be scripted)
        pytest.skip(f"torch.jit.{mode} cannot compile {name}: {type(exc).__name__}")
    torch.jit.save(m, tmp_path / "m.pt")
    xs = np.random.default_rng(5).normal(size=(400, n_in)).astype(np.float32)
    got = edgelstm.load(tmp_path / "m.pt").stream().step_many(xs)
    np.testing.assert_allclose(got, zoo.run(net, xs), atol=1e-5, rtol=0)


@pytest.mark.torch
def test_torchscript_that_needs_the_whole_sequence_is_refused_by_name(tmp_path):
    import torch
    import zoo
    torch.jit.save(torch.jit.trace(zoo.build("attention_pool"), torch.zeros(1, 5, 4)), tmp_path / "a.pt")
    with pytest.raises(ModelFormatError, match=r"torch\.size.*arch="):
        edgelstm.load(tmp_path / "a.pt")
    spec = edgelstm.load(tmp_path / "a.pt", arch="lstm > attention(attn) > linear(fc)")   # the fix works
    xs = np.random.default_rng(1).normal(size=(100, 4)).astype(np.float32)
    np.testing.assert_allclose(spec.stream().step_many(xs), zoo.run(zoo.build("attention_pool"), xs),
                               atol=1e-5, rtol=0)


@pytest.mark.torch
def test_a_pickled_module_proposes_its_arch_and_the_proposal_loads(tmp_path):
    import torch
    import zoo
    net = zoo.build("lstm_proj_mlp_head")          # a LeakyReLU(0.2) module between two Linears
    torch.save(net, tmp_path / "whole.pt")
    with pytest.raises(ModelFormatError, match=r"forward\(\) is not in the file.*"
                       r"arch='lstm\(rnn\) > linear\(head\.0\) > leaky_relu\(0\.2\) > linear\(head\.3\)'") as err:
        edgelstm.load(tmp_path / "whole.pt")
    proposed = str(err.value).split("arch='")[1].split("'")[0]
    xs = np.random.default_rng(2).normal(size=(200, 6)).astype(np.float32)
    got = edgelstm.load(tmp_path / "whole.pt", arch=proposed).stream().step_many(xs)
    np.testing.assert_allclose(got, zoo.run(net, xs), atol=1e-5, rtol=0)
