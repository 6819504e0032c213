"""The CUDA backend against the CPU kernel: stream-steps per second of bank.step for 1 to
16,384 streams, in the step benchmark's shape (8 inputs, LSTM 64 x 2, Linear 1), and the
crossover where the GPU starts to win.

    python benchmarks/bench_cuda.py [--repeats 5] [--name bench_cuda]

Writes results/<name>.{json,png}. Needs a CUDA GPU (numba-cuda); without one it times the CPU only.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
from common import RESULTS, machine, pin_one_thread, progress, write_json

pin_one_thread()
from bench_export_c import lstm_spec

from edgelstm import backends
from edgelstm.engine import Model

COUNTS = (1, 4, 16, 64, 256, 1024, 4096, 16384)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--name", default="bench_cuda")
    args = ap.parse_args()
    reason = backends.cuda_unavailable_reason()
    names = ("cpu",) if reason else ("cpu", "cuda")
    gpu = "none: " + reason if reason else _gpu_name()
    model = Model(lstm_spec(64))
    rows = backends.measure(model, COUNTS, names, repeats=args.repeats, progress=progress)
    crossover = None if reason else backends.find_crossover(rows, 64)
    print(f"\nbank.step, 8 -> LSTM 64 x 2 -> 1; medians of {args.repeats}; GPU: {gpu}; CPU: {machine()['cpu']}")
    head = "" if reason else f" {'GPU stream-steps/s':>19} {'GPU/CPU':>8}"
    print(f"{'streams':>8} {'CPU stream-steps/s':>19}{head}")
    for r in rows:
        extra = "" if reason else f" {r['cuda']:>19,.0f} {r['cuda'] / r['cpu']:>7.2f}x"
        print(f"{r['streams']:>8} {r['cpu']:>19,.0f}{extra}")
    if crossover is not None:
        print(f"crossover: {crossover // 64} streams (streams x hidden = {crossover})")
    path = write_json(args.name, {"machine": machine(), "gpu": gpu, "repeats": args.repeats, "rows": rows,
                                  "crossover_streams_x_hidden": crossover,
                                  "shape": {"input": 8, "hidden": 64, "layers": 2, "output": 1}})
    plot(rows, gpu, args.name)
    print(f"wrote {path} and {RESULTS / (args.name + '.png')}")
    return 0


def _gpu_name() -> str:
    from numba import cuda
    name = cuda.get_current_device().name
    return name.decode() if isinstance(name, bytes) else str(name)


def plot(rows, gpu: str, name: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    xs = [r["streams"] for r in rows]
    ax.plot(xs, [r["cpu"] for r in rows], marker="o", label="CPU kernel (1 thread)")
    if "cuda" in rows[0]:
        ax.plot(xs, [r["cuda"] for r in rows], marker="o", label=f"CUDA ({gpu})")
    ax.set(xscale="log", yscale="log", xlabel="streams stepped per call", ylabel="stream-steps per second",
           title="bank.step: 8 -> LSTM 64 x 2 -> 1")
    ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / f"{name}.png", dpi=120)


if __name__ == "__main__":
    sys.exit(main())
