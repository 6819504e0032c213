"""The serial frame protocol, version 1 (specified in firmware_bridge/PROTOCOL.md).

Frame before stuffing (little-endian):
  version u8 | type u8 | stream u16 | seq u32 | length u16 | payload[length] | crc32 u32
crc32 is zlib's CRC-32 over everything before it. On the wire: COBS(frame) followed by 0x00.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from enum import IntEnum

from ..errors import FrameError
from . import cobs

VERSION = 1
HEADER = struct.Struct("<BBHIH")           # version, type, stream, seq, length
CRC = struct.Struct("<I")
MAX_PAYLOAD = 1024
MAX_FRAME = HEADER.size + MAX_PAYLOAD + CRC.size
MAX_STUFFED = MAX_FRAME + (MAX_FRAME + 253) // 254   # after COBS: one code byte per 254 (1043)
MAX_ENCODED = MAX_STUFFED + 1                         # plus the 0x00 delimiter (1044)


class MsgType(IntEnum):
    READING = 1       # device -> host: t_ms u32 | float32 x[n]
    PREDICTION = 2    # host -> device: float32 y[n]
    RESET = 3         # either way: forget this stream's state; empty payload
    HELLO = 4         # device -> host at boot: boot_id u32 | protocol u8 | n_inputs u8
    ERROR = 5         # either way: code u16 | UTF-8 text


@dataclass(frozen=True)
class Frame:
    type: int
    stream: int
    seq: int
    payload: bytes = b""
    version: int = VERSION


def encode(frame: Frame) -> bytes:
    """The frame as it goes on the wire: COBS-stuffed and 0x00-terminated."""
    if len(frame.payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(frame.payload)} bytes exceeds {MAX_PAYLOAD}")
    body = HEADER.pack(frame.version, frame.type, frame.stream, frame.seq & 0xFFFFFFFF, len(frame.payload))
    body += frame.payload
    return cobs.encode(body + CRC.pack(zlib.crc32(body))) + b"\x00"


def decode(stuffed: bytes) -> Frame:
    """One frame from its COBS bytes (without the 0x00 delimiter); raises FrameError."""
    if len(stuffed) > MAX_STUFFED:
        raise FrameError("oversize", f"{len(stuffed)} bytes")
    try:
        raw = cobs.decode(stuffed)
    except cobs.CobsError as exc:         # re-raised as a FrameError, the one type decode() raises
        raise FrameError(exc.reason, str(exc).removeprefix(f"{exc.reason}: ")) from None
    if len(raw) < HEADER.size + CRC.size:
        raise FrameError("short", f"{len(raw)} bytes")
    body, (crc,) = raw[:-CRC.size], CRC.unpack(raw[-CRC.size:])
    if zlib.crc32(body) != crc:
        raise FrameError("crc", "checksum mismatch")
    version, mtype, stream, seq, length = HEADER.unpack_from(body)
    if version != VERSION:
        raise FrameError("version", f"protocol version {version}, this host speaks {VERSION}")
    if length != len(body) - HEADER.size:
        raise FrameError("length", f"header says {length} payload bytes, frame has {len(body) - HEADER.size}")
    if mtype not in MsgType._value2member_map_:
        raise FrameError("type", f"unknown message type {mtype}")
    return Frame(mtype, stream, seq, bytes(body[HEADER.size:]), version)


@dataclass
class FrameDecoder:
    """Turns arbitrary chunks of a byte stream into frames.

    Bytes are buffered up to each 0x00; a buffer longer than any valid frame is discarded
    (counted as oversize) and decoding resumes after the next 0x00, so garbage or a frame
    cut off by an unplug is never glued onto the next one. Call reset() after reconnecting.
    """

    errors: dict = field(default_factory=dict)      # reason -> count
    frames: int = 0
    _buf: bytearray = field(default_factory=bytearray)
    _skipping: bool = False

    def feed(self, chunk: bytes) -> list[Frame]:
        out: list[Frame] = []
        start = 0
        while True:
            end = chunk.find(b"\x00", start)
            if end < 0:
                self._append(chunk[start:])
                return out
            self._append(chunk[start:end])
            if self._skipping:
                self._skipping = False
            elif self._buf:
                try:
                    out.append(decode(bytes(self._buf)))
                    self.frames += 1
                except FrameError as exc:
                    self.errors[exc.reason] = self.errors.get(exc.reason, 0) + 1
            self._buf.clear()
            start = end + 1

    def _append(self, data: bytes) -> None:
        if self._skipping:
            return
        self._buf += data
        if len(self._buf) > MAX_STUFFED:
            self.errors["oversize"] = self.errors.get("oversize", 0) + 1
            self._buf.clear()
            self._skipping = True

    def reset(self) -> None:
        """Drop any partial frame (after a reconnect: the next bytes start a new stream)."""
        if self._buf:
            self.errors["partial"] = self.errors.get("partial", 0) + 1
        self._buf.clear()
        self._skipping = False    # a cut-off tail that follows fails its CRC and is counted
