"""How the daemon keeps Python's cyclic garbage collector from pausing the loop.

A full collection walks every tracked object: with thousands of streams (their tracks, reorder
buffers, answers, metric series) that is tens of milliseconds during which no reading is
answered, and CPython starts one whenever enough objects have survived younger collections.
So objects that have lived a while are frozen (gc.freeze: out of the collector's reach, still
freed by reference counting when unused): at start-up and after a reload (settle_heap, which
collects everything first), and every FREEZE_EVERY_S (after a young collection, so that no
young garbage is frozen with them). A full collection still runs every FULL_EVERY_S, so that
garbage cycles among frozen objects, if any, do not build up. benchmarks/README.md ("Pauses")
measures the pauses before and after.
"""

from __future__ import annotations

import gc
import logging
import time

log = logging.getLogger(__name__)
FREEZE_EVERY_S = 10.0
FULL_EVERY_S = 3600.0


def settle_heap() -> int:
    """Everything collected, then what is left (numba, llvmlite, the model, the streams) frozen;
    returns how many unreachable objects were found."""
    gc.unfreeze()
    found = gc.collect()
    gc.freeze()
    return found


class HeapKeeper:
    def __init__(self, now: float):
        self._freeze_at = now + FREEZE_EVERY_S
        self._full_at = now + FULL_EVERY_S

    def tick(self, now: float) -> None:
        if now >= self._full_at:
            t0 = time.perf_counter()
            found = settle_heap()
            # garbage cycles that got frozen would show here, growing from one hour to the next
            log.info("hourly full garbage collection: %d unreachable objects in %.0f ms", found,
                     1e3 * (time.perf_counter() - t0))
            self._full_at = now + FULL_EVERY_S
            self._freeze_at = now + FREEZE_EVERY_S
        elif now >= self._freeze_at:
            gc.collect(1)
            gc.freeze()
            self._freeze_at = now + FREEZE_EVERY_S
