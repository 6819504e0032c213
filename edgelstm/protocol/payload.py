"""Readings in, predictions out: the payload formats of MQTT messages, serial frames and
serial text lines. Whatever the bytes, a decoder returns a well-formed reading or raises
PayloadError (a Rejected) with a short `reason` used as a counter label, never anything else.

MQTT reading payloads (README "Payloads"):
  JSON    {"seq": 17, "t": 1763800000.25, "x": [0.1, 0.2, 0.3], "boot": 7}   (t, boot optional)
          plus an optional "label": "walking" (a string, or an integer class), kept by `edgelstm record`
  binary  0xB1 | flags u8 | boot u16 | seq u32 | t f64 | x float32[n], little-endian
Serial line mode, one reading per line:  JSON as above plus "stream", or CSV "stream,seq,x0,x1,..."

Predictions (prediction_json):
  {"stream": "wrist1", "seq": 17, "t_in": ..., "t_out": ..., "model": "<hash>", "y": [...]}
  then "label", "p" (a model with labels) or one field per named output, then "replay": true
"""

from __future__ import annotations

import json
import math
import re
import struct
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii
from typing import NamedTuple

import numpy as np

from ..errors import PayloadError
from ..model.names import top_class
from .frame import VERSION, Frame, MsgType
from .stream_id import check_stream_id, utf8_size

BINARY_MAGIC = 0xB1
BINARY_HEADER = struct.Struct("<BBHId")          # magic, flags, boot, seq, t
READING_T = struct.Struct("<I")                  # serial READING payload: device time in ms
HELLO = struct.Struct("<IBB")                    # boot id, protocol version, inputs
MAX_JSON_BYTES = 64 * 1024
MAX_LABEL_BYTES = 64                             # in UTF-8: a class name, not a document
U32 = 2**32                                      # seq and boot are u32 on the wire (seq compared modulo 2^32)
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")      # C0, DEL and C1: never in a label (one CSV line per reading)


@dataclass(frozen=True)
class Reading:
    """One sensor reading, decoded. `x` is float32; finiteness is checked by the daemon."""

    seq: int                        # in [0, 2**32)
    x: np.ndarray                   # float32[n_inputs]
    t: float | None = None          # sender's unix time in seconds, if it sent one
    boot: int | None = None         # sender's boot id (u32), if it sent one
    label: str | None = None        # JSON only: what the sender says the reading is (a class), for training


class Hello(NamedTuple):
    """A HELLO frame's payload: what the device says about itself when it boots."""

    boot: int                       # boot id, u32
    protocol: int                   # the protocol version it speaks (this host speaks frame.VERSION)
    n_inputs: int                   # the inputs per reading it will send


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


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)     # bool is not a number here


def _show(value) -> str:
    """A short description of a decoded value for an error detail: repr() of what a sender wrote
    could be long, recurse through deep nesting, or (an int of over 4300 digits) raise."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() <= 64:
        return repr(value)
    return type(value).__name__


def _u32(value, name: str) -> int:
    """`value` when it is an int in [0, 2**32); else PayloadError with `name` as the reason."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < U32:
        raise PayloadError(name, f"'{name}' must be an integer in [0, 2**32), got {_show(value)}")
    return value


def _float32(values: list) -> np.ndarray:
    """float32[len(values)] from Python numbers. One beyond float32's range becomes +-inf (as 1e400
    does, which json reads as inf; the daemon counts non-finite readings); an int beyond the range
    of a float cannot be converted at all and is refused."""
    try:
        with np.errstate(over="ignore"):
            return np.array(values, np.float32)
    except OverflowError:
        raise PayloadError("value", "a value beyond the range of a float") from None


def _seconds(t) -> float | None:
    """The optional 't': a finite number of seconds, or None when absent."""
    if t is None:
        return None
    if not _is_number(t):
        raise PayloadError("time", f"'t' must be a number of seconds, got {_show(t)}")
    try:
        seconds = float(t)
    except OverflowError:                       # an int beyond the range of a float
        seconds = math.inf
    if not math.isfinite(seconds):
        raise PayloadError("time", "'t' must be a finite number of seconds")
    return seconds


def _reading_from_obj(obj, n_inputs: int) -> Reading:
    if not isinstance(obj, dict):
        raise PayloadError("json", "expected a JSON object")
    seq = _u32(obj.get("seq"), "seq")
    x = obj.get("x")
    if not isinstance(x, list) or len(x) != n_inputs:
        raise PayloadError("length", f"'x' must be a list of {n_inputs} numbers")
    if not all(map(_is_number, x)):
        raise PayloadError("value", "'x' holds something other than numbers")
    t = _seconds(obj.get("t"))
    boot = obj.get("boot")                      # absent or null: the sender did not say
    return Reading(seq, _float32(x), t, None if boot is None else _u32(boot, "boot"), _label(obj.get("label")))


def _label(value) -> str | None:
    """The optional 'label': a short string without control characters (it becomes a CSV field),
    or an integer class written as its decimal text; absent, null or "" is no label."""
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() <= 64:
        return str(value)
    if not isinstance(value, str):
        raise PayloadError("label", f"'label' must be a string or an integer of at most 64 bits, got {_show(value)}")
    size = utf8_size(value, "label", "'label'")
    if size > MAX_LABEL_BYTES:
        raise PayloadError("label", f"'label' of {size} bytes, at most {MAX_LABEL_BYTES}")
    if _CONTROL.search(value):
        raise PayloadError("label", "'label' holds a control character")
    return value


