"""Regenerate the committed TorchScript fixtures (torch.jit.script / trace of zoo models) and
the PyTorch outputs they must reproduce, so the reader is tested without torch.

    .venv/bin/python tests/data/torchscript/make_torchscript.py
"""

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

FIXTURES = {"two_heads_traced": ("two_heads", "trace"), "lstm_mlp_head_scripted": ("lstm_mlp_head", "script"),
            "causal_conv_dilated_gru_traced": ("causal_conv_dilated_gru", "trace")}

if __name__ == "__main__":
    import torch
    import zoo
    for fixture, (name, mode) in FIXTURES.items():
        net = zoo.build(name)
        n_in = next(p for p in net.parameters() if p.ndim >= 2).shape[1]
        xs = np.random.default_rng(4).normal(size=(300, n_in)).astype(np.float32)
        m = torch.jit.script(net) if mode == "script" else torch.jit.trace(net, torch.zeros(1, 5, n_in))
        torch.jit.save(m, HERE / f"{fixture}.pt")
        np.savez_compressed(HERE / f"{fixture}.npz", x=xs, y=zoo.run(net, xs))
        print("wrote", fixture)
