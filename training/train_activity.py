"""Train the bundled demo model and write edgelstm/data/{activity.pt, activity.elstm,
activity_recording.npz}; or, with --recording, train the same network on readings you recorded.

    .venv/bin/python training/train_activity.py        # about a minute on 2 CPU cores
    .venv/bin/python training/train_activity.py --recording recordings/ --out my-model/

A 2-layer LSTM (inputs -> 32 -> 32) with a linear head classifies each reading (for the bundled
model: 50 Hz accelerometer readings as still / walking / running), carrying its state from
reading to reading. It is trained on windows of 250 readings from zero state, by default with
simulated data (edgelstm/simulate.py, training seeds 1..); the bundled recording uses a held-out seed.

--recording PATH trains from edgelstm.recording.read(PATH) (what `edgelstm record` wrote): each
stream's readings in order, their "label" as the class (a name from --classes, or its index);
readings without a label take no part in the loss. The last 20% of each stream is held out for
the accuracy printed at the end; the files go to --out (default ./model-from-recording).
"""

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import torch

from edgelstm.model import deploy
from edgelstm.model.loader import load_spec
from edgelstm.simulate import ACTIVITIES, accelerometer

DATA = Path(__file__).resolve().parents[1] / "edgelstm" / "data"
UNLABELLED = -100                               # cross_entropy's ignore_index: no loss for these readings
WINDOW, BATCH, WARMUP = 250, 32, 25             # readings per window, windows per step, readings not scored


class ActivityNet(torch.nn.Module):
    def __init__(self, mean, std, n_classes: int = 3):
        super().__init__()
        self.register_buffer("input_mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("input_std", torch.tensor(std, dtype=torch.float32))
        self.lstm = torch.nn.LSTM(len(mean), 32, num_layers=2, batch_first=True)
        self.fc = torch.nn.Linear(32, n_classes)

    def forward(self, x):                       # (B, T, inputs) -> (B, T, classes) logits
        out, _ = self.lstm((x - self.input_mean) / self.input_std)
        return self.fc(out)


def train(net, streams: list[tuple[np.ndarray, np.ndarray]], iterations: int, window: int) -> None:
    """Adam on random windows of `streams` ((x (T, inputs) float32, y (T,) int64) each)."""
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)
    n_classes = net.fc.out_features
    for it in range(iterations):
        if len(streams) == 1:                   # the bundled model's draws: it trains to the same weights
            picks = np.zeros(BATCH, int)
            starts = rng.integers(0, len(streams[0][0]) - window, BATCH)
        else:                                   # a stream per window, then a start in it
            picks = rng.choice(len(streams), BATCH)
            starts = np.array([rng.integers(0, len(streams[k][0]) - window + 1) for k in picks])
        xb = torch.from_numpy(np.stack([streams[k][0][s:s + window] for k, s in zip(picks, starts)]))
        yb = torch.from_numpy(np.stack([streams[k][1][s:s + window] for k, s in zip(picks, starts)]))
        logits = net(xb)
        loss = torch.nn.functional.cross_entropy(logits[:, WARMUP:].reshape(-1, n_classes),
                                                 yb[:, WARMUP:].reshape(-1), ignore_index=UNLABELLED)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if it % 100 == 0:
            print(f"iteration {it:4d}  loss {loss.item():.4f}")


