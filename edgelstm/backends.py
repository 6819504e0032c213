"""Where a StreamBank computes: "cpu" (Numba), "cuda" (numba-cuda, weights and every stream's
state resident on the GPU), or "auto", which picks from a measured crossover.

The crossover is the smallest streams x hidden size at which the GPU stepped more streams per
second than the CPU; `edgelstm bench` measures it on the device and records it in
crossover.json in the cache directory. Until then "auto" uses DEFAULT_CROSSOVER.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from .engine import Model, StreamBank
from .errors import BackendError, InputError, NumericalError
from .kernels.cache import cache_dir

log = logging.getLogger(__name__)
BACKENDS = ("cpu", "cuda", "auto")
# measured: an H100 passed the CPU kernel from 64 streams of hidden 64 on (benchmarks/README.md)
DEFAULT_CROSSOVER = 64 * 64


def cuda_unavailable_reason() -> str | None:
    """None when a CUDA GPU can be used (or the simulator is on), else why not."""
    try:
        from numba import cuda
    except ImportError as exc:                                   # pragma: no cover - numba ships it
        return f"numba's CUDA target is missing ({exc}); pip install 'edgelstm[cuda]'"
    try:
        if cuda.is_available():
            return None
        return "no usable CUDA GPU or driver was found (numba.cuda.is_available() is False)"
    except Exception as exc:                                     # the driver can fail in many ways
        return f"CUDA failed to initialise: {exc}"


def crossover_path() -> Path:
    return Path(os.environ.get("EDGELSTM_CROSSOVER_FILE") or Path(cache_dir()).parent / "crossover.json")


def crossover() -> int:
    """streams x hidden above which the GPU wins: the recorded measurement, else the default."""
    try:
        return int(json.loads(crossover_path().read_text())["streams_x_hidden"])
    except (OSError, ValueError, KeyError, TypeError):
        return DEFAULT_CROSSOVER


def make_bank(model: Model, capacity: int, backend: str = "cpu", products: bool = True) -> StreamBank:
    if backend not in BACKENDS:
        raise BackendError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "cpu":
        return StreamBank(model, capacity, products)
    reason = cuda_unavailable_reason()
    lacks = model.spec.beyond_classic()
    if lacks and backend == "cuda":
        raise BackendError(f"backend='cuda' cannot run this model: the CUDA kernel lacks {lacks}. "
                           f"Use backend='cpu', which runs every layer")
    if lacks:
        log.info("backend auto: CPU (the CUDA kernel lacks %s)", lacks)
        return StreamBank(model, capacity, products)
    if backend == "cuda":
        if reason:
            raise BackendError(f"backend='cuda' cannot run here: {reason}. Use backend='cpu' (or 'auto', "
                               "which falls back to the CPU); on a Jetson see the README's support matrix")
        return CudaStreamBank(model, capacity)
    widest = max(layer.hidden_size for layer in model.spec.layers)
    if reason:
        log.info("backend auto: CPU (%s)", reason)
        return StreamBank(model, capacity, products)
    if capacity * widest < crossover():
        log.info("backend auto: CPU (%d streams x hidden %d is below the GPU crossover %d)",
                 capacity, widest, crossover())
        return StreamBank(model, capacity, products)
    log.info("backend auto: CUDA (%d streams x hidden %d >= crossover %d)", capacity, widest, crossover())
    return CudaStreamBank(model, capacity)


class CudaStreamBank(StreamBank):
    """A StreamBank whose weights and states live on the GPU. One kernel launch per step call
    covers every layer; inputs and outputs go through mapped (zero-copy) host memory."""

    def __init__(self, model: Model, capacity: int):
        from numba import cuda

        from .kernels import cuda as kernels
        super().__init__(model, capacity)
        self._kernels, self._cuda = kernels, cuda
        self._cu_stream = cuda.stream()
        self._shape = kernels.block_shape(max(layer.hidden_size for layer in model.spec.layers))
        self._d_params = cuda.to_device(kernels.device_params(model.params, model.meta))
        self._d_meta = cuda.to_device(model.meta)
        self._d_state = cuda.to_device(np.zeros((model.state_size, capacity), np.float32))   # (S, N)
        self._d_work = cuda.device_array((model.new_work().shape[1], capacity), np.float32)  # (W, N)
        # I/O through mapped host memory: the kernel reads X and writes Y in place, no copies
        # (on a Jetson the GPU shares the CPU's memory; on a PC it reads over PCIe once).
        self._x = cuda.mapped_array((capacity, model.input_size), np.float32)
        self._y = cuda.mapped_array((capacity, model.output_size), np.float32)
        self._slots = cuda.mapped_array(capacity, np.int64)
        self._status_io = cuda.mapped_array(capacity, np.int8)
        del self._state                                      # the host copy is not used

    def step(self, ids, X) -> np.ndarray:
        ids = list(ids)
        X = self.model.check_input(X, len(ids))
        if not np.isfinite(X).all():
            bad = ids[int(np.flatnonzero(~np.isfinite(X).all(axis=1))[0])]
            raise InputError(f"reading for stream {bad!r} holds NaN or Inf; nothing was applied to any stream")
        rows = self.rows_for(ids)
        k, s = len(ids), self._cu_stream
        if k == 0:
            return np.empty((0, self.model.output_size), np.float32)
        self._x[:k], self._slots[:k] = X, rows
        self._kernels.launch(self._d_params, self._d_meta, self._d_state, self._slots, self._x, self._y,
                             self._d_work, self._status_io, k, self._shape, stream=s)
        s.synchronize()
        Y = self._y[:k].copy()
        failed = [ids[i] for i in np.flatnonzero(self._status_io[:k] != self._kernels.STATUS_OK)]
        if failed:
            err = NumericalError(f"streams {failed!r} produced NaN/Inf; their state is unchanged, "
                                 f"the other streams were stepped")
            err.outputs, err.failed_ids = Y, failed
            raise err
        return Y

    def _read_row(self, row: int) -> np.ndarray:
        n = self.model.state_size
        d_col = self._cuda.device_array(n, np.float32)
        self._kernels.read_slot[(n + 127) // 128, 128](self._d_state, row, d_col)
        return d_col.copy_to_host()

    def _read_rows(self, rows: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(self._d_state.copy_to_host()[:, rows].T)     # one transfer: (S, N) -> (k, S)

    def _write_row(self, row: int, values: np.ndarray | None) -> None:
        n = self.model.state_size
        col = np.zeros(n, np.float32) if values is None else np.ascontiguousarray(values, np.float32)
        self._kernels.write_slot[(n + 127) // 128, 128](self._d_state, row, self._cuda.to_device(col))


__all__ = ["BACKENDS", "CudaStreamBank", "crossover", "cuda_unavailable_reason", "make_bank"]


def measure(model: Model, counts, backends=("cpu", "cuda"), repeats: int = 5, min_time_s: float = 0.05,
            progress=None) -> list[dict]:
    """Stream-steps per second of bank.step for each stream count and backend (median of
    `repeats` timings of at least `min_time_s` each)."""
    import statistics
    import time
    rows, rng = [], np.random.default_rng(0)
    for n in counts:
        row = {"streams": int(n)}
        X = rng.normal(size=(n, model.input_size)).astype(np.float32)
        ids = list(range(n))
        for backend in backends:
            if progress:
                progress(f"{backend}: {n} streams")
            bank = make_bank(model, n, backend)
            for _ in range(3):
                bank.step(ids, X)
            times = []
            for _ in range(repeats):
                calls, t0 = 0, time.perf_counter()
                while True:
                    bank.step(ids, X)
                    calls += 1
                    elapsed = time.perf_counter() - t0
                    if elapsed >= min_time_s:
                        break
                times.append(elapsed / calls)
            row[backend] = n / statistics.median(times)
        rows.append(row)
    return rows


def find_crossover(rows: list[dict], hidden: int) -> int | None:
    """streams x hidden of the first count from which the GPU stays ahead of the CPU."""
    for k, row in enumerate(rows):
        if all(r["cuda"] > r["cpu"] for r in rows[k:]):
            return row["streams"] * hidden
    return None


def record_crossover(value: int, details: dict) -> Path:
    path = crossover_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"streams_x_hidden": value, **details}, indent=2))
    return path
