"""The command line, run as a user would (a subprocess of the installed entry point)."""

import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, golden

pytestmark = pytest.mark.integration


def edgelstm(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "edgelstm", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def test_help_lists_commands():
    out = edgelstm("--help")
    assert out.returncode == 0
    for word in ("demo", "convert", "inspect", "warmup", "EDGELSTM_CACHE_DIR"):
        assert word in out.stdout


def test_demo_runs_board_and_daemon_over_a_pty():
    out = edgelstm("demo", "--speed", "0", "--steps", "1000", "--streams", "2")
    assert out.returncode == 0, out.stderr
    done = out.stdout.split("done: ")[1]
    assert done.startswith("2000 predictions from 2000 readings sent over /dev/pts/"), done
    assert "bad frames 0, gaps 0" in done
    acc = float(done.split("accuracy ")[1].split("%")[0])
    assert acc > 90.0, out.stdout[-500:]


def test_convert_then_inspect(tmp_path):
    weights, _, _ = golden("gru_2layer_head")
    np.savez(tmp_path / "m.npz", **weights)
    out = edgelstm("convert", tmp_path / "m.npz", "-o", tmp_path / "m.elstm")
    assert out.returncode == 0, out.stderr
    assert "GRU 8 -> 48" in out.stdout
    out = edgelstm("inspect", tmp_path / "m.elstm")
    assert out.returncode == 0 and "parameters" in out.stdout and "content hash" in out.stdout


def test_errors_are_one_line_with_exit_code_1(tmp_path):
    weights, _, _ = golden("lstm_1layer")
    np.savez(tmp_path / "m.npz", **dict(weights, **{"extra.weight": np.ones((3, 3), np.float32)}))
    out = edgelstm("convert", tmp_path / "m.npz")
    assert out.returncode == 1
    assert "error:" in out.stderr and "--allow-unused" in out.stderr and "Traceback" not in out.stderr
    assert edgelstm("convert", tmp_path / "m.npz", "--allow-unused").returncode == 0


@pytest.mark.slow
def test_kernel_cache_goes_to_edgelstm_cache_dir(tmp_path):
    """A process with EDGELSTM_CACHE_DIR set writes its compiled kernels there, and a second
    process loads them instead of compiling (bench_startup.py measures how much faster)."""
    import os
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["EDGELSTM_CACHE_DIR"] = str(tmp_path)
    run = lambda: subprocess.run([sys.executable, "-m", "edgelstm", "warmup",  # noqa: E731
                                  str(ROOT / "edgelstm" / "data" / "activity.elstm")],
                                 capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)
    first = run()
    assert first.returncode == 0, first.stderr
    assert str(tmp_path) in first.stdout
    cached = list(tmp_path.rglob("*.nbi"))
    assert cached, "no numba index files were written to EDGELSTM_CACHE_DIR"
    second = run()
    assert second.returncode == 0 and sorted(tmp_path.rglob("*.nbi")) == sorted(cached)
    t1, t2 = (float(r.stdout.split("ready in ")[1].split(" s")[0]) for r in (first, second))
    assert t2 < t1 / 3, f"warm start {t2:.2f} s is not much faster than cold {t1:.2f} s"


def test_convert_a_state_dict_with_an_mlp_head_needs_arch_and_prints_the_graph(tmp_path):
    from test_zoo import zoo_golden
    weights, arch, xs, ys = zoo_golden("gru_mlp_head_softmax")
    np.savez(tmp_path / "m.npz", **weights)
    out = edgelstm("convert", tmp_path / "m.npz", "-o", tmp_path / "m.elstm")
    assert out.returncode != 0 and "arch=" in out.stderr and "Traceback" not in out.stderr
    out = edgelstm("convert", tmp_path / "m.npz", "--arch", arch, "-o", tmp_path / "m.elstm")
    assert out.returncode == 0, out.stderr
    for line in ("layer 0: GRU 6 -> 16", "post:  Linear 16 -> 12 (head.0)", "post:  tanh", "post:  softmax"):
        assert line in out.stdout
    import edgelstm as lib
    got = lib.load(tmp_path / "m.elstm").stream().step_many(xs[:100])
    np.testing.assert_allclose(got, ys[:100], atol=1e-5, rtol=0)
