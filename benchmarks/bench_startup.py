"""Cold and warm start: a new process that imports edgelstm, loads a model and makes its first
prediction, with an empty kernel cache (cold: compiles) and with the cache filled (warm).
Also the resident memory (VmRSS) after the imports and after the first prediction, whether the
imports brought numba in, and the RSS of a process that only imports the daemon's service.

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
RSS = """
def rss_mb():
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS")) / 1024
"""
CHILD = RSS + """
import time, json, sys
t0 = time.perf_counter()
import numpy as np, edgelstm
from edgelstm.demo import bundled_model_path
t1 = time.perf_counter()
rss_import, numba_at_import = rss_mb(), "numba" in sys.modules
model = edgelstm.load(str(bundled_model_path()))
t2 = time.perf_counter()
model.warmup()
y = model.stream().step(np.zeros(model.input_size, np.float32))
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "compile_or_cache_s": t3 - t2, "total_s": t3 - t0,
                  "rss_import_mb": rss_import, "rss_ready_mb": rss_mb(), "numba_at_import": numba_at_import}))
"""
DAEMON_CHILD = RSS + """
import json, sys
import edgelstm.daemon.service
print(json.dumps({"rss_mb": rss_mb(), "numba_imported": "numba" in sys.modules}))
"""


def run_child(cache: str, code: str = CHILD) -> dict:
    env = dict(os.environ, EDGELSTM_CACHE_DIR=cache, PYTHONPATH=str(ROOT))
    env.pop("NUMBA_CACHE_DIR", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
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
    with tempfile.TemporaryDirectory() as cache:
        daemon = run_child(cache, DAEMON_CHILD)
    rss = {"after_import": med(warm, "rss_import_mb"), "after_first_prediction": med(warm, "rss_ready_mb"),
           "numba_imported_by_import_edgelstm": warm[0]["numba_at_import"],
           "daemon_service_import": daemon["rss_mb"], "numba_imported_by_daemon_service": daemon["numba_imported"]}
    print(f"RSS (MiB, warm): {rss['after_import']:.0f} after import, {rss['after_first_prediction']:.0f} after the "
          f"first prediction; {rss['daemon_service_import']:.0f} importing edgelstm.daemon.service "
          f"(numba imported: {daemon['numba_imported']})")
    path = write_json("bench_startup", {"machine": machine(), "cold": cold, "warm": warm, "rss_mb": rss,
                                        "median_total_s": {"cold": med(cold, "total_s"), "warm": med(warm, "total_s")}})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
