"""Readings in, predictions out: the payload formats of MQTT messages, serial frames and
serial text lines. Decoders raise PayloadError with a short `reason` used as a counter label.

MQTT reading payloads (README "Payloads"):
  JSON    {"seq": 17, "t": 1763800000.25, "x": [0.1, 0.2, 0.3], "boot": 7}   (t, boot optional)
  binary  0xB1 | flags u8 | boot u16 | seq u32 | t f64 | x float32[n], little-endian
Serial line mode, one reading per line:  JSON as above plus "stream", or CSV "stream,seq,x0,x1,..."
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii

import numpy as np

from .frame import Frame, MsgType

BINARY_MAGIC = 0xB1
BINARY_HEADER = struct.Struct("<BBHId")          # magic, flags, boot, seq, t
READING_T = struct.Struct("<I")                  # serial READING payload: device time in ms
HELLO = struct.Struct("<IBB")                    # boot id, protocol version, inputs
MAX_JSON_BYTES = 64 * 1024


class PayloadError(ValueError):
    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True)
class Reading:
    """One sensor reading, decoded. `x` is float32; finiteness is checked by the daemon."""

    seq: int
    x: np.ndarray
    t: float | None = None          # sender's unix time in seconds, if it sent one
    boot: int | None = None         # sender's boot id, if it sent one


def decode_mqtt(payload: bytes, n_inputs: int) -> Reading:
    """A reading from an MQTT payload, JSON or binary (told apart by the first byte)."""
    if payload[:1] == bytes([BINARY_MAGIC]):
        return decode_binary(payload, n_inputs)
    return decode_json(payload, n_inputs)


def decode_binary(payload: bytes, n_inputs: int) -> Reading:
    want = BINARY_HEADER.size + 4 * n_inputs
    if len(payload) != want:
        raise PayloadError("length", f"binary reading of {len(payload)} bytes, expected {want}")
    _, flags, boot, seq, t = BINARY_HEADER.unpack_from(payload)
    x = np.frombuffer(payload, "<f4", n_inputs, BINARY_HEADER.size).astype(np.float32)
    return Reading(seq, x, t if math.isfinite(t) and t > 0 else None, boot if flags & 1 else None)


def encode_binary(seq: int, x, t: float = 0.0, boot: int | None = None) -> bytes:
    flags = 1 if boot is not None else 0
    head = BINARY_HEADER.pack(BINARY_MAGIC, flags, boot or 0, seq & 0xFFFFFFFF, t)
    return head + np.asarray(x, "<f4").tobytes()


def _reading_from_obj(obj, n_inputs: int) -> Reading:
    if not isinstance(obj, dict):
        raise PayloadError("json", "expected a JSON object")
    seq, x, t, boot = obj.get("seq"), obj.get("x"), obj.get("t"), obj.get("boot")
    if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq < 2**63:
        raise PayloadError("seq", f"'seq' must be a non-negative integer, got {seq!r:.40}")
    if not isinstance(x, list) or len(x) != n_inputs:
        raise PayloadError("length", f"'x' must be a list of {n_inputs} numbers")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in x):
        raise PayloadError("value", "'x' holds something other than numbers")
    if t is not None and not (isinstance(t, (int, float)) and math.isfinite(t)):
        raise PayloadError("time", "'t' must be a finite number of seconds")
    return Reading(seq, np.array(x, np.float32), float(t) if t is not None else None,
                   boot if isinstance(boot, int) else None)


def decode_json(payload: bytes, n_inputs: int) -> Reading:
    if len(payload) > MAX_JSON_BYTES:
        raise PayloadError("oversize", f"{len(payload)} bytes")
    try:
        obj = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PayloadError("json", str(exc)[:80]) from None
    return _reading_from_obj(obj, n_inputs)


def decode_frame(frame: Frame, n_inputs: int) -> Reading:
    """A reading from a serial READING frame."""
    want = READING_T.size + 4 * n_inputs
    if len(frame.payload) != want:
        raise PayloadError("length", f"reading frame with {len(frame.payload)} payload bytes, expected {want}")
    x = np.frombuffer(frame.payload, "<f4", n_inputs, READING_T.size).astype(np.float32)
    return Reading(frame.seq, x)


def reading_frame(stream: int, seq: int, x, t_ms: int = 0) -> Frame:
    return Frame(MsgType.READING, stream, seq, READING_T.pack(t_ms & 0xFFFFFFFF) + np.asarray(x, "<f4").tobytes())


def prediction_frame(stream: int, seq: int, y) -> Frame:
    return Frame(MsgType.PREDICTION, stream, seq, np.asarray(y, "<f4").tobytes())


def hello_frame(stream: int, boot_id: int, n_inputs: int) -> Frame:
    from .frame import VERSION
    return Frame(MsgType.HELLO, stream, 0, HELLO.pack(boot_id & 0xFFFFFFFF, VERSION, n_inputs))


def decode_hello(frame: Frame) -> int:
    """The boot id of a HELLO frame."""
    if len(frame.payload) != HELLO.size:
        raise PayloadError("length", f"hello frame with {len(frame.payload)} payload bytes")
    return HELLO.unpack(frame.payload)[0]


def decode_line(line: bytes, n_inputs: int) -> tuple[str, Reading]:
    """(stream, reading) from a text line: JSON with a "stream" field, or CSV stream,seq,x..."""
    text = line.strip()
    if text.startswith(b"{"):
        try:
            obj = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise PayloadError("json", str(exc)[:80]) from None
        if not isinstance(obj, dict) or "stream" not in obj:
            raise PayloadError("json", "a JSON line needs a \"stream\" field")
        return str(obj["stream"]), _reading_from_obj(obj, n_inputs)
    parts = text.split(b",")
    if len(parts) != 2 + n_inputs:
        raise PayloadError("length", f"CSV line with {len(parts)} fields, expected stream,seq and {n_inputs} values")
    try:
        seq = int(parts[1])
        x = np.array([float(v) for v in parts[2:]], np.float32)
    except ValueError as exc:
        raise PayloadError("value", str(exc)[:80]) from None
    if seq < 0:
        raise PayloadError("seq", "seq must be non-negative")
    return parts[0].decode("utf-8", "replace"), Reading(seq, x)


def prediction_json(stream: str, seq: int, t_in: float, t_out: float, model_hash: str, y,
                    replay: bool = False) -> bytes:
    """replay: the reading came again and this is the answer made the first time (state not stepped).
    Formatted by hand (this runs per prediction; json.dumps of a dict cost ~3x more); the same
    bytes json.dumps(..., separators=(",", ":")) writes, which the tests check."""
    values = ",".join(map(repr, y.tolist()))
    if "n" in values:                           # inf or nan: let json write what it writes for them
        values = ",".join(json.dumps(v) for v in y.tolist())
    return (f'{{"stream":{encode_basestring_ascii(stream)},"seq":{seq},"t_in":{float(t_in)!r},'
            f'"t_out":{float(t_out)!r},"model":{encode_basestring_ascii(model_hash)},"y":[{values}]'
            + (',"replay":true}' if replay else "}")).encode()
