"""Cold and warm start: a new process that imports edgelstm, loads a model and makes its first
prediction, with an empty kernel cache (cold: compiles) and with the cache filled (warm).

    .venv/bin/python benchmarks/bench_startup.py [--runs 5]

Writes benchmarks/results/bench_startup.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import machine, progress, write_json

ROOT = Path(__file__).resolve().parents[1]
CHILD = """
import time, json
t0 = time.perf_counter()
import numpy as np, edgelstm
from edgelstm.demo import bundled_model_path
t1 = time.perf_counter()
model = edgelstm.load(str(bundled_model_path()))
t2 = time.perf_counter()
model.warmup()
y = model.stream().step(np.zeros(model.input_size, np.float32))
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "compile_or_cache_s": t3 - t2, "total_s": t3 - t0}))
"""


def run_child(cache: str) -> dict:
    env = dict(os.environ, EDGELSTM_CACHE_DIR=cache, PYTHONPATH=str(ROOT))
    env.pop("NUMBA_CACHE_DIR", None)
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    cold, warm = [], []
    for i in range(args.runs):
        with tempfile.TemporaryDirectory() as cache:
            cold.append(run_child(cache))
            progress(f"cold run {i + 1}: {cold[-1]['total_s']:.2f} s")
            warm.append(run_child(cache))
            progress(f"warm run {i + 1}: {warm[-1]['total_s']:.2f} s")
    def med(runs, key):
        return statistics.median(r[key] for r in runs)

    print(f"\n{'start':<6}{'import':>10}{'load':>10}{'kernels':>10}{'total':>10}   (medians of {args.runs}, seconds)")
    for name, runs in (("cold", cold), ("warm", warm)):
        parts = ("import_s", "load_s", "compile_or_cache_s", "total_s")
        print(f"{name:<6}" + "".join(f"{med(runs, k):>10.3f}" for k in parts))
    print(f"warm start is {med(cold, 'total_s') / med(warm, 'total_s'):.1f}x faster than cold")
    path = write_json("bench_startup", {"machine": machine(), "cold": cold, "warm": warm,
                                        "median_total_s": {"cold": med(cold, "total_s"), "warm": med(warm, "total_s")}})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
