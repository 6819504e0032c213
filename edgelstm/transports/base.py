"""The contract between the daemon and its links (MQTT, serial).

The daemon's one thread drives every link: it waits on the links' file descriptors in one
selector, calls `read` when one is readable, `write` when one waits to write, and `flush` after each batch. A link never
blocks that thread: what can block (a board that does not read its replies) runs in a
bounded helper thread of the link's own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from ..daemon.messages import Message, Origin


class Link(Protocol):
    name: str

    def open(self, now: float) -> None:
        """Start connecting; never blocks (a link reconnects by itself from `tick`)."""

    def selectable(self) -> Any:
        """What to watch for input (an object with fileno()), or None while not connected. A new
        object after a reconnect, even if the descriptor number is the same."""

    def wants_write(self) -> bool:
        """Output is waiting for the descriptor to become writable."""

    def pending(self) -> bool:
        """Input was already taken off the descriptor (a read-ahead buffer) and waits to be
        decoded: the selector cannot see it, so `read` is called without waiting."""

    def read(self, now: float, limit: int) -> list[Message]:
        """Decode what arrived, at most about `limit` messages; never raises for bad input."""

    def write(self) -> None:
        """The descriptor became writable."""

    def tick(self, now: float) -> None:
        """Housekeeping: reconnect with backoff, keepalive."""

    def ack(self, origin: Origin) -> None:
        """Acknowledge a message that came from this link (a no-op where there are no acks)."""

    def reply(self, origin: Origin, seq: int, y: np.ndarray) -> bool:
        """Send a prediction back to where the reading came from; False: dropped (counted by the caller)."""

    def flush(self) -> None:
        """Push out what the batch queued (acks, publishes) in as few writes as possible."""

    def close(self) -> None:
        """Stop: say goodbye where the protocol has a way to, release the descriptor."""