def _parse_json(text: bytes):
    """json.loads, with every way it can fail turned into PayloadError("json")."""
    try:
        return json.loads(text)
    # ValueError: bad JSON, bad UTF-8, or an int past Python's digit limit; RecursionError: nesting like b"[" * 100000
    except (ValueError, RecursionError) as exc:
        raise PayloadError("json", str(exc)[:80]) from None


def decode_json(payload: bytes, n_inputs: int) -> Reading:
    if len(payload) > MAX_JSON_BYTES:
        raise PayloadError("oversize", f"{len(payload)} bytes")
    return _reading_from_obj(_parse_json(payload), n_inputs)


def decode_frame(frame: Frame, n_inputs: int) -> Reading:
    """A reading from a serial READING frame (one from frame.decode, whose seq is u32)."""
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
    return Frame(MsgType.HELLO, stream, 0, HELLO.pack(boot_id & 0xFFFFFFFF, VERSION, n_inputs))


def decode_hello(frame: Frame) -> Hello:
    """What a HELLO frame says; a protocol or n_inputs that differs from the host's is the caller's to report."""
    if len(frame.payload) != HELLO.size:
        raise PayloadError("length", f"hello frame with {len(frame.payload)} payload bytes")
    return Hello(*HELLO.unpack(frame.payload))


def decode_line(line: bytes, n_inputs: int) -> tuple[str, Reading]:
    """(stream, reading) from a text line: JSON with a "stream" field, or CSV stream,seq,x...
    The stream id is checked by check_stream_id (it names an MQTT topic level downstream)."""
    text = line.strip()
    if text.startswith(b"{"):
        return _decode_json_line(text, n_inputs)
    parts = text.split(b",")
    if len(parts) != 2 + n_inputs:
        raise PayloadError("length", f"CSV line with {len(parts)} fields, expected stream,seq and {n_inputs} values")
    stream = _csv_stream(parts[0])
    seq = _csv_seq(parts[1])
    try:
        x = [float(v) for v in parts[2:]]
    except ValueError as exc:
        raise PayloadError("value", str(exc)[:80]) from None
    return stream, Reading(seq, _float32(x))


def _decode_json_line(text: bytes, n_inputs: int) -> tuple[str, Reading]:
    obj = _parse_json(text)
    if not isinstance(obj, dict) or "stream" not in obj:
        raise PayloadError("json", "a JSON line needs a \"stream\" field")
    return check_stream_id(obj["stream"]), _reading_from_obj(obj, n_inputs)


def _csv_stream(field: bytes) -> str:
    try:
        stream = field.decode("utf-8")
    except UnicodeDecodeError:
        raise PayloadError("stream", "stream id is not UTF-8") from None
    return check_stream_id(stream)


def _csv_seq(field: bytes) -> int:
    try:
        seq = int(field)
    except ValueError:                          # not an integer, or one past the int-digit limit
        raise PayloadError("seq", f"seq {field[:20]!r} is not an integer") from None
    return _u32(seq, "seq")


class PredictionFormat:
    """What a model's predictions carry besides y, encoded once per model (prediction_json runs per
    prediction). With labels: "label" (the top class) and "p" (its probability, by the rule of
    `scores`: model/names.py), both null when y is not finite. With output names: each column
    again under its name, after "y" (which stays, for readers of y)."""

    def __init__(self, labels: tuple[str, ...] = (), output_names: tuple[str, ...] = (), scores: str = "logits"):
        """scores: what y holds (model/names.py SCORES), as ModelSpec.scores says."""
        self.labels = tuple(encode_basestring_ascii(label) for label in labels)      # JSON strings, quoted
        self.keys = tuple(f",{encode_basestring_ascii(name)}:" for name in output_names)  # ',"name":' per column
        self.scores = scores

    def fields(self, values: list[float], texts: list[str], finite: bool) -> str:
        """The fields after "y", each with its leading comma: values (O,) and their JSON texts."""
        if self.labels:
            if not finite:
                return ',"label":null,"p":null'
            top, p = top_class(values, self.scores)
            return f',"label":{self.labels[top]},"p":{p!r}'
        return "".join(map(str.__add__, self.keys, texts))


def prediction_json(stream: str, seq: int, t_in: float, t_out: float, model_hash: str, y,
                    replay: bool = False, names: PredictionFormat | None = None) -> bytes:
    """replay: the reading came again and this is the answer made the first time (state not stepped).
    names: the model's labels or output names, if it has any.
    Formatted by hand (this runs per prediction; json.dumps of a dict cost ~3x more); the same
    bytes json.dumps(..., separators=(",", ":")) writes, which the tests check."""
    ys = y.tolist()
    texts = list(map(repr, ys))
    values = ",".join(texts)
    finite = "n" not in values
    if not finite:                              # inf or nan: let json write what it writes for them
        texts = list(map(json.dumps, ys))
        values = ",".join(texts)
    extra = names.fields(ys, texts, finite) if names is not None else ""
    return (f'{{"stream":{encode_basestring_ascii(stream)},"seq":{seq},"t_in":{float(t_in)!r},'
            f'"t_out":{float(t_out)!r},"model":{encode_basestring_ascii(model_hash)},"y":[{values}]{extra}'
            + (',"replay":true}' if replay else "}")).encode()
