"""Model files: every supported format, checkpoint layouts, and every way a file can be wrong."""

import os
import pickle
import zipfile

import numpy as np
import pytest
from conftest import golden

import edgelstm
from edgelstm import ModelFormatError, UnsafePickleError
from edgelstm.model import deploy
from edgelstm.model.state_dict import spec_from_state_dict


@pytest.fixture(scope="module")
def lstm_weights():
    return golden("lstm_2layer_head")


def outputs(model, xs):
    return model.stream().step_many(xs)


# ---- formats that need no torch -------------------------------------------------------------

def test_npz_and_elstm_round_trip(tmp_path, lstm_weights):
    weights, xs, ys = lstm_weights
    np.savez(tmp_path / "m.npz", **weights)
    model = edgelstm.load(tmp_path / "m.npz")
    np.testing.assert_allclose(outputs(model, xs), ys, atol=1e-5)
    deploy.save(model.spec, tmp_path / "m.elstm")
    again = edgelstm.load(tmp_path / "m.elstm")
    assert again.content_hash == model.content_hash
    np.testing.assert_array_equal(outputs(again, xs), outputs(model, xs))
    assert again.spec.source["format"] == "npz"


def test_safetensors(tmp_path, lstm_weights):
    safetensors = pytest.importorskip("safetensors.numpy")
    weights, xs, ys = lstm_weights
    safetensors.save_file({k: np.ascontiguousarray(v) for k, v in weights.items()}, str(tmp_path / "m.safetensors"))
    np.testing.assert_allclose(outputs(edgelstm.load(tmp_path / "m.safetensors"), xs), ys, atol=1e-5)


@pytest.mark.parametrize("damage", ["flip a weight byte", "truncate", "bad magic", "newer version"])
def test_damaged_elstm_is_refused(tmp_path, lstm_weights, damage):
    path = tmp_path / "m.elstm"
    deploy.save(spec_from_state_dict(lstm_weights[0]), path)
    data = bytearray(path.read_bytes())
    if damage == "flip a weight byte":
        data[-100] ^= 0x40
    elif damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "bad magic":
        data[0:3] = b"XYZ"
    else:
        data[8] = 99
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFormatError, match="corrupt|truncated|unknown model format|newer"):
        edgelstm.load(path)


def test_malicious_pickle_runs_nothing(tmp_path):
    """A .pt-shaped zip whose pickle calls os.system: refused by name, nothing executed."""
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"weight_ih_l0": Exploit()}, protocol=2))
        z.writestr("archive/version", "3\n")
    with pytest.raises(UnsafePickleError, match=r"posix\.system|os\.system"):
        edgelstm.load(path)
    assert not marker.exists()


def test_garbage_and_missing_files(tmp_path):
    (tmp_path / "junk.pt").write_bytes(os.urandom(300))
    with pytest.raises(ModelFormatError, match="unknown model format"):
        edgelstm.load(tmp_path / "junk.pt")
    with pytest.raises(ModelFormatError, match="no such model file"):
        edgelstm.load(tmp_path / "absent.pt")
    with zipfile.ZipFile(tmp_path / "broken.pt", "w") as z:
        z.writestr("archive/data.pkl", b"\x80\x02}q\x00(X\x03")       # pickle cut short
    with pytest.raises(ModelFormatError, match="cannot read the pickle"):
        edgelstm.load(tmp_path / "broken.pt")


# ---- key discovery and its errors (plain arrays, no torch) ----------------------------------

def test_missing_key_is_named_with_expected_shape(lstm_weights):
    weights = dict(lstm_weights[0])
    del weights["rnn.weight_hh_l1"]
    with pytest.raises(ModelFormatError, match=r"rnn\.weight_hh_l1"):
        spec_from_state_dict(weights)
    weights = dict(lstm_weights[0])
    weights["rnn.bias_ih_l1"] = weights["rnn.bias_ih_l1"][:-1]
    with pytest.raises(ModelFormatError, match=r"'rnn\.bias_ih_l1' has shape \(255,\); expected \(256,\)"):
        spec_from_state_dict(weights)
    weights = dict(lstm_weights[0])
    weights["rnn.weight_ih_l1"] = weights["rnn.weight_ih_l1"][:, :10]
    with pytest.raises(ModelFormatError, match=r"expected \(256, 64\)"):
        spec_from_state_dict(weights)


def test_unused_tensors_are_an_error_unless_allowed(lstm_weights):
    weights = dict(lstm_weights[0], **{"aux.weight": np.ones((5, 7), np.float32)})
    with pytest.raises(ModelFormatError, match=r"not used.*aux\.weight.*allow_unused=True"):
        spec_from_state_dict(weights)
    spec_from_state_dict(weights, allow_unused=True)


