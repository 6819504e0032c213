"""The CUDA backend: parity with the CPU kernel (under the CUDA simulator when no GPU is here),
and the backend choice: "cuda" without a GPU is a clear error, "auto" falls back to the CPU."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import TESTS
from cuda_parity import CASES

import edgelstm
from edgelstm import backends
from edgelstm.daemon.config import DaemonConfig, SerialConfig
from edgelstm.daemon.service import Daemon
from edgelstm.errors import BackendError

MODEL = TESTS.parent / "edgelstm" / "data" / "activity.elstm"

HAVE_GPU = backends.cuda_unavailable_reason() is None


@pytest.fixture(scope="module")
def parity() -> dict:
    env = dict(os.environ)
    if not HAVE_GPU:
        env["NUMBA_ENABLE_CUDASIM"] = "1"
    args = [sys.executable, str(TESTS / "cuda_parity.py"), "--steps", "200"] + (["--big"] if HAVE_GPU else [])
    proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.splitlines()[-1])


@pytest.mark.parametrize("case", [f"{name}-{n}" for name, n in CASES])
@pytest.mark.slow
def test_cuda_matches_cpu_over_200_steps(parity, case):
    r = parity[case]
    assert r["steps"] == 200
    assert r["max_dy"] <= 1e-5 and r["max_dstate"] <= 1e-5, r
    assert r["bad_input_refused"] and r["state_ops"], r


@pytest.mark.slow
def test_cuda_overflow_keeps_that_streams_state(parity):
    assert parity["overflow"] == {"raised": True, "failed": ["b"], "kept": True}
    assert parity["device"] == ("simulator" if not HAVE_GPU else parity["device"])


@pytest.mark.slow
def test_daemon_runs_on_the_cuda_backend(parity):
    r = parity["daemon"]
    assert r["bank"] == "CudaStreamBank" and r["predictions"] == 30 and r["max_dy"] <= 1e-5, r
    assert r["states_match"], r


@pytest.mark.skipif(HAVE_GPU, reason="a GPU is present")
def test_cuda_without_a_gpu_is_a_clear_error_and_auto_falls_back(caplog):
    model = edgelstm.load(MODEL)
    with pytest.raises(BackendError, match="backend='cuda' cannot run here.*backend='cpu'"):
        model.bank(16, backend="cuda")
    with caplog.at_level(logging.INFO, logger="edgelstm.backends"):
        bank = model.bank(16, backend="auto")
    assert type(bank) is edgelstm.StreamBank
    assert [r.message for r in caplog.records if r.name == "edgelstm.backends"] == [
        f"backend auto: CPU ({backends.cuda_unavailable_reason()})"]
    assert bank.step(["a"], np.zeros((1, 3), np.float32)).shape == (1, 3)
    with pytest.raises(BackendError, match="one of"):
        model.bank(16, backend="tpu")
    cfg = DaemonConfig(model=str(MODEL), serial=SerialConfig(port="/dev/null"), backend="cuda").validate()
    with pytest.raises(BackendError, match="cannot run here"):
        Daemon(cfg)


def test_auto_uses_the_recorded_crossover(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGELSTM_CROSSOVER_FILE", str(tmp_path / "crossover.json"))
    assert backends.crossover() == backends.DEFAULT_CROSSOVER
    (tmp_path / "crossover.json").write_text(json.dumps({"streams_x_hidden": 4096}))
    assert backends.crossover() == 4096


@pytest.mark.skipif(HAVE_GPU, reason="a GPU is present")
def test_bench_command_times_the_cpu_without_a_gpu(capsys):
    from edgelstm.cli import main
    assert main(["bench", "--streams", "1,4"]) == 0
    out = capsys.readouterr().out
    assert "timing the CPU only" in out and "CPU steps/s" in out
    assert len([line for line in out.splitlines() if line.split()[:1] in (["1"], ["4"])]) == 2
