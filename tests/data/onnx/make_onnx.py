"""Make the ONNX fixtures in this folder and their ONNX Runtime goldens.

    .venv/bin/python tests/data/onnx/make_onnx.py      (needs torch, onnx, onnxruntime, onnxscript)

Two kinds of fixture:
  * torch models (tests/zoo.py and the few below) exported by torch.onnx.export, with the
    TorchScript-based exporter (dynamo=False) or the dynamo one; the dynamo exporter writes the
    weights to <name>.onnx.data, so those fixtures also test external data.
  * graphs built node by node with onnx.helper, for what torch never emits: a peephole LSTM,
    a GRU with explicit linear_before_reset=1, onnx.save's external data.
Each <name>.npz holds x (STEPS, I; float16 values, stored as float16) and y: ONNX Runtime's
output over the whole sequence after each step listed in `steps` (every step, or a few
prefixes for models that output the last step only), graph outputs side by side in order.

tests/test_onnx.py imports the builders from here (the torch ones only when torch is present).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
STEPS = 1000
PREFIXES = (1, 2, 3, 10, 100, 1000)          # for models whose output is the last step only

# fixture name: (model, exporter); a model is a zoo name or a class below
TORCH_FIXTURES = {
    "lstm_mlp_head": ("lstm_mlp_head", "torchscript"),
    "gru_mlp_head_softmax": ("gru_mlp_head_softmax", "dynamo"),
    "lstm2_mlp_head_sigmoid": ("lstm2_mlp_head_sigmoid", "dynamo"),
    "two_heads": ("two_heads", "torchscript"),
    "lstm_layernorm_after": ("lstm_layernorm_after", "dynamo"),
    "batchnorm_input": ("batchnorm_input", "torchscript"),
    "causal_conv": ("causal_conv", "torchscript"),
    "causal_conv_dilated_gru": ("causal_conv_dilated_gru", "dynamo"),
    "last_step_lstm2": ("LastStep", "torchscript"),
    "hn_last_gru2_gelu": ("HnLast", "dynamo"),
    "two_outputs": ("TwoOutputs", "torchscript"),
}


# --- torch models beyond the zoo (imported lazily: this file must import without torch) ---

def torch_models():
    import torch
    import torch.nn.functional as F
    from torch import nn

    class LastStep(nn.Module):
        """A sequence classifier: the output after the last step only, out[:, -1]."""

        def __init__(self):
            super().__init__()
            self.rnn = nn.LSTM(5, 12, num_layers=2, batch_first=True)
            self.fc = nn.Linear(12, 3)

        def forward(self, x):
            out, _ = self.rnn(x)
            return self.fc(out[:, -1])

    class HnLast(nn.Module):
        """The last layer's final hidden state, h_n[-1], into a Linear and GELU."""

        def __init__(self):
            super().__init__()
            self.rnn = nn.GRU(5, 12, num_layers=2, batch_first=True)
            self.fc = nn.Linear(12, 3)

        def forward(self, x):
            _, h = self.rnn(x)
            return F.gelu(self.fc(h[-1]))

    class TwoOutputs(nn.Module):
        """Two graph outputs: log-probabilities and an ELU regressor."""

        def __init__(self):
            super().__init__()
            self.rnn = nn.LSTM(5, 12, batch_first=True)
            self.cls = nn.Linear(12, 2)
            self.reg = nn.Linear(12, 1)

        def forward(self, x):
            out, _ = self.rnn(x)
            return torch.log_softmax(self.cls(out), -1), F.elu(self.reg(out))

    class Stacked(nn.Module):
        """The plainest models: nn.LSTM(num_layers=2) or nn.GRU, then one Linear."""

        def __init__(self, kind="lstm", layers=2):
            super().__init__()
            self.rnn = (nn.LSTM if kind == "lstm" else nn.GRU)(5, 16, num_layers=layers, batch_first=True)
            self.fc = nn.Linear(16, 2)

        def forward(self, x):
            out, _ = self.rnn(x)
            return self.fc(out)

    class Lstm2Linear(Stacked):
        pass

    class GruLinear(Stacked):
        def __init__(self):
            super().__init__("gru", 1)

    class TimeMajor(nn.Module):
        """batch_first=False: the input is (time, batch, features)."""

        def __init__(self):
            super().__init__()
            self.rnn = nn.LSTM(5, 12)
            self.fc = nn.Linear(12, 2)

        def forward(self, x):
            out, _ = self.rnn(x)
            return self.fc(out)

    class CentredConv(nn.Module):
        """Conv1d(padding=1): sees one step ahead, so it cannot stream."""

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv1d(5, 6, 3, padding=1)
            self.rnn = nn.LSTM(6, 12, batch_first=True)

        def forward(self, x):
            out, _ = self.rnn(self.conv(x.transpose(1, 2)).transpose(1, 2))
            return out

    return {cls.__name__: cls for cls in (LastStep, HnLast, TwoOutputs, Lstm2Linear, GruLinear, TimeMajor,
                                                CentredConv)}


