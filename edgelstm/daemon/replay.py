"""Recent predictions per stream, so a reading sent again gets its first answer again.

A broker killed with SIGKILL can lose messages it had already acknowledged (Mosquitto saves
its database after it sends PUBACK). A publisher that needs every answer therefore re-sends
readings whose prediction never arrived. The state must not step twice, yet the answer was
perhaps the message the broker lost: so a duplicate reading within the last `window` of its
stream is answered from here, marked as a replay, and the state is left alone.
"""

from __future__ import annotations

import collections

import numpy as np


class ReplayCache:
    def __init__(self, window: int):
        self.window = window
        self._by_stream: dict[str, collections.OrderedDict] = {}   # stream -> seq -> (t_in, y)

    def remember(self, stream: str, seq: int, t_in: float, y: np.ndarray) -> None:
        if not self.window:
            return
        recent = self._by_stream.setdefault(stream, collections.OrderedDict())
        recent[seq] = (t_in, y.copy())          # y: (n_outputs,), a row of the batch's output
        if len(recent) > self.window:
            recent.popitem(last=False)

    def lookup(self, stream: str, seq: int) -> tuple[float, np.ndarray] | None:
        recent = self._by_stream.get(stream)
        return recent.get(seq) if recent is not None else None

    def forget(self, stream: str) -> None:
        """A stream that rebooted (its seqs start over) or was evicted."""
        self._by_stream.pop(stream, None)

    def clear(self) -> None:
        """The model changed: earlier answers are not this model's."""
        self._by_stream.clear()
