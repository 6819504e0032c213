"""The serial link: a board on a UART/USB port, read by the daemon's thread from its selector.

The port is opened exclusively and non-blocking; frames (firmware_bridge/PROTOCOL.md) or text
lines are decoded as they arrive. An unplugged board is reopened with backoff. Replies to the
board go through a bounded writer thread: a board that does not read them blocks that thread
(write_timeout per frame) and loses replies (counted), never the daemon's thread.
"""

from __future__ import annotations

import logging
import queue
import termios
import threading
import time
from typing import Callable

import numpy as np
import serial

from ..daemon.config import SerialConfig
from ..daemon.messages import HelloMsg, Message, Origin, ReadingMsg, RejectedMsg, ResetMsg
from ..errors import Rejected
from ..protocol import frame as framing
from ..protocol import payload
from ..protocol.stream_id import check_stream_id

log = logging.getLogger(__name__)
MAX_LINE = 4096
REPLY_QUEUE = 256                       # PREDICTION frames waiting for a slow board
WRITE_TIMEOUT_S = 0.05
PORT_ERRORS = (serial.SerialException, OSError, termios.error, TypeError, ValueError)


class ReplyWriter:
    """A thread that writes frames to the current port, from a bounded queue."""

    def __init__(self, port: Callable[[], serial.Serial | None]):
        self._port = port
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=REPLY_QUEUE)
        self._thread = threading.Thread(target=self._run, name="serial-replies", daemon=True)
        self._thread.start()

    def put(self, data: bytes) -> bool:
        try:
            self._queue.put_nowait(data)
            return True
        except queue.Full:
            return False

    def stop(self) -> None:
        try:
            self._queue.put(None, timeout=1.0)
        except queue.Full:
            pass
        self._thread.join(timeout=2.0)

    def _run(self) -> None:
        while (data := self._queue.get()) is not None:
            port = self._port()
            if port is None:
                continue
            try:
                port.write(data)
            except (serial.SerialTimeoutException, *PORT_ERRORS):
                pass                            # the board is gone or not reading: the reply is lost


