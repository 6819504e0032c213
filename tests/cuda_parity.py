"""The CUDA bank against the CPU bank, step by step. Run by tests/test_cuda.py in a subprocess,
under NUMBA_ENABLE_CUDASIM=1 unless a real GPU is there (the simulator must be chosen before
numba starts). Prints one JSON object: {case: {"max_dy": .., "max_dstate": .., ...}}.

    NUMBA_ENABLE_CUDASIM=1 python tests/cuda_parity.py [--steps 200] [--big]
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from specs import SPECS, overflowing_model, random_spec  # noqa: E402

from edgelstm.engine import Model  # noqa: E402
from edgelstm.errors import InputError, NumericalError  # noqa: E402

# (spec name, streams): stream counts that do not divide the block size (8 in the simulator, 128 on a GPU)
CASES = [("lstm", 5), ("gru", 11), ("lstm_proj", 3), ("lstm_deep_odd_sizes", 3), ("mixed_lstm_gru", 5),
         ("gru_nobias", 3)]
BIG = [("lstm", 1000), ("gru", 4099), ("mixed_lstm_gru", 333)]


def run_case(name: str, n_streams: int, steps: int, seed: int = 0) -> dict:
    kw = dict(SPECS[name])
    spec = random_spec(np.random.default_rng(seed), proj=kw.pop("proj", (0,) * len(kw["kinds"])), **kw)
    model = Model(spec)
    cpu, gpu = model.bank(n_streams + 3), model.bank(n_streams + 3, backend="cuda")
    rng = np.random.default_rng(seed + 1)
    ids = [f"s{i}" for i in range(n_streams)]
    max_dy = 0.0
    for step in range(steps):
        # every third step only a random subset of streams has data, in shuffled order
        batch = ids if step % 3 else list(rng.permutation(ids)[: max(1, n_streams // 2)])
        X = rng.normal(size=(len(batch), spec.input_size)).astype(np.float32)
        max_dy = max(max_dy, float(np.abs(cpu.step(batch, X) - gpu.step(batch, X)).max()))
    max_ds = max(float(np.abs(cpu.get_state(i).values - gpu.get_state(i).values).max()) for i in ids)
    # bad input: refused before the launch, nothing applied
    before = gpu.get_state(ids[0]).values
    X = rng.normal(size=(2, spec.input_size)).astype(np.float32)
    X[1, 0] = np.nan
    try:
        gpu.step(ids[:2], X)
        refused = False
    except InputError:
        refused = bool((gpu.get_state(ids[0]).values == before).all())
    # reset, set_state and evict behave as on the CPU
    gpu.reset(ids[0])
    gpu.set_state(ids[1], cpu.get_state(ids[1]))
    gpu.set_state("extra", cpu.get_state(ids[1]))
    gpu.evict("extra")
    state_ops = bool(not gpu.get_state(ids[0]).values.any()
                     and (gpu.get_state(ids[1]).values == cpu.get_state(ids[1]).values).all()
                     and "extra" not in gpu and len(gpu) == n_streams)
    return {"max_dy": max_dy, "max_dstate": max_ds, "bad_input_refused": refused, "state_ops": state_ops,
            "steps": steps, "streams": n_streams}


def overflow_case() -> dict:
    """A stream whose output overflows keeps its state; the others are committed."""
    gpu = overflowing_model().bank(4, backend="cuda")
    gpu.step(["a", "b"], np.zeros((2, 1), np.float32))
    before = gpu.get_state("b").values
    try:
        gpu.step(["a", "b"], np.array([[0.0], [50.0]], np.float32))
        return {"raised": False}
    except NumericalError as exc:
        return {"raised": True, "failed": list(exc.failed_ids),
                "kept": bool((gpu.get_state("b").values == before).all())}


def daemon_case() -> dict:
    """The daemon's pipeline with backend = "cuda" gives the CPU daemon's predictions."""
    from edgelstm.daemon.config import DaemonConfig, SerialConfig
    from edgelstm.daemon.messages import Origin, ReadingMsg
    from edgelstm.daemon.service import Daemon
    from edgelstm.protocol.payload import Reading
    model = Path(__file__).resolve().parents[1] / "edgelstm" / "data" / "activity.elstm"
    xs = np.random.default_rng(3).normal(size=(10, 3)).astype(np.float32)
    got = {}
    for backend in ("cpu", "cuda"):
        cfg = DaemonConfig(model=str(model), serial=SerialConfig(port="/dev/null"), output="stdout",
                           backend=backend).validate()
        out = got.setdefault(backend, {})
        d = Daemon(cfg, sink=lambda stream, seq, t, y, replay, out=out: out.__setitem__((stream, seq), y.copy()))
        for seq, x in enumerate(xs):
            origin = Origin(d.serial, None, None, True, 0.0)
            d.pipeline.handle([ReadingMsg(s, Reading(seq, x + k), origin) for k, s in enumerate(("a", "b", "c"))], 0.0)
    diff = max(float(np.abs(got["cpu"][key] - got["cuda"][key]).max()) for key in got["cpu"])
    bank = d.pipeline.bank                      # the CUDA daemon's: snapshots read all states at once
    one_by_one = np.stack([bank.get_state(s).values for s in ("c", "a")])
    states_match = bool((bank.states(["c", "a"]) == one_by_one).all())
    return {"predictions": len(got["cuda"]), "max_dy": diff, "bank": type(bank).__name__,
            "states_match": states_match}


def main():
    from numba import config
    if config.ENABLE_CUDASIM:
        sys.setswitchinterval(1e-5)     # the simulator's syncthreads polls threads: hand over the GIL fast
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--big", action="store_true", help="also large stream counts (real GPU)")
    args = ap.parse_args()
    out = {f"{name}-{n}": run_case(name, n, args.steps) for name, n in CASES + (BIG if args.big else [])}
    out["overflow"] = overflow_case()
    out["daemon"] = daemon_case()
    from numba import config, cuda
    name = "simulator" if config.ENABLE_CUDASIM else cuda.get_current_device().name
    out["device"] = name.decode() if isinstance(name, bytes) else name
    print(json.dumps(out))


if __name__ == "__main__":
    main()
