"""A status line for long work: one line on a terminal, rewritten in place, and nothing in logs.

    with Progress(sys.stderr, prefix="verify: ") as line:
        for k in range(n):
            line.update("streaming", done=k, total=n)      # at most ten repaints a second

On a terminal (the stream's isatty(), and TERM is not "dumb") each update rewrites the line
after a carriage return; leaving the `with` block (or close()) ends it with a newline, so what
is written next starts on a line of its own. On anything else (a pipe, a file, journald) it
writes nothing at all: results belong on stdout, and a log holds no half-lines. The library
only writes to the stream it is given; the command line makes one on sys.stderr.
"""

from __future__ import annotations

import os
import re
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator

_NUMBER = re.compile(r"\d[\d,.]*")


def is_terminal(stream) -> bool:
    """Whether `stream` is an interactive terminal that understands a carriage return."""
    try:
        tty = bool(stream.isatty())
    except (AttributeError, OSError, ValueError):        # no isatty, or a closed stream
        return False
    return tty and os.environ.get("TERM", "") != "dumb"


class Progress:
    """One status line on `stream` when it is a terminal (see the module docstring).

    An update whose text differs from the line on the screen only in its numbers (a count going
    up) waits out `interval` seconds since the last repaint: it is kept and painted by the next
    update that may, or by close(). Any other text (a new stage), and the first after the line
    was ended, is painted at once.
    prefix: put before every text. clock: injectable for tests.
    """

    def __init__(self, stream, *, prefix: str = "", interval: float = 0.1,
                 clock: Callable[[], float] = time.monotonic):
        self.stream, self.prefix, self.interval, self.clock = stream, prefix, interval, clock
        self.active = is_terminal(stream)
        self._lock = threading.Lock()
        self._shown = 0                  # characters of the line now on the screen, 0 when none is open
        self._pending: str | None = None  # the latest text, when it has not been painted yet
        self._last = -float("inf")       # when the line was last painted
        self._shape = ""                 # its text without the numbers (_shape)

    def update(self, text: str, *, done: int | None = None, total: int | None = None, force: bool = False) -> None:
        """Show `text` (with " done/total (P%)" when both are given): now if it is a new stage or
        force=True, else once `interval` has passed since the last repaint (see the class)."""
        if not self.active:
            return
        if done is not None and total:
            text = f"{text} {done:,}/{total:,} ({100 * done // total}%)"
        with self._lock:
            self._pending = text
            now = self.clock()
            if force or not self._shown or now - self._last >= self.interval or _shape(text) != self._shape:
                self._paint(now)

    def break_line(self) -> None:
        """End the line now on the screen (e.g. before a log record is written); the next
        update starts a new one."""
        with self._lock:
            if self._shown:
                self.stream.write("\n")
                self.stream.flush()
                self._shown = 0

    def close(self, final: str | None = None) -> None:
        """Paint the latest text (or `final` in its place) and end the line with a newline.
        Nothing is written when nothing was shown and no final text is given."""
        if not self.active:
            return
        with self._lock:
            if final is not None:
                self._pending = final
            if self._pending is not None:
                self._paint(self.clock())
            if self._shown:
                self.stream.write("\n")
                self.stream.flush()
                self._shown = 0

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _paint(self, now: float) -> None:
        self._shape = _shape(self._pending or "")
        text = (self.prefix + (self._pending or ""))[:_columns(self.stream) - 1]
        self.stream.write("\r" + text + " " * (self._shown - len(text)))
        self.stream.flush()
        self._shown, self._pending, self._last = max(len(text), 1), None, now


def _shape(text: str) -> str:
    """text with every number (digits, with their separators) as "#": what a count's updates share."""
    return _NUMBER.sub("#", text)


def _columns(stream) -> int:
    """The terminal's width (a longer line would wrap, and a carriage return would not reach its start)."""
    try:
        columns = os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        columns = 0
    return max(columns, 20) if columns else 80          # 0: a terminal that does not say (a bare pty)


@contextmanager
def notice_if_slow(callback: Callable[[str], None] | None, text: str, delay: float = 0.5) -> Iterator[None]:
    """Call callback(text), from a timer thread, if the block is still running after `delay`
    seconds; nothing when it finishes sooner or callback is None. The timer is cancelled and
    joined on the way out, so the callback never runs after the block."""
    if callback is None:
        yield
        return
    timer = threading.Timer(delay, callback, (text,))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        timer.join()
