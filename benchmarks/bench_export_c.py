"""The generated C model (export-c) on this machine next to the Numba kernel, and its flash/RAM
footprint per model size: 2-layer LSTM, 8 inputs, 1 output (the step benchmark's shape at H=64).

    .venv/bin/python benchmarks/bench_export_c.py [--repeats 5] [--steps 20000]

Writes results/bench_export_c.{json,png}. The C is built with the system compiler at -O2 (what a
firmware build typically uses); times are medians of --repeats runs, each of --steps steps.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
from common import RESULTS, machine, median_time, pin_one_thread, progress, write_json

pin_one_thread()
import numpy as np

from edgelstm.engine import Model
from edgelstm.export.c_source import export
from edgelstm.model.layers import Linear
from edgelstm.model.spec import ModelSpec, RecurrentLayer

HIDDEN = (16, 32, 64, 128)
I, LAYERS, O = 8, 2, 1  # noqa: E741
HARNESS = HERE.parent / "firmware_bridge" / "tests" / "model_harness.c"


def lstm_spec(hidden: int, seed: int = 0) -> ModelSpec:
    rng = np.random.default_rng(seed)
    s, layers, n_in = 1 / np.sqrt(hidden), [], I
    for _ in range(LAYERS):
        g = 4 * hidden
        layers.append(RecurrentLayer("lstm", n_in, hidden, rng.uniform(-s, s, (g, n_in)),
                                     rng.uniform(-s, s, (g, hidden)), rng.uniform(-s, s, g), rng.uniform(-s, s, g)))
        n_in = hidden
    return ModelSpec.classic(tuple(layers), Linear(rng.uniform(-s, s, (O, hidden)), np.zeros(O)))


def c_step_seconds(spec, int8: bool, steps: int, repeats: int, work: Path) -> tuple[float, dict]:
    out = work / f"h{spec.layers[0].hidden_size}_{'int8' if int8 else 'f32'}"
    _, footprint = export(spec, out, int8=int8)
    exe = out / "harness"
    subprocess.run([shutil.which("cc") or "gcc", "-std=c99", "-O2", f"-I{out}", "-o", str(exe), str(HARNESS),
                    str(out / "model.c")], check=True)
    runs = []
    for _ in range(repeats):
        text = subprocess.run([str(exe), "bench", str(steps)], capture_output=True, text=True, check=True).stdout
        runs.append(float(text.split()[1]) * 1e-9)
    return statistics.median(runs), {"flash_bytes": footprint.flash_bytes, "state_bytes": footprint.state_bytes,
                                     "scratch_bytes": footprint.scratch_bytes, "runs_s": runs}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20000)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for hidden in HIDDEN:
            spec = lstm_spec(hidden)
            progress(f"H={hidden}: C float32, C int8, Numba")
            c32, f32 = c_step_seconds(spec, False, args.steps, args.repeats, Path(tmp))
            c8, i8 = c_step_seconds(spec, True, args.steps, args.repeats, Path(tmp))
            stream, x = Model(spec).stream(), np.ones(I, np.float32)
            numba, _ = median_time(lambda: stream.step(x), args.steps // 4, args.repeats)
            rows.append({"hidden": hidden, "parameters": spec.parameter_count, "numba_step_s": numba,
                         "c_float32_step_s": c32, "c_int8_step_s": c8, "float32": f32, "int8": i8})

    print(f"\n2-layer LSTM, {I} inputs, {O} output; medians of {args.repeats} runs; C at -O2 on {machine()['cpu']}")
    print(f"{'H':>5} {'params':>8} {'Numba us':>9} {'C f32 us':>9} {'C int8 us':>10} {'C/Numba':>8} "
          f"{'flash f32':>10} {'flash int8':>11} {'RAM/stream':>11} {'scratch':>8}")
    for r in rows:
        print(f"{r['hidden']:>5} {r['parameters']:>8,} {r['numba_step_s'] * 1e6:>9.2f} "
              f"{r['c_float32_step_s'] * 1e6:>9.2f} "
              f"{r['c_int8_step_s'] * 1e6:>10.2f} {r['c_float32_step_s'] / r['numba_step_s']:>7.2f}x "
              f"{r['float32']['flash_bytes']:>10,} {r['int8']['flash_bytes']:>11,} {r['float32']['state_bytes']:>11,} "
              f"{r['float32']['scratch_bytes']:>8,}")
    path = write_json("bench_export_c", {"machine": machine(), "repeats": args.repeats, "steps": args.steps,
                                         "shape": {"input": I, "layers": LAYERS, "output": O}, "rows": rows})
    plot(rows)
    print(f"\nwrote {path} and {RESULTS / 'bench_export_c.png'}")
    return 0


def plot(rows) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    hs = [r["hidden"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for key, label in (("numba_step_s", "Numba stream.step"), ("c_float32_step_s", "generated C, float32"),
                       ("c_int8_step_s", "generated C, int8")):
        a.plot(hs, [r[key] * 1e6 for r in rows], marker="o", label=label)
    a.set(xscale="log", yscale="log", xlabel="hidden size H (2 layers)", ylabel="µs per step (this host)",
          title="Step time")
    a.set_xticks(hs, [str(h) for h in hs])
    a.legend()
    for key, label in (("float32", "flash, float32"), ("int8", "flash, int8")):
        b.plot(hs, [r[key]["flash_bytes"] / 1024 for r in rows], marker="o", label=label)
    b.plot(hs, [r["float32"]["state_bytes"] / 1024 for r in rows], marker="s", label="RAM per stream")
    b.set(xscale="log", yscale="log", xlabel="hidden size H (2 layers)", ylabel="KiB", title="Footprint")
    b.set_xticks(hs, [str(h) for h in hs])
    b.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "bench_export_c.png", dpi=120)


if __name__ == "__main__":
    sys.exit(main())
