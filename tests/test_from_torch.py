"""edgelstm.from_torch: the user's nn.Module traced with torch.fx, checked against itself."""

import numpy as np
import pytest
import zoo_names

import edgelstm
from edgelstm.errors import ModelFormatError

pytestmark = pytest.mark.torch

TRACEABLE = [n for n in zoo_names.ZOO_NAMES if not n.startswith(("attention_pool", "lstmcell", "grucell"))]


@pytest.mark.parametrize("name", TRACEABLE)
def test_zoo_models_trace_and_stream_like_torch(tmp_path, name):
    import torch
    import zoo
    net = zoo.build(name)
    n_in = next(p for p in net.parameters() if p.ndim >= 2).shape[1]
    spec = edgelstm.from_torch(net, torch.zeros(1, 16, n_in), path=tmp_path / "m.elstm")
    xs = np.random.default_rng(5).normal(size=(1000, n_in)).astype(np.float32)
    np.testing.assert_allclose(edgelstm.load(tmp_path / "m.elstm").stream().step_many(xs), zoo.run(net, xs),
                               atol=1e-5, rtol=0)
    assert spec.source["format"] == "torch.fx"


@pytest.mark.parametrize("cls", ["LastStep", "FinalHidden"])
def test_last_step_models_stream_what_each_prefix_would_give(cls):
    import torch
    import zoo
    torch.manual_seed(0)
    net = getattr(zoo, cls)().eval()
    spec = edgelstm.from_torch(net, torch.zeros(1, 16, 3))
    xs = np.random.default_rng(6).normal(size=(60, 3)).astype(np.float32)
    streamed = edgelstm.Model(spec).stream().step_many(xs)
    for t in (1, 17, 60):
        np.testing.assert_allclose(streamed[t - 1], zoo.run(net, xs[:t]), atol=1e-5, rtol=0)


def _module(forward, **layers):
    import torch

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            for k, v in layers.items():
                setattr(self, k, v)

    Net.forward = forward
    return Net().eval()


def test_what_cannot_stream_is_refused_with_the_node_and_the_reason():
    import torch
    import torch.nn.functional as F
    from torch import nn
    x = torch.zeros(1, 8, 4)
    cases = [
        (_module(lambda s, x: s.rnn(x)[0], rnn=nn.LSTM(4, 8, batch_first=True, bidirectional=True)),
         "bidirectional.*cannot stream"),
        (_module(lambda s, x: s.rnn(F.relu(s.conv(x.transpose(1, 2))).transpose(1, 2))[0],
                 conv=nn.Conv1d(4, 4, 3, padding=1), rnn=nn.GRU(4, 8, batch_first=True)),
         "not causal.*needs future inputs"),
        (_module(lambda s, x: s.rnn(s.conv(F.pad(x.transpose(1, 2), (1, 1))).transpose(1, 2))[0],
                 conv=nn.Conv1d(4, 4, 3), rnn=nn.GRU(4, 8, batch_first=True)),
         "padding 1 on the right.*future inputs"),
        (_module(lambda s, x: torch.softmax(s.rnn(x)[0], dim=1), rnn=nn.GRU(4, 8, batch_first=True)),
         "softmax over dimension 1"),
        (_module(lambda s, x: s.rnn(s.conv(x.transpose(1, 2)).transpose(1, 2))[0], conv=nn.Conv1d(4, 4, 1),
                 rnn=nn.GRU(4, 8)), "batch-first and time-first tensors mixed"),
        (_module(lambda s, x: s.rnn(x)[0].mean(1), rnn=nn.GRU(4, 8, batch_first=True)), "'mean'"),
        (_module(lambda s, x: s.rnn(x)[0][:, :, :3], rnn=nn.GRU(4, 8, batch_first=True)), "selects features"),
    ]
    for net, why in cases:
        with pytest.raises(ModelFormatError, match=why) as err:
            edgelstm.from_torch(net, x)
        assert "arch=" in str(err.value) or "bidirectional" in str(err.value)


def test_a_model_the_trace_misreads_fails_the_parity_check():
    """A mistake the mapping could make is caught by the check against the module itself."""
    import torch
    from torch import nn
    net = _module(lambda s, x: s.fc(s.rnn(x)[0]), rnn=nn.GRU(4, 8, batch_first=True), fc=nn.Linear(8, 2))
    from edgelstm.model import from_torch as ft
    real = ft._assemble

    def wrong(outputs, source):
        spec = real(outputs, source)
        return edgelstm.ModelSpec(spec.layers, spec.pre, spec.post + (edgelstm.Activation("tanh", 2),))

    ft._assemble = wrong
    try:
        with pytest.raises(ModelFormatError, match="differs from the module by"):
            edgelstm.from_torch(net, torch.zeros(1, 8, 4))
    finally:
        ft._assemble = real


_NET_HEADER = "import torch\nclass Net(torch.nn.Module):\n    def __init__(self):\n        super().__init__()\n"


