"""I/O threads. They only decode and hand off; the daemon's inference thread owns all state."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable


@dataclass
class Inbound:
    """One message handed from an I/O thread to the inference thread."""

    stream: str
    reading: object | None             # protocol.payload.Reading, or None for a bad payload
    bad_reason: str | None = None      # counter label when the payload was rejected
    ack: Callable[[], None] | None = None   # call once the reading is durably handled (MQTT)
    boot: int | None = None            # a HELLO's boot id (serial), when reading is None
    reset: bool = False                # a RESET frame: forget this stream's state
    serial: bool = False               # from a serial link: no redelivery, so seq 0 means a reboot
    held_at: float = 0.0               # when the reorder buffer took it (monotonic)
    released: bool = False             # it came back out of the reorder buffer
    t_recv: float = field(default_factory=time.time)


def count_drop(drops: dict, reason: str) -> None:
    """Count a message an I/O thread could not hand on; the inference thread moves these
    counts into its metrics (edgelstm_drops_total{reason})."""
    drops[reason] = drops.get(reason, 0) + 1
