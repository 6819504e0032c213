"""One selector over every link's current descriptor and a wake-up pipe: how the daemon
(daemon/service.py) and the recorder (recording/recorder.py) wait for input on one thread.

Signal handlers and other threads call wake(), which only writes a byte to the pipe, so a
wait in gather() ends at once; everything else happens on the thread that calls gather().
"""

from __future__ import annotations

import os
import selectors
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from ..daemon.messages import Message
    from .base import Link


class LinkSelector:
    def __init__(self, links: list[Link]):
        self.links = links
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._watched: dict[int, tuple[object, int, int]] = {}     # link index -> (object, fd, events)

    def wake(self) -> None:
        """End a wait in gather() now; safe from a signal handler or another thread."""
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):
            pass                                # already awake, or closed after the loop ended

    def watch(self) -> None:
        """Keep the selector on each link's current descriptor. Links reconnect, and a new
        descriptor may reuse a closed one's number: registrations are by number, remembered
        with the object they were made for."""
        for i, link in enumerate(self.links):
            obj = link.selectable()
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if obj is not None and link.wants_write() else 0)
            old = self._watched.get(i)
            if old is not None and old[0] is obj and old[2] == events:
                continue
            if old is not None:
                self._selector.unregister(old[1])   # epoll forgets closed descriptors by itself
                del self._watched[i]
            if obj is not None:
                fd = obj.fileno()
                self._selector.register(fd, events, i)
                self._watched[i] = (obj, fd, events)

    def gather(self, wait_s: float, limit: int, clock: Callable[[], float]) -> list[Message]:
        """What the links decoded, in their order; waits up to `wait_s` for input (not at all when
        a link already holds some), at most about `limit` messages per link."""
        waiting = [i for i, link in enumerate(self.links) if link.pending()]
        ready = {i: selectors.EVENT_READ for i in waiting}
        for key, events in self._selector.select(0 if waiting else wait_s):
            if key.data is None:
                self._drain_wake_pipe()
            else:
                ready[key.data] = ready.get(key.data, 0) | events
        messages: list[Message] = []
        for i, events in ready.items():
            link = self.links[i]
            if events & selectors.EVENT_WRITE:
                link.write()
            if events & selectors.EVENT_READ:
                messages += link.read(clock(), limit)
        return messages

    def _drain_wake_pipe(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        self._selector.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
