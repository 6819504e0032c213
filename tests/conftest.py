import sys
from pathlib import Path

import numpy as np
import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
DATA = TESTS / "data"
sys.path.insert(0, str(TESTS))

from bridge_build import bridge_bin  # noqa: E402,F401  (a session fixture: the C side, built once)

try:
    import torch  # noqa: F401
    HAVE_TORCH = True
except ImportError:
    HAVE_TORCH = False


@pytest.fixture(autouse=True)
def no_daemon_outlives_its_test():
    yield
    from daemon_helpers import kill_leftovers
    kill_leftovers()


def pytest_collection_modifyitems(config, items):
    if HAVE_TORCH:
        return
    skip = pytest.mark.skip(reason="needs torch (pip install 'edgelstm[torch]')")
    for item in items:
        if "torch" in item.keywords:
            item.add_marker(skip)


def golden(name: str):
    """(state_dict arrays, x (T, I), y (T, O)) from a committed fixture."""
    with np.load(DATA / f"golden_{name}.npz", allow_pickle=False) as z:
        weights = {k[2:]: z[k] for k in z.files if k.startswith("w/")}
        return weights, z["x"], z["y"]


GOLDEN_NAMES = sorted(p.stem[len("golden_"):] for p in DATA.glob("golden_*.npz"))


@pytest.fixture
def broker(tmp_path):
    """A private Mosquitto on a free loopback port, persistence on (saved every second)."""
    from broker import Broker
    (tmp_path / "broker").mkdir()
    b = Broker(tmp_path / "broker")
    yield b.start()
    b.stop()


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