class SerialLink:
    name = "serial"

    def __init__(self, cfg: SerialConfig, n_inputs: int, count: Callable[[str], None]):
        self.cfg = cfg
        self.n_inputs = n_inputs
        self._count = count
        self.decoder = framing.FrameDecoder()
        self._line = bytearray()
        self.port: serial.Serial | None = None
        self.connected = threading.Event()
        self.reconnects = 0
        self._next_attempt = 0.0
        self._delay = cfg.reconnect_min_s
        self._inbox: list[Message] = []
        self._replies = ReplyWriter(lambda: self.port) if cfg.reply else None

    # -- the Link contract ------------------------------------------------------------------------

    def open(self, now: float) -> None:
        self._next_attempt = now
        self.tick(now)

    def selectable(self) -> serial.Serial | None:
        return self.port

    def wants_write(self) -> bool:
        return False

    def pending(self) -> bool:
        return False                            # every read takes what the port holds now

    def write(self) -> None:
        pass

    def flush(self) -> None:
        pass

    def ack(self, origin: Origin) -> None:
        pass                                    # a serial line has no acknowledgements

    def tick(self, now: float) -> None:
        if self.port is not None or now < self._next_attempt:
            return
        try:
            self.port = serial.Serial(self.cfg.port, self.cfg.baud, timeout=0, write_timeout=WRITE_TIMEOUT_S,
                                      exclusive=True)
        except PORT_ERRORS as exc:
            log.warning("serial %s: cannot open (%s); retrying in %.1f s", self.cfg.port, exc, self._delay)
            self._next_attempt = now + self._delay
            self._delay = min(self._delay * 2, self.cfg.reconnect_max_s)
            return
        log.info("serial %s: open at %d baud", self.cfg.port, self.cfg.baud)
        self._delay = self.cfg.reconnect_min_s
        self.connected.set()

    def read(self, now: float, limit: int) -> list[Message]:
        port = self.port
        if port is None:
            return []
        try:
            chunk = port.read(max(1, min(port.in_waiting, 65536)))
        except PORT_ERRORS as exc:
            log.warning("serial %s: link lost (%s); reopening", self.cfg.port, exc)
            self._lost(now)
        else:
            if chunk and self.cfg.mode == "lines":
                self._lines(chunk)
            elif chunk:
                self._frames(chunk)
        inbox = self._inbox
        self._inbox = []
        return inbox

    def reply(self, origin: Origin, seq: int, y: np.ndarray) -> bool:
        if self._replies is None or origin.reply_to is None or self.port is None:
            return False
        return self._replies.put(framing.encode(payload.prediction_frame(origin.reply_to, seq, y)))

    def close(self) -> None:
        if self._replies is not None:
            self._replies.stop()
        self._close_port()

    # -- decoding ---------------------------------------------------------------------------------

    def _origin(self, board_stream: int | None) -> Origin:
        return Origin(self, None, board_stream, True, time.time())

    def _frames(self, chunk: bytes) -> None:
        before = dict(self.decoder.errors)
        for f in self.decoder.feed(chunk):
            self._frame(f)
        self._frame_errors(before)

    def _frame_errors(self, before: dict[str, int]) -> None:
        """One rejection per error the decoder counted since `before`."""
        for reason, n in self.decoder.errors.items():
            for _ in range(n - before.get(reason, 0)):
                self._inbox.append(RejectedMsg(f"frame_{reason}", self._origin(None)))

    def _frame(self, f: framing.Frame) -> None:
        self._decode("frame", self._origin(f.stream), lambda origin: self._frame_message(f, origin))

    def _frame_message(self, f: framing.Frame, origin: Origin) -> Message | None:
        stream = check_stream_id(f"{self.cfg.stream_prefix}{f.stream}")
        if f.type == framing.MsgType.READING:
            return ReadingMsg(stream, payload.decode_frame(f, self.n_inputs), origin)
        if f.type == framing.MsgType.HELLO:
            return HelloMsg(stream, payload.decode_hello(f), origin)
        if f.type == framing.MsgType.RESET:
            return ResetMsg(stream, origin)
        return None                             # PREDICTION and ERROR frames are the host's to send

    def _decode(self, what: str, origin: Origin, decode: Callable[[Origin], Message | None]) -> None:
        """The decoded message, or its rejection, into the inbox: nothing raises out of here."""
        try:
            msg = decode(origin)
        except Rejected as exc:
            msg = RejectedMsg(exc.reason, origin)
        except Exception:                       # a decoder bug: count it, keep reading
            log.exception("serial: decoding a %s failed unexpectedly (counted as bad payload 'internal')", what)
            msg = RejectedMsg("internal", origin)
        if msg is not None:
            self._inbox.append(msg)

    def _lines(self, chunk: bytes) -> None:
        self._line += chunk
        *lines, rest = self._line.split(b"\n")
        self._line = bytearray(rest)
        if len(self._line) > MAX_LINE:
            self._line.clear()
            self._inbox.append(RejectedMsg("oversize", self._origin(None)))
        for line in lines:
            if line.strip():
                self._one_line(bytes(line))

    def _one_line(self, line: bytes) -> None:
        self._decode("line", self._origin(None), lambda origin: self._line_message(line, origin))

    def _line_message(self, line: bytes, origin: Origin) -> Message:
        stream, reading = payload.decode_line(line, self.n_inputs)
        return ReadingMsg(check_stream_id(f"{self.cfg.stream_prefix}{stream}"), reading, origin)

    # -- losing the port --------------------------------------------------------------------------

    def _lost(self, now: float) -> None:
        self._close_port()
        self.reconnects += 1
        self._next_attempt = now + self._delay

    def _close_port(self) -> None:
        port = self.port
        self.port = None
        self.connected.clear()
        before = dict(self.decoder.errors)
        self.decoder.reset()                    # never glue a partial frame to the next one (counted)
        self._frame_errors(before)
        self._line.clear()
        if port is not None:
            try:
                port.close()
            except PORT_ERRORS:
                pass
