"""When readings are acknowledged, and when state is written: the daemon's commit protocol.

ack = "step": a reading is acknowledged once it was stepped or counted; the checkpoint (if
any) is written every checkpoint_interval_s.

ack = "checkpoint": a commit window closes every commit_interval_s. Its readings' acks, a
mark of the predictions published so far and a snapshot of the state they led to are set
aside, and intake goes on. Once the broker confirmed those predictions, the snapshot is
written and the readings acknowledged. A crash before that makes the broker deliver the
window's readings again, and the older checkpoint re-applies them to the same predictions.

A failed write (disk full, read-only) is logged, counted and retried; the readings stay
unacknowledged meanwhile (the broker keeps them), so nothing is lost or stepped twice.

Writes run on a thread of their own, one at a time: serialising, hashing and fsyncing the
state of thousands of streams must not hold up the loop (see benchmarks/README.md). The loop
only takes the snapshot (what changed since the last one: snapshots.Delta) and later looks
whether the write has finished; the writer applies it to the whole checkpoint it keeps
(snapshots.Image) and writes that.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from . import checkpoint
from .messages import Origin
from .snapshots import Delta, Image

if TYPE_CHECKING:
    from .outputs import Outputs

log = logging.getLogger(__name__)
RETRY_S = 1.0


@dataclass
class Window:
    acks: list[Origin]                  # in arrival order, as MQTT requires
    mark: int                           # predictions published before the window closed
    snapshot: Delta


class Ledger:
    def __init__(self, mode: str, path: str, interval_s: float, save: Callable[[str, checkpoint.Checkpoint], None],
                 on_failure: Callable[[], None]):
        self.mode = mode                # "step" or "checkpoint"
        self.path = path                # "" = no checkpoints
        self.interval_s = interval_s    # commit_interval_s or checkpoint_interval_s, by mode
        self._save = save
        self._on_failure = on_failure   # counts a failed write
        self.pending: list[Origin] = []
        self.closing: Window | None = None
        self.dirty = False              # state changed since the last write
        self._last = 0.0
        self._retry_at = 0.0
        self._failing = False
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="checkpoint") if path else None
        self._write_in_flight: Future | None = None
        self._image = Image()           # the writer thread's (and commit_all's, once it stopped)

    def handled(self, origin: Origin) -> None:
        """The message was stepped or counted: acknowledge it when its window commits."""
        if origin.ack_id is not None:
            self.pending.append(origin)

    def changed(self) -> None:
        self.dirty = True

    def tick(self, now: float, snapshot: Callable[[], Delta], outputs: Outputs) -> None:
        """outputs.published(): predictions handed out so far; outputs.confirmed(mark): all of
        the first `mark` confirmed by the broker; outputs.congested(): predictions wait for the
        broker, so step-mode acks wait too (the broker then stops at receive_maximum)."""
        if self.mode == "step":
            if not outputs.congested():
                self._send(self.pending)
                self.pending = []
            if self.path and (self._write_in_flight is not None or self.dirty and now - self._last >= self.interval_s):
                if self._written(snapshot, now):
                    self._last = now
            return
        if self.closing is None and now - self._last >= self.interval_s and (self.pending or self.dirty):
            self.closing = Window(self.pending, outputs.published(), snapshot())
            self.pending = []
            self.dirty = False
            self._last = now
        if self.closing is not None and outputs.confirmed(self.closing.mark):
            window = self.closing
            if self._written(lambda: window.snapshot, now):
                self._send(window.acks)
                self.closing = None

    def commit_all(self, snapshot: Delta, confirmed: bool) -> bool:
        """Shutdown: one last commit covering every open window. False when it could not be
        made (predictions unconfirmed, or the write failed): nothing is acknowledged then,
        and the broker delivers those readings again after a restart."""
        acks = (self.closing.acks if self.closing is not None else []) + self.pending
        # the open window's changes come first: its delta may not have reached the image yet
        deltas = [self.closing.snapshot, snapshot] if self.closing is not None else [snapshot]
        self.closing = None
        self.pending = []
        self.finish_write()                     # an older snapshot must not land after this one
        if self._writer is not None:
            self._writer.shutdown()
        if not confirmed and self.mode == "checkpoint":
            return False
        written = not self.path or self._write(deltas, 0.0)
        if not written and self.mode == "checkpoint":
            return False
        self._send(acks)
        return True

    def unacknowledged(self) -> int:
        return len(self.pending) + (len(self.closing.acks) if self.closing is not None else 0)

    def finish_write(self, timeout: float | None = None) -> None:
        """Wait for the write in flight, if any (its outcome is taken by the next tick)."""
        if self._write_in_flight is not None:
            self._write_in_flight.exception(timeout)

    def _written(self, snapshot: Callable[[], Delta], now: float) -> bool:
        """Start writing snapshot() unless a write is in flight; True once one has succeeded.
        The snapshot is taken when the write starts, and dirty cleared then."""
        future = self._write_in_flight
        if future is None:
            if now < self._retry_at or self._writer is None:
                return False
            self.dirty = False
            self._write_in_flight = self._writer.submit(self._apply_and_save, snapshot())
            return False
        if not future.done():
            return False
        self._write_in_flight = None
        exc = future.exception()
        if exc is None:
            return self._succeeded()
        if not isinstance(exc, OSError):
            raise exc
        self.dirty = True                       # step mode: the state still needs writing
        self._failed(exc, now)
        return False

    def _apply_and_save(self, delta: Delta) -> None:
        """On the writer thread: the image brought up to `delta`, then written whole. Applying a
        delta again (a retried window) changes nothing."""
        self._image.apply(delta)
        self._save(self.path, self._image.checkpoint())

    def _write(self, deltas: list[Delta], now: float) -> bool:
        """A write on this thread (shutdown), once the writer stopped: deltas in order."""
        try:
            for delta in deltas[:-1]:
                self._image.apply(delta)
            self._apply_and_save(deltas[-1])
        except OSError as exc:
            self._failed(exc, now)
            return False
        return self._succeeded()

    def _failed(self, exc: OSError, now: float) -> None:
        self._on_failure()
        self._retry_at = now + RETRY_S
        if not self._failing:
            log.error("checkpoint %s cannot be written (%s): %s; retrying every %.0f s. Free space or fix the "
                      "directory's permissions", self.path, exc.strerror or exc,
                      "readings stay unacknowledged until it succeeds" if self.mode == "checkpoint"
                      else "state since the last good write would be lost in a crash", RETRY_S)
        self._failing = True

    def _succeeded(self) -> bool:
        if self._failing:
            log.info("checkpoint %s written again", self.path)
        self._failing = False
        return True

    @staticmethod
    def _send(acks: list[Origin]) -> None:
        for origin in acks:
            origin.link.ack(origin)