def accuracy(net, streams: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """Streaming accuracy over the labelled readings of `streams`, each in one pass from zero state."""
    right = total = 0
    with torch.no_grad():
        for x, y in streams:
            predicted = net(torch.from_numpy(x)[None])[0].argmax(-1).numpy()
            labelled = y != UNLABELLED
            right += int((predicted[labelled] == y[labelled]).sum())
            total += int(labelled.sum())
    return right / max(total, 1)


def class_indices(labels, classes: list[str], stream: str) -> np.ndarray:
    """(T,) int64 class indices for a recording's labels: a class name or its index; "" is unlabelled."""
    index = {name: i for i, name in enumerate(classes)} | {str(i): i for i in range(len(classes))}
    if labels is None:
        return np.full(0, UNLABELLED)
    unknown = sorted({label for label in labels if label and label not in index})
    if unknown:
        raise SystemExit(f"stream {stream}: labels {unknown[:5]} are not among --classes {','.join(classes)} (or "
                         f"their indices 0..{len(classes) - 1}): pass the classes your senders label with")
    return np.array([index[label] if label else UNLABELLED for label in labels], np.int64)


def recorded_streams(path: str, classes: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(x, y) of every stream in the recording at `path` with any labelled reading."""
    import edgelstm.recording
    streams = []
    for stream, rec in edgelstm.recording.read(path).items():
        y = class_indices(rec.labels, classes, stream)
        if len(y) and (y != UNLABELLED).any():
            streams.append((rec.x, y))
        else:
            print(f"stream {stream}: {len(rec)} readings without labels, not used")
    if not streams:
        raise SystemExit(f"{path}: no stream has labelled readings: send \"label\" in the JSON payloads while "
                         "recording (README, Recording data for training)")
    return streams


def main_recording(args) -> None:
    classes = args.classes.split(",")
    streams = recorded_streams(args.recording, classes)
    cut = [int(len(x) * 0.8) for x, _ in streams]                  # the last 20% of each stream is held out
    training = [(x[:c], y[:c]) for (x, y), c in zip(streams, cut)]
    held_out = [(x[c:], y[c:]) for (x, y), c in zip(streams, cut) if len(x) > c]
    window = min(WINDOW, min(len(x) for x, _ in training) - 1)
    if window <= WARMUP:
        raise SystemExit(f"the shortest stream has {window + 1} training readings: record more than "
                         f"{(WARMUP + 2) * 5 // 4} readings per stream")
    x_all = np.concatenate([x for x, _ in training])
    torch.manual_seed(0)
    net = ActivityNet(x_all.mean(0), x_all.std(0) + 1e-6, len(classes))
    print(f"training on {len(x_all):,} readings of {len(training)} streams from {args.recording}, windows of {window}")
    train(net, training, args.iterations, window)
    print(f"held-out streaming accuracy (last 20% of each stream, PyTorch, one pass): {accuracy(net, held_out):.3f}")
    save(net, Path(args.out or "model-from-recording"), {"recording": str(args.recording), "classes": classes})


def main_simulated(args) -> None:
    torch.manual_seed(0)
    x, y = accelerometer(200_000, seed=1)
    net = ActivityNet(x.mean(0), x.std(0))
    train(net, [(x, y)], args.iterations, WINDOW)
    xr, yr = accelerometer(6000, seed=2024)                    # held-out recording, 2 minutes
    print(f"held-out streaming accuracy (PyTorch, one pass): {accuracy(net, [(xr, yr)]):.3f}")
    out = Path(args.out) if args.out else DATA
    out.mkdir(exist_ok=True)
    np.savez_compressed(out / "activity_recording.npz", x=xr, labels=yr, rate_hz=50)
    save(net, out, {"classes": list(ACTIVITIES)})


def save(net, out: Path, source: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), out / "activity.pt")
    spec = load_spec(out / "activity.pt")
    spec = dataclasses.replace(spec, source={"file": "activity.pt", "trained_by": "training/train_activity.py",
                                             "torch": torch.__version__, **source})
    print("wrote", out / "activity.elstm", "hash", deploy.save(spec, out / "activity.elstm")[:12])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recording", metavar="PATH", help="train from this recording (a file or directory that "
                   "edgelstm record wrote) instead of simulated data")
    p.add_argument("--classes", default=",".join(ACTIVITIES),
                   help=f"with --recording: the class names, in output order (default {','.join(ACTIVITIES)})")
    p.add_argument("--out", metavar="DIR", help="where activity.pt and activity.elstm go (default edgelstm/data; "
                   "with --recording, ./model-from-recording)")
    p.add_argument("--iterations", type=int, default=600, help="training steps (default 600)")
    args = p.parse_args(argv)
    (main_recording if args.recording else main_simulated)(args)


if __name__ == "__main__":
    main()
