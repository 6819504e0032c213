"""Consistent Overhead Byte Stuffing (Cheshire & Baker, 1999): removes every 0x00 from a
frame so 0x00 can delimit frames on the wire. Overhead: at most 1 byte per 254, plus 1."""

from __future__ import annotations

from ..errors import CobsError


def encode(data: bytes) -> bytes:
    """COBS-encode `data` (the result holds no 0x00; the caller appends the delimiter).
    Canonical form: a final run of exactly 254 non-zero bytes gets no extra code byte."""
    out = bytearray()
    block = bytearray()
    for i, byte in enumerate(data):
        if byte == 0:
            out.append(len(block) + 1)
            out += block
            block.clear()
        else:
            block.append(byte)
            if len(block) == 254:
                out.append(255)
                out += block
                block.clear()
                if i == len(data) - 1:
                    return bytes(out)
    out.append(len(block) + 1)
    out += block
    return bytes(out)


def decode(data: bytes) -> bytes:
    """Inverse of encode; raises CobsError on a 0x00 inside or a code running past the end."""
    out = bytearray()
    i, n = 0, len(data)
    while i < n:
        code = data[i]
        if code == 0:
            raise CobsError("zero byte inside a COBS frame")
        end = i + code
        if end > n:
            raise CobsError("COBS code runs past the end of the frame")
        block = data[i + 1:end]
        if 0 in block:
            raise CobsError("zero byte inside a COBS frame")
        out += block
        if code != 255 and end < n:
            out.append(0)
        i = end
    return bytes(out)
