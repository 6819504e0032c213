"""The layer graph around the recurrent core: the deploy file, the arch text, and the parts
(CUDA, export-c) that run only some of it and must say which layer they lack."""

import re

import numpy as np
import pytest
from conftest import DATA
from specs import graph_specs

import edgelstm
from edgelstm.errors import BackendError, ModelFormatError
from edgelstm.model import arch, deploy
from edgelstm.model.layers import Activation, Affine, Linear

GRAPHS = ["mlp_head", "norms_and_activations", "peephole", "causal_conv", "attention_pool", "two_heads"]


@pytest.mark.parametrize("name", GRAPHS)
def test_every_graph_round_trips_through_the_deploy_file(tmp_path, name):
    spec = graph_specs(np.random.default_rng(7))[name]
    digest = deploy.save(spec, tmp_path / "m.elstm")
    back = deploy.load(tmp_path / "m.elstm")
    assert back.content_hash() == digest == spec.content_hash()
    assert back.architecture() == spec.architecture()
    xs = np.random.default_rng(1).normal(size=(50, spec.input_size)).astype(np.float32)
    np.testing.assert_array_equal(edgelstm.Model(back).stream().step_many(xs),
                                  edgelstm.Model(spec).stream().step_many(xs))


def test_a_version_1_file_still_loads_and_keeps_its_old_hash_for_checkpoints():
    old = deploy.load(DATA / "model_v1" / "activity_v1.elstm")
    new = deploy.load(edgelstm.__path__[0] + "/data/activity.elstm")
    assert old.architecture() == new.architecture()
    model = edgelstm.Model(old)
    assert model.former_hashes == ("440fc07d5fbde032dd0991721dcbcefe4f97ba3c6dfd1d2aa5f6989db52dcd73",)
    assert edgelstm.Model(new).former_hashes == model.former_hashes     # re-saved, still known
    xs = np.random.default_rng(2).normal(size=(40, 3)).astype(np.float32)
    np.testing.assert_array_equal(model.stream().step_many(xs), edgelstm.Model(new).stream().step_many(xs))


def test_a_tampered_architecture_is_refused(tmp_path):
    spec = graph_specs(np.random.default_rng(7))["mlp_head"]
    deploy.save(spec, tmp_path / "m.elstm")
    data = (tmp_path / "m.elstm").read_bytes().replace(b'"relu"', b'"tanh"')
    (tmp_path / "bad.elstm").write_bytes(data)
    with pytest.raises(ModelFormatError, match="hash mismatch"):
        deploy.load(tmp_path / "bad.elstm")


def test_outputs_of_several_heads_are_named_in_order():
    spec = graph_specs(np.random.default_rng(7))["two_heads"]
    assert spec.outputs == [("label", 0, 3), ("level", 3, 1)]
    y = edgelstm.Model(spec).stream().step(np.zeros(4, np.float32))
    assert y.shape == (4,) and abs(y[:3].sum() - 1) < 1e-6        # the softmax head sums to one
    assert "head label: Linear 11 -> 3 > softmax" in spec.describe()


@pytest.mark.parametrize("bad, why", [
    ("", "non-empty"),
    ("linear(fc)", "no recurrent layer"),
    ("lstm > relu > gru", "between recurrent layers"),
    ("lstm > linear", "needs the key prefix"),
    ("lstm > swish", "unknown item 'swish'"),
    ("lstm > {a: linear(x)", "expected"),
    ("lstm > leaky_relu(abc)", "not a number"),
    ("lstm ; linear(fc)", "unexpected character"),
])
def test_bad_arch_text_says_what_is_wrong_with_an_example(bad, why):
    with pytest.raises(ModelFormatError, match=why):
        arch.parse(bad)


def test_arch_text_round_trips():
    text = ("batchnorm(bn, eps=0.001) > conv(c, dilation=2) > lstm(rnn) > attention(a.0, tanh, a.2) > "
            "leaky_relu(0.2) > {x: linear(h.x) > softmax, y: linear(h.y)}")
    assert arch.parse(arch.parse(text).text()) == arch.parse(text)


def test_layers_refuse_what_cannot_stream_or_does_not_fit():
    spec = graph_specs(np.random.default_rng(7))
    with pytest.raises(ModelFormatError, match="attention pooling pools the recurrent outputs"):
        edgelstm.ModelSpec(spec["attention_pool"].layers, pre=spec["attention_pool"].post[:1])
    with pytest.raises(ModelFormatError, match="causal convolution is supported as an input layer only"):
        edgelstm.ModelSpec(spec["causal_conv"].layers, post=spec["causal_conv"].pre[:1])
    with pytest.raises(ModelFormatError, match=r"takes 3 values but receives 16"):
        edgelstm.ModelSpec(spec["mlp_head"].layers, post=(Linear(np.ones((2, 3)), np.zeros(2)),))
    with pytest.raises(ModelFormatError, match="unknown activation 'swish'"):
        Activation("swish", 3)
    with pytest.raises(ModelFormatError, match="std must be > 0"):
        Affine.normalise([0.0], [0.0])


@pytest.mark.parametrize("name", ["mlp_head", "peephole", "two_heads", "causal_conv"])
def test_cuda_names_the_layer_it_lacks_and_auto_keeps_the_cpu(name):
    model = edgelstm.Model(graph_specs(np.random.default_rng(7))[name])
    lacks = model.spec.beyond_classic()
    assert lacks
    with pytest.raises(BackendError, match=f"CUDA kernel lacks {re.escape(lacks)}.*backend='cpu'"):
        model.bank(4, backend="cuda")
    assert type(model.bank(4, backend="auto")).__name__ == "StreamBank"
