"""Which daemon owns an MQTT client id: two daemons configured with one id would take the
broker session from each other in a loop (Mosquitto closes the older connection without
telling it why). Each daemon announces itself on a retained topic beside its status topic;
the one started last keeps the session, and an older one that finds a newer announcement
steps back instead of reconnecting."""

from __future__ import annotations

import json
import os
import socket
import time
import uuid


class Presence:
    def __init__(self, status_topic: str):
        self.topic = f"{status_topic}/instance"
        self.me = {"instance": uuid.uuid4().hex, "started": time.time(), "pid": os.getpid(),
                   "host": socket.gethostname()}

    def announcement(self) -> bytes:
        return json.dumps(self.me).encode()

    def newer_than_me(self, payload: bytes) -> dict | None:
        """The other daemon's announcement when it started after this one, else None (ours, an
        older one, an empty or unreadable message)."""
        try:
            other = json.loads(payload)
            key = (float(other["started"]), str(other["instance"]))
        except (ValueError, TypeError, KeyError, RecursionError):
            return None
        if key[1] == self.me["instance"] or key <= (self.me["started"], self.me["instance"]):
            return None
        return other
