import os
import sys
from pathlib import Path

import numpy as np
import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
DATA = TESTS / "data"
sys.path.insert(0, str(TESTS))
# The suite tests numba's kernels (NRT allocation counts, compile paths), also in the processes it
# starts: a prebuilt build in the cache (edgelstm warmup) is not used, except by test_prebuilt.py.
os.environ.setdefault("EDGELSTM_PREBUILT", "0")

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


# Fixtures that start a broker or build the C side: a test using one belongs to the integration tier.
INTEGRATION_FIXTURES = {"broker", "tls_broker", "own_broker", "bridge_bin"}


def pytest_collection_modifyitems(config, items):
    untiered = [item.nodeid for item in items
                if INTEGRATION_FIXTURES & set(item.fixturenames) and item.get_closest_marker("integration") is None]
    if untiered:
        # else `./dev.sh test` would run them in the unit tier, which must need no broker or compiler
        raise pytest.UsageError(f"mark these @pytest.mark.integration (they use {sorted(INTEGRATION_FIXTURES)}): "
                                + ", ".join(untiered))
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
