"""Stream ids, checked before they name anything.

A stream id is substituted into the MQTT output topic 'sensors/{stream}/prediction', so it must
be one topic level: '+' and '#' are wildcards and NUL is illegal in a topic name (a broker drops
the connection of a client that publishes one), and '/' would add levels. Control characters
are refused too (MQTT says topic names should not hold them, and they garble logs). Each id gets
its own state, so its length is bounded: an unbounded id would let one sender grow memory.
"""

from __future__ import annotations

import re

from ..errors import PayloadError

MAX_STREAM_ID_BYTES = 128                           # in UTF-8
# Topic wildcards, the level separator, C0 and C1 controls, DEL, and the Unicode non-characters
# (U+FDD0..U+FDEF and the last two code points of every plane): MQTT says topic names should not
# hold them, and Mosquitto closes the connection of a client that publishes one.
_NONCHARACTERS = "".join(f"{chr(plane * 0x10000 + 0xFFFE)}{chr(plane * 0x10000 + 0xFFFF)}" for plane in range(17))
_FORBIDDEN = re.compile(f"[\x00-\x1f\x7f-\x9f+#/\ufdd0-\ufdef{_NONCHARACTERS}]")


def utf8_size(text: str, field: str, what: str) -> int:
    """Bytes of `text` in UTF-8; PayloadError(field) naming `what` if it holds a lone surrogate
    (which JSON's \\ud800 escapes can spell)."""
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise PayloadError(field, f"{what} holds a lone surrogate (not encodable as UTF-8)") from None


def check_stream_id(stream: str) -> str:
    """`stream` itself when it can name a stream; else raises PayloadError("stream", ...)."""
    if not isinstance(stream, str):
        raise PayloadError("stream", f"a stream id must be a string, got {type(stream).__name__}")
    if not stream:
        raise PayloadError("stream", "empty stream id")
    size = utf8_size(stream, "stream", "stream id")
    if size > MAX_STREAM_ID_BYTES:
        raise PayloadError("stream", f"stream id of {size} bytes, at most {MAX_STREAM_ID_BYTES}")
    bad = _FORBIDDEN.search(stream)
    if bad:
        raise PayloadError("stream", f"stream id holds {bad.group()!r} ('+', '#', '/', controls and Unicode "
                                    "non-characters are refused)")
    return stream
