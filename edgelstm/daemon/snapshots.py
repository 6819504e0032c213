"""The checkpoint between writes, kept up to date from what changed.

At each commit the loop hands the checkpoint writer only the streams touched since the previous
commit (a Delta: their positions and states, copied, and the streams gone); the writer keeps
every stream's last position and state (an Image) and writes it whole. So a commit costs the
loop time in proportion to the readings since the last one, not to the number of streams:
thousands of idle streams cost it nothing on the CPU bank (the CUDA bank still copies its whole
device state at each commit). benchmarks/README.md measures it.

The Image is the writer's alone: it is changed and read on the writer thread (or, at
shutdown, after the writer stopped), one delta at a time, in order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .checkpoint import POSITION, Checkpoint


@dataclass(frozen=True)
class Delta:
    model_hash: str
    state_size: int
    ids: list[str]                     # streams to write (new, or changed since the last delta)
    positions: np.ndarray              # (len(ids),) POSITION, "seen" on the loop's monotonic clock
    states: np.ndarray                 # (len(ids), S) float32, a copy
    now: float                         # the loop's monotonic clock when the delta was taken ...
    wall: float                        # ... and the wall clock then: "seen" is written as wall time
    removed: list[str] = field(default_factory=list)   # streams the checkpoint no longer holds
    full: bool = False                 # ids are every stream: the image is replaced


class Image:
    """Every checkpointed stream's last position and state, in rows; `checkpoint()` views them."""

    def __init__(self) -> None:
        self._clear("", 0)

    def _clear(self, model_hash: str, state_size: int) -> None:
        self.model_hash, self.state_size = model_hash, state_size
        self._row: dict[str, int] = {}
        self._ids: list[str] = []
        self._positions = np.zeros(0, POSITION)
        self._states = np.zeros((0, state_size), np.float32)
        self._clocks = (0.0, 0.0)                         # the latest delta's (now, wall)

    def __len__(self) -> int:
        return len(self._ids)

    def apply(self, delta: Delta) -> None:
        if delta.full:
            self._clear(delta.model_hash, delta.state_size)
        elif (delta.model_hash, delta.state_size) != (self.model_hash, self.state_size):
            raise ValueError("a partial delta of another model: after a model swap the next delta must be full")
        for stream in delta.removed:
            self._remove(stream)
        rows = np.fromiter(map(self._row_for, delta.ids), np.int64, len(delta.ids))
        self._positions[rows] = delta.positions
        self._states[rows] = delta.states
        self._clocks = delta.now, delta.wall

    def checkpoint(self) -> Checkpoint:
        """The image as a Checkpoint, "seen" as wall time by the latest delta's clocks (so a
        wall clock stepped since an idle stream's last delta, NTP on a board without an RTC,
        does not age it); the states are a view, valid until the next apply()."""
        n = len(self._ids)
        now, wall = self._clocks
        positions = self._positions[:n].copy()
        positions["seen"] = wall - (now - positions["seen"])
        return Checkpoint(self.model_hash, self.state_size, list(self._ids), positions, self._states[:n])

    def _row_for(self, stream: str) -> int:
        row = self._row.get(stream)
        if row is None:
            row = self._row[stream] = len(self._ids)
            self._ids.append(stream)
            if row >= len(self._positions):
                self._grow(max(64, 2 * len(self._positions)))
        return row

    def _grow(self, rows: int) -> None:
        positions, states = np.zeros(rows, POSITION), np.zeros((rows, self.state_size), np.float32)
        n = len(self._positions)
        positions[:n], states[:n] = self._positions, self._states
        self._positions, self._states = positions, states

    def _remove(self, stream: str) -> None:
        """The last row moves into the freed one: rows stay dense."""
        row = self._row.pop(stream, None)
        if row is None:
            return
        last = len(self._ids) - 1
        if row != last:
            moved = self._ids[last]
            self._ids[row], self._row[moved] = moved, row
            self._positions[row], self._states[row] = self._positions[last], self._states[last]
        self._ids.pop()