def build_torch(model: str):
    """The torch module, seeded and in eval mode."""
    import torch
    sys.path.insert(0, str(HERE.parent.parent))
    import zoo
    if model in zoo.ZOO:
        return zoo.build(model)
    torch.manual_seed(0)
    return torch_models()[model]().eval()


def input_size(net) -> int:
    return next(p.shape[1] for p in net.parameters() if p.ndim >= 2)


def export_torch(model: str, path, exporter: str, time_axis: int = 1) -> None:
    """torch.onnx.export of build_torch(model) with a dynamic time axis.

    The dynamo exporter runs in a fresh interpreter: in torch 2.13, every dynamo export of an
    LSTM/GRU after the first in one process freezes the time axis at the example's length.
    Its value_info (which keeps the example's length, 7, in intermediate shapes that ONNX
    Runtime then trusts) and per-node metadata (source locations, 24 KB) are dropped."""
    if exporter == "dynamo" and os.environ.get("MAKE_ONNX_CHILD") != "1":
        env = dict(os.environ, MAKE_ONNX_CHILD="1")
        subprocess.run([sys.executable, __file__, "--export", model, str(path), str(time_axis)], check=True, env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return
    import torch
    net = build_torch(model)
    shape = [1, 1, input_size(net)]
    shape[time_axis] = 7
    n_outputs = 2 if model == "TwoOutputs" else 1
    names = dict(input_names=["x"], output_names=["y"] if n_outputs == 1 else [f"y{k}" for k in range(n_outputs)])
    if exporter == "dynamo":
        dims = {"x": {time_axis: torch.export.Dim("T", min=2, max=100_000)}}
        torch.onnx.export(net, (torch.randn(shape),), str(path), dynamo=True, dynamic_shapes=dims, **names)
        _drop_value_info(path)
    else:
        torch.onnx.export(net, (torch.randn(shape),), str(path), dynamo=False, dynamic_axes={"x": {time_axis: "T"}},
                          **names)


def _drop_value_info(path) -> None:
    import onnx
    m = onnx.load(str(path), load_external_data=False)
    del m.graph.value_info[:]
    for out in m.graph.output:
        out.type.tensor_type.ClearField("shape")
    for node in m.graph.node:
        del node.metadata_props[:]
    onnx.save(m, str(path))


# --- graphs built with onnx.helper ---

def _helper():
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    return onnx, TensorProto, helper, numpy_helper


def _rng(seed: int):
    return np.random.default_rng(seed)


def _w(rng, *shape, scale=0.4):
    return rng.uniform(-scale, scale, shape).astype(np.float32)


def peephole_lstm(layout: int = 0, opset: int = 20):
    """An LSTM with peepholes and an explicit zero initial_h, a MatMul+Add head and Tanh; input
    (batch, time, features). layout=0 wraps the node in Transposes; layout=1 (batch-major, which
    ONNX Runtime does not run) feeds it directly, so both graphs compute the same function."""
    onnx, TP, helper, nh = _helper()
    rng, n_in, hidden, n_out = _rng(1), 4, 8, 3
    h0 = np.zeros((1, 1, hidden), np.float32)
    inits = [nh.from_array(_w(rng, 1, 4 * hidden, n_in), "W"), nh.from_array(_w(rng, 1, 4 * hidden, hidden), "R"),
             nh.from_array(_w(rng, 1, 8 * hidden), "B"), nh.from_array(_w(rng, 1, 3 * hidden, scale=0.8), "P"),
             nh.from_array(h0, "h0"), nh.from_array(_w(rng, hidden, n_out), "fc_w"),
             nh.from_array(_w(rng, n_out), "fc_b"), nh.from_array(np.array([1 + layout], np.int64), "dir_axis")]
    lstm = helper.make_node("LSTM", ["xt" if layout == 0 else "x", "W", "R", "B", "", "h0", "", "P"], ["Y"],
                            hidden_size=hidden, layout=layout, name="lstm")
    squeeze = helper.make_node("Squeeze", ["Y", "dir_axis"], ["Ys" if layout == 0 else "Yb"], name="squeeze")
    nodes = [lstm, squeeze]
    if layout == 0:
        nodes = [helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0, 2], name="to_time_major"), *nodes,
                 helper.make_node("Transpose", ["Ys"], ["Yb"], perm=[1, 0, 2], name="to_batch_major")]
    nodes += [helper.make_node("MatMul", ["Yb", "fc_w"], ["m"], name="fc"),
              helper.make_node("Add", ["m", "fc_b"], ["a"], name="fc_bias"),
              helper.make_node("Tanh", ["a"], ["y"], name="tanh")]
    return _model(helper, TP, "peephole_lstm", nodes, inits, [1, "T", n_in], {"y": [1, "T", n_out]}, opset)


