"""The no-allocation check every compiled hot path gets: NUMBA_NRT_STATS counts each allocation
made by compiled code, so a script that drives a kernel once and then many times from a
compiled loop must report the same count both times (a per-step temporary would add one per step)."""

import os
import subprocess
import sys


def assert_allocations_flat(script: str, many: int) -> None:
    """script prints `allocs(1) allocs(many)`; fails unless they are equal."""
    path = [os.path.dirname(os.path.abspath(__file__)), os.environ.get("PYTHONPATH", "")]
    env = dict(os.environ, NUMBA_NRT_STATS="1", PYTHONPATH=os.pathsep.join(p for p in path if p))
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    one, n = map(int, out.stdout.split())
    assert one == n, f"allocations grow with steps: {one} for 1, {n} for {many}"
