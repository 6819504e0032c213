"""Builds the C side (firmware_bridge/tests/Makefile) once per test session into a temp dir."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BRIDGE = ROOT / "firmware_bridge"


def need_cc() -> str:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None or shutil.which("make") is None:
        pytest.fail("the C tests need a C compiler and make: sudo apt-get install build-essential")
    return cc


def make(build: Path, *targets: str) -> subprocess.CompletedProcess:
    need_cc()
    proc = subprocess.run(["make", "-C", str(BRIDGE / "tests"), f"BUILD={build}", *targets],
                          capture_output=True, text=True)
    assert proc.returncode == 0, f"make {' '.join(targets)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="session")
def bridge_bin(tmp_path_factory) -> Path:
    """The directory holding test_bridge, test_bridge_san, decode_tool and virtual_device."""
    build = tmp_path_factory.mktemp("bridge-build")
    make(build, "all")
    return build
