"""Cold and warm start: a new process that imports edgelstm, loads a model and makes its first
prediction, with an empty kernel cache (cold: numba compiles), with numba's cache filled (warm),
and with prebuilt kernels (`edgelstm warmup` built them: kernels/prebuilt.py; numba is never
imported). Also the resident memory (VmRSS) after the imports and after the first prediction,
whether numba was loaded, the time `edgelstm warmup` takes to prebuild, and the RSS of a process
that imports the daemon's service and makes one prediction, with and without prebuilt kernels.

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
                  "rss_import_mb": rss_import, "rss_ready_mb": rss_mb(), "numba_at_import": numba_at_import,
                  "numba_ready": "numba" in sys.modules}))
"""
DAEMON_CHILD = RSS + """
import json, sys
import numpy as np
import edgelstm.daemon.service
from edgelstm.demo import bundled_model_path
model = edgelstm.load(str(bundled_model_path()))
model.warmup()
model.bank(1024).step(["a"], np.zeros((1, model.input_size), np.float32))
print(json.dumps({"rss_mb": rss_mb(), "numba_imported": "numba" in sys.modules}))
"""


def run_child(cache: str, code: str = CHILD, prebuilt: bool = False) -> dict:
    env = dict(os.environ, EDGELSTM_CACHE_DIR=cache, PYTHONPATH=str(ROOT), EDGELSTM_PREBUILT="1" if prebuilt else "0")
    env.pop("NUMBA_CACHE_DIR", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def prebuild(cache: str) -> float:
    """Seconds `edgelstm warmup` takes to build the prebuilt kernels into a filled cache."""
    env = dict(os.environ, EDGELSTM_CACHE_DIR=cache, PYTHONPATH=str(ROOT), EDGELSTM_PREBUILT="1")
    env.pop("NUMBA_CACHE_DIR", None)
    out = subprocess.run([sys.executable, "-m", "edgelstm", "warmup", str(ROOT / "edgelstm/data/activity.elstm")],
                         env=env, capture_output=True, text=True, check=True)
    assert "prebuilt kernels built in" in out.stdout, out.stdout + out.stderr
    return float(out.stdout.split("prebuilt kernels built in ")[1].split(" s")[0])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    cold, warm, fast = [], [], []
    for i in range(args.runs):
        with tempfile.TemporaryDirectory() as cache:
            cold.append(run_child(cache))
            progress(f"cold run {i + 1}: {cold[-1]['total_s']:.2f} s")
            warm.append(run_child(cache))
            progress(f"warm run {i + 1}: {warm[-1]['total_s']:.2f} s")
    with tempfile.TemporaryDirectory() as cache:
        run_child(cache)
        jit_daemon = run_child(cache, DAEMON_CHILD)
        progress("prebuilding (edgelstm warmup)")
        build_s = prebuild(cache)
        for i in range(args.runs):
            fast.append(run_child(cache, prebuilt=True))
            progress(f"prebuilt run {i + 1}: {fast[-1]['total_s']:.2f} s")
        fast_daemon = run_child(cache, DAEMON_CHILD, prebuilt=True)

    def med(runs, key):
        return statistics.median(r[key] for r in runs)

    print(f"\n{'start':<9}{'import':>9}{'load':>9}{'kernels':>9}{'total':>9}{'RSS MiB':>9}  numba   "
          f"(medians of {args.runs}, seconds)")
    for name, runs in (("cold", cold), ("warm", warm), ("prebuilt", fast)):
        parts = ("import_s", "load_s", "compile_or_cache_s", "total_s")
        print(f"{name:<9}" + "".join(f"{med(runs, k):>9.3f}" for k in parts)
              + f"{med(runs, 'rss_ready_mb'):>9.0f}  {'loaded' if runs[0]['numba_ready'] else 'never imported'}")
    print(f"warm start is {med(cold, 'total_s') / med(warm, 'total_s'):.1f}x faster than cold, prebuilt "
          f"{med(cold, 'total_s') / med(fast, 'total_s'):.1f}x; prebuilding took {build_s:.1f} s (edgelstm warmup)")
    print(f"daemon service + one prediction: {jit_daemon['rss_mb']:.0f} MiB with numba's cache, "
          f"{fast_daemon['rss_mb']:.0f} MiB prebuilt (numba imported: {fast_daemon['numba_imported']})")
    rss = {"after_import": med(warm, "rss_import_mb"), "after_first_prediction": med(warm, "rss_ready_mb"),
           "after_first_prediction_prebuilt": med(fast, "rss_ready_mb"),
           "daemon_ready_jit": jit_daemon["rss_mb"], "daemon_ready_prebuilt": fast_daemon["rss_mb"],
           "numba_imported_by_prebuilt_daemon": fast_daemon["numba_imported"]}
    totals = {name: med(runs, "total_s") for name, runs in (("cold", cold), ("warm", warm), ("prebuilt", fast))}
    path = write_json("bench_startup", {"machine": machine(), "cold": cold, "warm": warm, "prebuilt": fast,
                                        "rss_mb": rss, "prebuild_s": build_s, "median_total_s": totals})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