def _user_project(tmp_path, module: str, body: str, seed: int):
    """Writes the user's model code as tmp_path/<module>.py and returns Net() built from it."""
    import importlib
    import sys

    import torch
    (tmp_path / f"{module}.py").write_text(_NET_HEADER + body)
    sys.path.insert(0, str(tmp_path))
    try:
        torch.manual_seed(seed)
        return importlib.import_module(module).Net().eval()
    finally:
        sys.path.pop(0)


def _cli(tmp_path, *args):
    import subprocess
    import sys
    return subprocess.run([sys.executable, "-m", "edgelstm", *args], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.integration
def test_convert_with_module_and_weights_from_the_command_line(tmp_path):
    import torch
    net = _user_project(tmp_path, "mynet", (
        "        self.lstm = torch.nn.LSTM(3, 12, batch_first=True)\n"
        "        self.head = torch.nn.Sequential(torch.nn.Linear(12, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))\n"
        "    def forward(self, x):\n"
        "        out, _ = self.lstm(x)\n"
        "        return torch.softmax(self.head(out[:, -1]), -1)\n"), seed=1)
    torch.save({"state_dict": net.state_dict(), "epoch": 4}, tmp_path / "w.pt")
    out = _cli(tmp_path, "convert", "--module", "mynet:Net", "--weights", "w.pt", "-o", "m.elstm")
    assert out.returncode == 0, out.stderr
    assert "post:  Linear 12 -> 8 (head.0)" in out.stdout and "post:  softmax" in out.stdout
    xs = np.random.default_rng(0).normal(size=(30, 3)).astype(np.float32)
    with torch.no_grad():
        want = net(torch.from_numpy(xs)[None])[0].numpy()
    got = edgelstm.load(tmp_path / "m.elstm").stream().step_many(xs)[-1]
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


@pytest.mark.integration
def test_verify_against_the_module_passes_and_a_wrong_model_fails(tmp_path):
    import torch
    net = _user_project(tmp_path, "net2", (
        "        self.gru = torch.nn.GRU(4, 10, batch_first=True)\n"
        "        self.fc = torch.nn.Linear(10, 3)\n"
        "    def forward(self, x):\n"
        "        return torch.tanh(self.fc(self.gru(x)[0]))\n"), seed=2)
    torch.save(net.state_dict(), tmp_path / "w.pt")
    assert _cli(tmp_path, "convert", "--module", "net2:Net", "--weights", "w.pt", "-o", "good.elstm").returncode == 0
    out = _cli(tmp_path, "verify", "good.elstm", "--module", "net2:Net", "--weights", "w.pt", "--steps", "300")
    assert out.returncode == 0, out.stderr
    assert "compared at 300 steps" in out.stdout and "within 1e-05" in out.stdout
    # the same weights without the tanh (a bare state_dict loaded with a guessed arch): caught
    assert _cli(tmp_path, "convert", "w.pt", "-o", "guessed.elstm").returncode == 0
    out = _cli(tmp_path, "verify", "guessed.elstm", "--module", "net2:Net", "--weights", "w.pt", "--steps", "300")
    assert out.returncode == 1 and "OVER" in out.stdout


def test_time_first_models_and_normalisation_in_forward():
    """batch_first=False, (x - mean) / std with buffers, and out[-1]: what older tutorials write."""
    import torch
    from torch import nn
    torch.manual_seed(3)
    net = _module(lambda s, x: torch.sigmoid(s.fc(s.rnn((x - s.mean) / s.std)[0][-1])),
                  rnn=nn.LSTM(3, 9, num_layers=2), fc=nn.Linear(9, 1))
    net.register_buffer("mean", torch.tensor([0.5, -1.0, 2.0]))
    net.register_buffer("std", torch.tensor([2.0, 0.5, 1.5]))
    spec = edgelstm.from_torch(net, torch.zeros(16, 1, 3))
    assert [type(x).__name__ for x in spec.pre] == ["Affine", "Affine"]
    xs = np.random.default_rng(8).normal(size=(40, 3)).astype(np.float32)
    streamed = edgelstm.Model(spec).stream().step_many(xs)
    for t in (1, 40):
        with torch.no_grad():
            want = net(torch.from_numpy(xs[:t])[:, None])[0].numpy()
        np.testing.assert_allclose(streamed[t - 1], want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", [n for n in zoo_names.ZOO_NAMES if n not in TRACEABLE])
def test_zoo_models_fx_cannot_trace_are_refused_with_the_way_out(name):
    """A loop over x.shape[1] or a mask built from T: torch.fx cannot trace them; the error says
    to describe the model with arch= (their arch in tests/zoo.py then loads them exactly)."""
    import torch
    import zoo
    net = zoo.build(name)
    n_in = next(p for p in net.parameters() if p.ndim >= 2).shape[1]
    with pytest.raises(ModelFormatError, match="arch="):
        edgelstm.from_torch(net, torch.zeros(1, 16, n_in))
