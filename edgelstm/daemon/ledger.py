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
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from . import checkpoint
from .messages import Origin

if TYPE_CHECKING:
    from .outputs import Outputs

log = logging.getLogger(__name__)
RETRY_S = 1.0


@dataclass
class Window:
    acks: list[Origin]                  # in arrival order, as MQTT requires
    mark: int                           # predictions published before the window closed
    snapshot: checkpoint.Checkpoint


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

    def handled(self, origin: Origin) -> None:
        """The message was stepped or counted: acknowledge it when its window commits."""
        if origin.ack_id is not None:
            self.pending.append(origin)

    def changed(self) -> None:
        self.dirty = True

    def tick(self, now: float, snapshot: Callable[[], checkpoint.Checkpoint], outputs: Outputs) -> None:
        """outputs.published(): predictions handed out so far; outputs.confirmed(mark): all of
        the first `mark` confirmed by the broker; outputs.congested(): predictions wait for the
        broker, so step-mode acks wait too (the broker then stops at receive_maximum)."""
        if self.mode == "step":
            if not outputs.congested():
                self._send(self.pending)
                self.pending = []
            if self.path and self.dirty and now - self._last >= self.interval_s and now >= self._retry_at:
                if self._write(snapshot(), now):
                    self.dirty = False
                    self._last = now
            return
        if self.closing is None and now - self._last >= self.interval_s and (self.pending or self.dirty):
            self.closing = Window(self.pending, outputs.published(), snapshot())
            self.pending = []
            self.dirty = False
            self._last = now
        if self.closing is not None and outputs.confirmed(self.closing.mark) and now >= self._retry_at:
            if self._write(self.closing.snapshot, now):
                self._send(self.closing.acks)
                self.closing = None

    def commit_all(self, snapshot: checkpoint.Checkpoint, confirmed: bool) -> bool:
        """Shutdown: one last commit covering every open window. False when it could not be
        made (predictions unconfirmed, or the write failed): nothing is acknowledged then,
        and the broker delivers those readings again after a restart."""
        acks = (self.closing.acks if self.closing is not None else []) + self.pending
        self.closing = None
        self.pending = []
        if not confirmed and self.mode == "checkpoint":
            return False
        written = not self.path or self._write(snapshot, 0.0)
        if not written and self.mode == "checkpoint":
            return False
        self._send(acks)
        return True

    def unacknowledged(self) -> int:
        return len(self.pending) + (len(self.closing.acks) if self.closing is not None else 0)

    def _write(self, snapshot: checkpoint.Checkpoint, now: float) -> bool:
        try:
            self._save(self.path, snapshot)
        except OSError as exc:
            self._on_failure()
            self._retry_at = now + RETRY_S
            if not self._failing:
                log.error("checkpoint %s cannot be written (%s): %s; retrying every %.0f s. Free space or fix the "
                          "directory's permissions", self.path, exc.strerror or exc,
                          "readings stay unacknowledged until it succeeds" if self.mode == "checkpoint"
                          else "state since the last good write would be lost in a crash", RETRY_S)
            self._failing = True
            return False
        if self._failing:
            log.info("checkpoint %s written again", self.path)
        self._failing = False
        return True

    @staticmethod
    def _send(acks: list[Origin]) -> None:
        for origin in acks:
            origin.link.ack(origin)
