"""What the links hand the daemon: frozen messages that carry their origin.

Every message ends as a prediction or a counted rejection, and its origin's acknowledgement
is sent once the ledger says so (daemon/ledger.py). A message is never changed after it is
made: the reorder buffer keeps its own record of when it took one (sequencer.Held).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Union

from ..protocol.payload import Hello, Reading

if TYPE_CHECKING:
    from ..transports.base import Link


@dataclass(frozen=True, slots=True)
class Origin:
    link: Link                  # where the message came from: its ack and any reply go back there
    ack_id: int | None          # the link's id to acknowledge (an MQTT packet id); None: nothing to ack
    reply_to: int | None        # serial frames: the board's stream number, for a PREDICTION reply
    in_order: bool              # the link neither reorders nor redelivers (serial): seq 0 again = reboot
    t_recv: float               # wall clock at receipt: end-to-end latency is measured from it


@dataclass(frozen=True, slots=True)
class ReadingMsg:
    stream: str
    reading: Reading
    origin: Origin


@dataclass(frozen=True, slots=True)
class HelloMsg:
    """A board announced itself after a boot (serial HELLO frame)."""

    stream: str
    hello: Hello
    origin: Origin


@dataclass(frozen=True, slots=True)
class ResetMsg:
    """The sender asks to forget the stream's state (serial RESET frame)."""

    stream: str
    origin: Origin


@dataclass(frozen=True, slots=True)
class RejectedMsg:
    """Something that could not be decoded: counted under `reason`, acknowledged, never retried."""

    reason: str
    origin: Origin


Message = Union[ReadingMsg, HelloMsg, ResetMsg, RejectedMsg]