def test_an_unused_layer_on_the_path_proposes_an_arch_that_then_loads(lstm_weights):
    """An input Linear (8 -> 8) the key patterns cannot place: refused, never silently skipped."""
    rng = np.random.default_rng(0)
    weights = dict(lstm_weights[0], **{"embed.weight": rng.normal(size=(8, 8)).astype(np.float32),
                                       "embed.bias": np.zeros(8, np.float32)})
    with pytest.raises(ModelFormatError, match=r"embed \(Linear 8 -> 8\).*arch='linear\(embed\) > lstm > "
                                               r"linear\(head\)'"):
        spec_from_state_dict(weights)
    spec = spec_from_state_dict(weights, arch="linear(embed) > lstm > linear(head)")
    assert [type(x).__name__ for x in spec.pre + spec.post] == ["Linear", "Linear"]


def test_bidirectional_is_refused_with_reason(lstm_weights):
    weights = dict(lstm_weights[0], **{"rnn.weight_ih_l0_reverse": lstm_weights[0]["rnn.weight_ih_l0"]})
    with pytest.raises(ModelFormatError, match="bidirectional.*cannot stream"):
        spec_from_state_dict(weights)


def test_ambiguous_blocks_and_heads_list_candidates(lstm_weights):
    w = lstm_weights[0]
    two = {**{f"enc.{k[4:]}": v for k, v in w.items() if k.startswith("rnn.")},
           **{f"dec.{k[4:]}": v for k, v in w.items() if k.startswith("rnn.")}}
    with pytest.raises(ModelFormatError, match=r"several recurrent blocks.*'dec\.'.*'enc\.'"):
        spec_from_state_dict(two)
    spec = spec_from_state_dict(two, rnn="enc.", allow_unused=True)
    assert len(spec.layers) == 2
    heads = dict(w, **{"aux.weight": np.ones((2, 64), np.float32), "aux.bias": np.ones(2, np.float32)})
    with pytest.raises(ModelFormatError, match=r"several Linear layers could be the head: \['aux\.', 'head\.'\]"
                                               r".*arch='lstm > \{aux: linear\(aux\), head: linear\(head\)\}'"):
        spec_from_state_dict(heads)
    both = spec_from_state_dict(heads, arch="lstm > {aux: linear(aux), head: linear(head)}")
    assert both.outputs == [("aux", 0, 2), ("head", 2, 3)]
    assert spec_from_state_dict(heads, head="head.", allow_unused=True).output_size == 3
    assert spec_from_state_dict(w, head=False, allow_unused=True).output_size == 64


def test_checkpoint_wrappers_and_prefixes(lstm_weights):
    weights, xs, ys = lstm_weights
    for wrapped in ({"state_dict": weights, "epoch": 3},
                    {"model_state_dict": {f"module.{k}": v for k, v in weights.items()}, "optimizer": {}},
                    {**weights, "epoch": 7, "note": "extra non-tensor entries are ignored"}):
        np.testing.assert_allclose(edgelstm.Model(spec_from_state_dict(wrapped)).stream().step_many(xs), ys, atol=1e-5)


# ---- torch.save files, read without torch's unpickler ---------------------------------------

@pytest.mark.torch
def test_torch_save_files(tmp_path):
    torch = pytest.importorskip("torch")
    from archs import build
    net = build("lstm_proj")
    xs = np.random.default_rng(0).normal(size=(200, 6)).astype(np.float32)
    expected = net.run(xs)
    torch.save(net.state_dict(), tmp_path / "sd.pt")
    torch.save({"epoch": 4, "model_state_dict": net.state_dict(), "optimizer_state_dict":
                torch.optim.Adam(net.parameters()).state_dict(), "loss": 0.1}, tmp_path / "ckpt.pth")
    for name in ("sd.pt", "ckpt.pth"):
        np.testing.assert_allclose(outputs(edgelstm.load(tmp_path / name), xs), expected, atol=1e-5)
    torch.save(net, tmp_path / "whole.pt")           # a whole module: read as inert data, its code never runs
    np.testing.assert_allclose(outputs(edgelstm.load(tmp_path / "whole.pt"), xs), expected, atol=1e-5)


@pytest.mark.torch
def test_tensors_sharing_one_storage_with_offsets_and_strides(tmp_path):
    """cuDNN-style flattened weights: views into one storage, one of them transposed."""
    torch = pytest.importorskip("torch")
    from archs import build
    net = build("gru_nobias")
    sd = net.state_dict()
    flat = torch.cat([v.reshape(-1) for v in sd.values()] + [torch.zeros(7)])
    shared, off = {}, 0
    for k, v in sd.items():
        view = flat[off:off + v.numel()]
        shared[k] = view.view(v.shape[1], v.shape[0]).t() if k == "rnn.weight_hh_l0" else view.view(v.shape)
        if k == "rnn.weight_hh_l0":        # store it transposed so the view has non-trivial strides
            flat[off:off + v.numel()] = v.t().contiguous().reshape(-1)
        off += v.numel()
    for k in sd:
        assert torch.equal(shared[k], sd[k])
    torch.save(shared, tmp_path / "shared.pt")
    loaded = edgelstm.load(tmp_path / "shared.pt").spec.layers[0]
    np.testing.assert_array_equal(loaded.w_hh, sd["rnn.weight_hh_l0"].numpy())
    np.testing.assert_array_equal(loaded.w_ih, sd["rnn.weight_ih_l0"].numpy())
