"""The serial reader thread: opens the port exclusively, decodes frames (or lines) and hands
readings to the inference thread; survives unplug/replug by reopening with backoff."""

from __future__ import annotations

import logging
import queue
import termios
import threading

import serial

from ..protocol import frame as framing
from ..protocol import payload
from . import Inbound, count_drop

log = logging.getLogger(__name__)
MAX_LINE = 4096


class SerialSource:
    """Reads `cfg.port`; put()s an Inbound per reading (or bad message) into `out`.

    When `out` is full the reading is dropped and counted under `drops` (a serial line cannot
    be paused: blocking would only overflow the OS buffer instead)."""

    def __init__(self, cfg, n_inputs: int, out: queue.Queue, drops: dict):
        self.cfg, self.n_inputs, self.out, self.drops = cfg, n_inputs, out, drops
        self.decoder = framing.FrameDecoder()
        self._line = bytearray()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="serial-reader", daemon=True)
        self.port: serial.Serial | None = None
        self.connected = threading.Event()
        self.reconnects = 0
        self._write_lock = threading.Lock()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        port = self.port
        if port is not None:
            try:
                port.cancel_read()
            except (OSError, serial.SerialException, AttributeError):
                pass
        self._thread.join(timeout=5)

    def _open(self) -> serial.Serial:
        return serial.Serial(self.cfg.port, self.cfg.baud, timeout=0.2, write_timeout=0.05, exclusive=True)

    def send_prediction(self, stream: str, seq: int, y) -> bool:
        """A PREDICTION frame back to the board (called by the inference thread). False when the
        link is down or the board does not read fast enough: the caller counts the drop."""
        port, number = self.port, stream[len(self.cfg.stream_prefix):]
        if port is None or not number.isdigit():
            return False
        data = framing.encode(payload.prediction_frame(int(number), seq, y))
        try:
            with self._write_lock:
                port.write(data)
            return True
        except (serial.SerialException, serial.SerialTimeoutException, OSError, termios.error, TypeError):
            return False

    def _run(self) -> None:
        delay = self.cfg.reconnect_min_s
        while not self._stop.is_set():
            try:
                self.port = self._open()
            except (serial.SerialException, OSError, termios.error, ValueError) as exc:
                log.warning("serial %s: cannot open (%s); retrying in %.1f s", self.cfg.port, exc, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, self.cfg.reconnect_max_s)
                continue
            log.info("serial %s: open at %d baud", self.cfg.port, self.cfg.baud)
            self.connected.set()
            delay = self.cfg.reconnect_min_s
            try:
                self._read_until_error()
            finally:
                self.connected.clear()
                try:
                    self.port.close()
                except (OSError, serial.SerialException, termios.error):
                    pass
                self.port = None
                self.decoder.reset()            # never glue a partial frame to the next one
                self._line.clear()
            if not self._stop.is_set():
                self.reconnects += 1
                log.warning("serial %s: link lost; reopening", self.cfg.port)
                self._stop.wait(delay)

    def _read_until_error(self) -> None:
        while not self._stop.is_set():
            try:
                chunk = self.port.read(max(1, min(self.port.in_waiting, 65536)))
            except (serial.SerialException, OSError, termios.error, TypeError) as exc:
                log.debug("serial read failed: %s", exc)
                return
            if chunk:
                self._handle(chunk)

    def _handle(self, chunk: bytes) -> None:
        if self.cfg.mode == "lines":
            self._handle_lines(chunk)
            return
        before = dict(self.decoder.errors)
        for f in self.decoder.feed(chunk):
            self._handle_frame(f)
        for reason, n in self.decoder.errors.items():
            for _ in range(n - before.get(reason, 0)):
                self._put(Inbound("", None, bad_reason=f"frame_{reason}"))

    def _handle_frame(self, f: framing.Frame) -> None:
        stream = f"{self.cfg.stream_prefix}{f.stream}"
        try:
            if f.type == framing.MsgType.READING:
                self._put(Inbound(stream, payload.decode_frame(f, self.n_inputs), serial=True))
            elif f.type == framing.MsgType.HELLO:
                self._put(Inbound(stream, None, boot=payload.decode_hello(f)))
            elif f.type == framing.MsgType.RESET:
                self._put(Inbound(stream, None, reset=True))
        except payload.PayloadError as exc:
            self._put(Inbound(stream, None, bad_reason=exc.reason))

    def _handle_lines(self, chunk: bytes) -> None:
        self._line += chunk
        *lines, rest = self._line.split(b"\n")
        self._line = bytearray(rest)
        if len(self._line) > MAX_LINE:
            self._line.clear()
            self._put(Inbound("", None, bad_reason="oversize"))
        for line in lines:
            if not line.strip():
                continue
            try:
                stream, reading = payload.decode_line(line, self.n_inputs)
                self._put(Inbound(f"{self.cfg.stream_prefix}{stream}", reading, serial=True))
            except payload.PayloadError as exc:
                self._put(Inbound("", None, bad_reason=exc.reason))

    def _put(self, item: Inbound) -> None:
        try:
            self.out.put_nowait(item)
        except queue.Full:
            count_drop(self.drops, "queue_full")