def gru_lbr(linear_before_reset: int = 1, opset: int = 20):
    """A GRU (linear_before_reset given explicitly), time-major input, Gelu(tanh) and Softmax."""
    onnx, TP, helper, nh = _helper()
    rng, n_in, hidden, n_out = _rng(2), 3, 10, 4
    inits = [nh.from_array(_w(rng, 1, 3 * hidden, n_in), "W"), nh.from_array(_w(rng, 1, 3 * hidden, hidden), "R"),
             nh.from_array(_w(rng, 1, 6 * hidden), "B"),
             nh.from_array(_w(rng, hidden, n_out), "fc_w"), nh.from_array(_w(rng, n_out), "fc_b"),
             nh.from_array(np.array([1], np.int64), "axis1")]
    gelu = (helper.make_node("Gelu", ["a"], ["g"], approximate="tanh", name="gelu") if opset >= 20
            else helper.make_node("Relu", ["a"], ["g"], name="relu"))
    nodes = [helper.make_node("GRU", ["x", "W", "R", "B"], ["Y", "Y_h"], hidden_size=hidden,
                              linear_before_reset=linear_before_reset, name="gru"),
             helper.make_node("Squeeze", ["Y", "axis1"], ["Ys"], name="squeeze"),      # (T, B, H)
             helper.make_node("MatMul", ["Ys", "fc_w"], ["m"], name="fc"),
             helper.make_node("Add", ["fc_b", "m"], ["a"], name="fc_bias"),
             gelu,
             helper.make_node("Softmax", ["g"], ["y"], axis=-1, name="softmax")]
    return _model(helper, TP, "gru_lbr", nodes, inits, ["T", 1, n_in], {"y": ["T", 1, n_out]}, opset)


def external_lstm(path) -> None:
    """A plain LSTM whose weights are in <name>.data, written by onnx.save's external data
    option; the output is the final hidden state Y_h through Squeeze and Relu."""
    onnx, TP, helper, nh = _helper()
    rng, n_in, hidden = _rng(3), 4, 6
    inits = [nh.from_array(_w(rng, 1, 4 * hidden, n_in), "W"), nh.from_array(_w(rng, 1, 4 * hidden, hidden), "R"),
             nh.from_array(_w(rng, 1, 8 * hidden), "B"), nh.from_array(np.array([0], np.int64), "axis0")]
    nodes = [helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0, 2], name="to_time_major"),
             helper.make_node("LSTM", ["xt", "W", "R", "B"], ["", "Y_h"], hidden_size=hidden, name="lstm"),
             helper.make_node("Squeeze", ["Y_h", "axis0"], ["h"], name="squeeze"),
             helper.make_node("Relu", ["h"], ["y"], name="relu")]
    model = _model(helper, TP, "external_lstm", nodes, inits, [1, "T", n_in], {"y": [1, hidden]}, 20)
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location=Path(path).name + ".data", size_threshold=64)


def _model(helper, TP, name, nodes, inits, in_shape, outputs: dict, opset: int):
    graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", TP.FLOAT, in_shape)],
                              [helper.make_tensor_value_info(k, TP.FLOAT, v) for k, v in outputs.items()], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="make_onnx.py")
    model.ir_version = 8
    return model


HELPER_FIXTURES = {"peephole_lstm": peephole_lstm, "gru_lbr": gru_lbr}


# --- goldens ---

def ort_outputs(path, xs: np.ndarray, time_major: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(steps, y): ONNX Runtime over the whole sequence; prefixes when the output is the last step only."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(x):
        feed = x[:, None] if time_major else x[None]
        outs = session.run(None, {session.get_inputs()[0].name: feed})
        return np.concatenate([o[:, 0] if time_major else o[0] for o in outs], -1)

    y = run(xs)
    if y.ndim == 2 and y.shape[0] == len(xs):
        return np.arange(1, len(xs) + 1), y
    steps = np.array([t for t in PREFIXES if t <= len(xs)])
    return steps, np.stack([run(xs[:t]).reshape(-1) for t in steps])


def _inputs(path, seed: int) -> np.ndarray:
    from edgelstm.model.onnx_file import read_onnx
    x = _rng(100 + seed).normal(0, 1, (STEPS, read_onnx(path).input_size))
    return x.astype(np.float16).astype(np.float32)              # stored as float16, exactly


def main() -> int:
    import onnx
    sys.path.insert(0, str(HERE.parent.parent.parent))
    for old in HERE.glob("*.onnx*"):
        old.unlink()
    made = []
    for name, (model, exporter) in TORCH_FIXTURES.items():
        export_torch(model, HERE / f"{name}.onnx", exporter)
        made.append(name)
    for name, build in HELPER_FIXTURES.items():
        onnx.save(build(), str(HERE / f"{name}.onnx"))
        made.append(name)
    external_lstm(HERE / "external_lstm.onnx")
    made.append("external_lstm")
    for k, name in enumerate(made):
        path = HERE / f"{name}.onnx"
        xs = _inputs(path, k)
        steps, y = ort_outputs(path, xs, time_major=name == "gru_lbr")
        np.savez_compressed(HERE / f"{name}.npz", x=xs.astype(np.float16), steps=steps, y=y.astype(np.float32))
        sizes = sum(os.path.getsize(p) for p in HERE.glob(f"{name}.*"))
        print(f"{name:28s} {sizes:7,d} bytes  y {y.shape}")
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--export"]:
        export_torch(sys.argv[2], sys.argv[3], "dynamo", int(sys.argv[4]))
        raise SystemExit(0)
    raise SystemExit(main())
