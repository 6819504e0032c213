"""Train the bundled demo model and write edgelstm/data/{activity.pt, activity.elstm,
activity_recording.npz}.

    .venv/bin/python training/train_activity.py        # about a minute on 2 CPU cores

A 2-layer LSTM (3 -> 32 -> 32) with a linear head classifies each 50 Hz accelerometer
reading as still / walking / running, carrying its state from reading to reading. It is
trained on windows of 250 readings from zero state with simulated data
(edgelstm/simulate.py, training seeds 1..), and the bundled recording uses a held-out seed.
"""

import dataclasses
from pathlib import Path

import numpy as np
import torch

from edgelstm.model import deploy
from edgelstm.model.loader import load_spec
from edgelstm.simulate import accelerometer

DATA = Path(__file__).resolve().parents[1] / "edgelstm" / "data"


class ActivityNet(torch.nn.Module):
    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("input_mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("input_std", torch.tensor(std, dtype=torch.float32))
        self.lstm = torch.nn.LSTM(3, 32, num_layers=2, batch_first=True)
        self.fc = torch.nn.Linear(32, 3)

    def forward(self, x):                       # (B, T, 3) -> (B, T, 3) logits
        out, _ = self.lstm((x - self.input_mean) / self.input_std)
        return self.fc(out)


def main():
    torch.manual_seed(0)
    x, y = accelerometer(200_000, seed=1)
    net = ActivityNet(x.mean(0), x.std(0))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    window, batch = 250, 32
    rng = np.random.default_rng(0)
    for it in range(600):
        starts = rng.integers(0, len(x) - window, batch)
        xb = torch.from_numpy(np.stack([x[s:s + window] for s in starts]))
        yb = torch.from_numpy(np.stack([y[s:s + window] for s in starts]))
        logits = net(xb)
        loss = torch.nn.functional.cross_entropy(logits[:, 25:].reshape(-1, 3), yb[:, 25:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if it % 100 == 0:
            print(f"iteration {it:4d}  loss {loss.item():.4f}")
    xr, yr = accelerometer(6000, seed=2024)                    # held-out recording, 2 minutes
    with torch.no_grad():
        acc = (net(torch.from_numpy(xr)[None])[0].argmax(-1).numpy() == yr).mean()
    print(f"held-out streaming accuracy (PyTorch, one pass): {acc:.3f}")
    DATA.mkdir(exist_ok=True)
    torch.save(net.state_dict(), DATA / "activity.pt")
    np.savez_compressed(DATA / "activity_recording.npz", x=xr, labels=yr, rate_hz=50)
    spec = load_spec(DATA / "activity.pt")
    spec = dataclasses.replace(spec, source={"file": "activity.pt", "trained_by": "training/train_activity.py",
                                             "torch": torch.__version__, "classes": ["still", "walking", "running"]})
    print("wrote", DATA / "activity.elstm", "hash", deploy.save(spec, DATA / "activity.elstm")[:12])


if __name__ == "__main__":
    main()
