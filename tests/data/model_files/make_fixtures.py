"""Regenerate the small torch-made files that test the torch-free readers (tests/test_model_files.py).

    .venv/bin/python tests/data/model_files/make_fixtures.py

Every file is made by real torch / safetensors calls; expected.npz holds what each must read as
(float32 values of bf16 tensors, the model's outputs for a fixed input). Needs torch and safetensors.
"""

import argparse
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

HERE = Path(__file__).resolve().parent


class Net(torch.nn.Module):
    """LSTM(3 -> 4) + Linear(4 -> 2) with input normalisation buffers: a minimal streaming model."""

    def __init__(self):
        super().__init__()
        self.rnn = torch.nn.LSTM(3, 4)
        self.fc = torch.nn.Linear(4, 2)
        self.register_buffer("input_mean", torch.tensor([0.1, -0.2, 0.3]))
        self.register_buffer("input_std", torch.tensor([1.5, 0.5, 2.0]))

    def forward(self, x):
        y, _ = self.rnn((x - self.input_mean) / self.input_std)
        return self.fc(y)


def arrays(sd) -> dict:
    return {k: v.detach().float().numpy().copy() for k, v in sd.items()}


def main():
    torch.manual_seed(0)
    net = Net().eval()
    x = torch.randn(20, 1, 3)
    with torch.no_grad():
        y = net(x)[:, 0].numpy()
    expected = {"x": x[:, 0].numpy(), "y": y}
    expected.update({f"net/{k}": v for k, v in arrays(net.state_dict()).items()})

    bf16 = {k: v.to(torch.bfloat16) for k, v in net.state_dict().items()}
    bf16["specials"] = torch.tensor([0.0, -0.0, float("inf"), -float("inf"), float("nan"), 1e-40, 3.0e38, -1.5],
                                    dtype=torch.bfloat16)
    torch.save(bf16, HERE / "bf16_state_dict.pt")
    expected.update({f"bf16/{k}": v for k, v in arrays(bf16).items()})

    torch.save(net.state_dict(), HERE / "legacy_state_dict.pt", _use_new_zipfile_serialization=False)
    torch.save(net, HERE / "legacy_whole.pt", _use_new_zipfile_serialization=False)
    torch.save(net, HERE / "whole_net.pt")
    torch.save(torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU()), HERE / "whole_sequential.pt")
    torch.jit.save(torch.jit.script(net), HERE / "scripted.pt")
    torch.jit.save(torch.jit.trace(net, x), HERE / "traced.pt")

    quantized = torch.ao.quantization.quantize_dynamic(net, {torch.nn.LSTM, torch.nn.Linear}, dtype=torch.qint8)
    torch.save(quantized.state_dict(), HERE / "quantized_state_dict.pt")

    mean, scale = np.array([0.5, -1.0, 2.0]), np.array([[1.0, 2.0], [3.0, 4.0]], np.float32, order="F")
    torch.save({"state_dict": net.state_dict(), "epoch": np.int64(7), "threshold": np.float64(0.5),
                "scaler": {"mean": mean, "scale": scale, "count": np.arange(4, dtype=np.int16)},
                "args": argparse.Namespace(hidden=4, lr=0.01, name="demo", layers=(1, 2))},
               HERE / "numpy_checkpoint.pt")
    expected.update({"numpy/mean": mean, "numpy/scale": scale})

    mixed = {"bf16": torch.tensor([1.0, -2.5, 3.140625, 1e-40], dtype=torch.bfloat16),
             "f16": torch.tensor([0.5, -65504.0], dtype=torch.float16),
             "f32": torch.arange(6, dtype=torch.float32).reshape(2, 3), "f64": torch.tensor([1e300]),
             "i64": torch.tensor([-(2**62), 5]), "u8": torch.tensor([0, 255], dtype=torch.uint8),
             "b": torch.tensor([True, False]), "empty": torch.zeros(0, 3)}
    save_file(mixed, str(HERE / "mixed.safetensors"), metadata={"format": "pt"})
    expected.update({f"mixed/{k}": (v.float() if v.dtype == torch.bfloat16 else v).numpy() for k, v in mixed.items()})
    np.savez(HERE / "expected.npz", **expected)


if __name__ == "__main__":
    main()
