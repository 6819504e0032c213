"""The wire protocol: COBS known answers, the shared vectors, chunking, resync, corruption."""

import json
import math
import random
import zlib

import numpy as np
import pytest
from conftest import ROOT

from edgelstm import errors
from edgelstm.errors import Rejected
from edgelstm.protocol import cobs, frame, payload
from edgelstm.protocol.frame import Frame, FrameDecoder, FrameError, MsgType
from edgelstm.protocol.payload import Hello, Reading
from edgelstm.protocol.stream_id import MAX_STREAM_ID_BYTES, check_stream_id

VECTORS = json.loads((ROOT / "firmware_bridge" / "vectors" / "frames.json").read_text())

# Known answers from the COBS literature (the '0x00' delimiter not included).
CLASSIC = [
    ("00", "0101"), ("0000", "010101"), ("001100", "01021101"), ("11220033", "0311220233"),
    ("11223344", "0511223344"), ("11000000", "0211010101"),
    (bytes(range(1, 255)).hex(), "ff" + bytes(range(1, 255)).hex()),
    ((b"\x00" + bytes(range(1, 255))).hex(), "01ff" + bytes(range(1, 255)).hex()),
    (bytes(range(1, 256)).hex(), "ff" + bytes(range(1, 255)).hex() + "02ff"),
    ((bytes(range(2, 256)) + b"\x00").hex(), "ff" + bytes(range(2, 256)).hex() + "0101"),
    ((bytes(range(3, 256)) + b"\x00\x01").hex(), "fe" + bytes(range(3, 256)).hex() + "0201"),
]


@pytest.mark.parametrize("decoded,encoded", CLASSIC)
def test_cobs_known_answers(decoded, encoded):
    assert cobs.encode(bytes.fromhex(decoded)).hex() == encoded
    assert cobs.decode(bytes.fromhex(encoded)).hex() == decoded


@pytest.mark.parametrize("case", VECTORS["cobs"], ids=lambda c: c["name"])
def test_cobs_vectors(case):
    assert cobs.encode(bytes.fromhex(case["decoded"])).hex() == case["encoded"]
    assert cobs.decode(bytes.fromhex(case["encoded"])).hex() == case["decoded"]
    assert b"\x00" not in bytes.fromhex(case["encoded"])


@pytest.mark.parametrize("case", VECTORS["frames"], ids=lambda c: c["name"])
def test_frame_vectors(case):
    f = Frame(case["type"], case["stream"], case["seq"], bytes.fromhex(case["payload"]))
    wire = bytes.fromhex(case["wire"])
    assert frame.encode(f) == wire
    assert frame.decode(wire[:-1]) == f


@pytest.mark.parametrize("case", VECTORS["corrupt"], ids=lambda c: c["name"])
def test_corrupt_vectors_are_rejected_with_reason(case):
    with pytest.raises(FrameError) as info:
        frame.decode(bytes.fromhex(case["wire"]))
    assert info.value.reason == case["reason"]


def stream_of_frames(n=200, seed=0):
    rng = random.Random(seed)
    frames = [payload.reading_frame(rng.randrange(4), i, [rng.uniform(-5, 5) for _ in range(3)], i * 20)
              for i in range(n)]
    return frames, b"".join(frame.encode(f) for f in frames)


def test_any_chunking_decodes_the_same_frames():
    frames, wire = stream_of_frames()
    rng = random.Random(1)
    for trial in range(50):
        dec, got, i = FrameDecoder(), [], 0
        while i < len(wire):
            step = rng.choice([1, 2, 3, 7, 64, 500, 4096])
            got += dec.feed(wire[i:i + step])
            i += step
        assert got == frames and not dec.errors


def test_garbage_and_oversize_are_skipped_and_counted():
    frames, wire = stream_of_frames(20)
    noisy = b"\x13\x37garbage" + b"\x00" + wire[:100] + b"\x01" * 5000 + b"\x00" + wire
    dec = FrameDecoder()
    got = dec.feed(noisy)
    assert got[-20:] == frames and dec.errors.get("oversize") == 1


def test_reset_never_glues_a_partial_frame():
    frames, wire = stream_of_frames(10)
    dec = FrameDecoder()
    assert dec.feed(wire[:-7]) == frames[:-1]     # the last frame is cut off ...
    dec.reset()                                   # ... the link drops and comes back
    assert dec.feed(wire) == frames and dec.errors == {"partial": 1}


def test_random_mutations_are_never_accepted_as_other_frames():
    """10,000 frames with random bit flips, drops and inserts: every frame that decodes is one
    that was sent, byte for byte (CRC-32 makes an undetected error ~2^-32 per corrupt frame)."""
    frames, wire = stream_of_frames(10_000, seed=3)
    sent = set(frames)
    rng = random.Random(4)
    data = bytearray(wire)
    for _ in range(3000):
        pos = rng.randrange(len(data))
        op = rng.random()
        if op < 0.6:
            data[pos] ^= 1 << rng.randrange(8)
        elif op < 0.8:
            del data[pos]
        else:
            data.insert(pos, rng.randrange(256))
    dec = FrameDecoder()
    got = dec.feed(bytes(data))
    assert all(f in sent for f in got)
    assert len(got) > 5000 and sum(dec.errors.values()) > 100


def test_mqtt_payloads_round_trip_and_reject_bad_ones():
    x = np.array([1.5, -2.0, 0.25], np.float32)
    r = payload.decode_mqtt(payload.encode_binary(9, x, 1763800000.5, boot=3), 3)
    assert (r.seq, r.t, r.boot) == (9, 1763800000.5, 3) and np.array_equal(r.x, x)
    r = payload.decode_mqtt(b'{"seq": 4, "t": 12.5, "x": [1, 2, 3]}', 3)
    assert r.seq == 4 and r.t == 12.5 and r.x.dtype == np.float32
    bad = {b"{nope": "json", b'{"seq": -1, "x": [1,2,3]}': "seq", b'{"seq": 1, "x": [1,2]}': "length",
           b'{"seq": 1, "x": [1,"a",3]}': "value", b"[1,2,3]": "json", b"\xb1\x00": "length",
           b'{"seq": 1, "x": [1,2,3], "t": "now"}': "time", b" " * 70000: "oversize"}
    for raw, reason in bad.items():
        with pytest.raises(payload.PayloadError) as info:
            payload.decode_mqtt(raw, 3)
        assert info.value.reason == reason, raw[:30]


def test_line_mode():
    assert payload.decode_line(b"s1,5,1.0,2.0,3.0\n", 3)[0] == "s1"
    stream, r = payload.decode_line(b'{"stream": "7", "seq": 2, "x": [0, 0, 1]}', 3)
    assert stream == "7" and r.seq == 2
    with pytest.raises(payload.PayloadError):
        payload.decode_line(b"s1,5,1.0,2.0\n", 3)


def test_frame_size_limits():
    with pytest.raises(ValueError):
        frame.encode(Frame(MsgType.READING, 0, 0, bytes(frame.MAX_PAYLOAD + 1)))
    big = frame.encode(Frame(MsgType.READING, 0, 0, bytes([1]) * frame.MAX_PAYLOAD))
    assert len(big) <= frame.MAX_ENCODED


@pytest.mark.parametrize("stream,y,replay", [
    ("s1", [0.1, -2.5e-7, 3.0], False),
    ('we"ird\\/é', [float("inf"), float("-inf"), float("nan")], True),   # what json.dumps writes for these
    ("x", list(np.random.default_rng(0).standard_normal(8)), False),
])
def test_prediction_json_is_what_json_dumps_writes(stream, y, replay):
    y = np.array(y, np.float32)
    want = {"stream": stream, "seq": 2**40, "t_in": 1763800000.25, "t_out": 1763800000.2513, "model": "ab12",
            "y": [float(v) for v in y]}
    if replay:
        want["replay"] = True
    got = payload.prediction_json(stream, 2**40, 1763800000.25, 1763800000.2513, "ab12", y, replay=replay)
    assert got == json.dumps(want, separators=(",", ":")).encode()


def _softmax(y):
    e = np.exp(y.astype(np.float64) - y.max())
    return e / e.sum()


@pytest.mark.parametrize("scores", ["logits", "probabilities", "log_probabilities"])
@pytest.mark.parametrize("stream,y,replay", [
    ("s1", [0.1, -2.5e-7, 3.0], False),
    ("s2", [0.5, 0.5, 0.25], True),                                       # a tie: the first wins, as argmax
    ('we"ird\\/é', [float("inf"), float("-inf"), float("nan")], True),  # no top class: null, null
    ("x", list(np.random.default_rng(0).standard_normal(8)), False),
])
def test_prediction_json_with_labels_is_what_json_dumps_writes(stream, y, replay, scores):
    y = np.array(y, np.float32)
    if scores != "logits" and np.isfinite(y).all():     # what a softmax or log-softmax layer writes
        y = _softmax(y).astype(np.float32)
        y = np.log(y) if scores == "log_probabilities" else y
    labels = tuple(f"classe-{k}-été\"\\" for k in range(len(y)))       # non-ASCII, quotes, backslashes
    got = payload.prediction_json(stream, 7, 1.5, 2.5, "ab12", y, replay=replay,
                                  names=payload.PredictionFormat(labels, (), scores))
    want = {"stream": stream, "seq": 7, "t_in": 1.5, "t_out": 2.5, "model": "ab12", "y": [float(v) for v in y]}
    if np.isfinite(y).all():
        top = int(np.argmax(y))
        p = json.loads(got)["p"]
        assert p == pytest.approx(_softmax(y)[top] if scores == "logits" else
                                  np.exp(y[top]) if scores == "log_probabilities" else y[top], rel=1e-6)
        want.update(label=labels[top], p=p)
    else:
        want.update(label=None, p=None)
    if replay:
        want["replay"] = True
    assert got == json.dumps(want, separators=(",", ":")).encode()


@pytest.mark.parametrize("y", [[21.5, 40.25, -3e-8], [float("nan"), float("inf"), 1.0]])
def test_prediction_json_with_named_outputs_is_what_json_dumps_writes(y):
    y = np.array(y, np.float32)
    names = ("temperature", "humidité", "Δp")
    got = payload.prediction_json("room", 3, 1.0, 2.0, "ab12", y, names=payload.PredictionFormat((), names))
    want = {"stream": "room", "seq": 3, "t_in": 1.0, "t_out": 2.0, "model": "ab12", "y": [float(v) for v in y]}
    want.update({name: float(v) for name, v in zip(names, y)})
    assert got == json.dumps(want, separators=(",", ":")).encode()


# ---- every decoder rejects bad input with a Rejected error, never another exception ----

def reason_of(decode, *args) -> str:
    """The counter label decode(*args) rejects with (failing the test on any other exception)."""
    with pytest.raises(Rejected) as info:
        decode(*args)
    return info.value.reason


def test_protocol_errors_are_the_shared_rejected_classes():
    assert payload.PayloadError is errors.PayloadError
    assert frame.FrameError is errors.FrameError
    assert cobs.CobsError is errors.CobsError
    assert reason_of(cobs.decode, b"\x05ab") == "cobs"
    assert reason_of(frame.decode, b"\x05ab") == "cobs"


def test_deep_json_nesting_is_a_json_error():
    """json.loads raises RecursionError on nesting like this (the MQTT one stays under MAX_JSON_BYTES)."""
    assert reason_of(payload.decode_mqtt, b"[" * 60_000, 3) == "json"
    assert reason_of(payload.decode_mqtt, b'{"seq": 1, "x": ' + b"[" * 60_000, 3) == "json"
    assert reason_of(payload.decode_line, b'{"stream": "s", "x": ' + b"[" * 100_000, 3) == "json"


def test_numbers_beyond_the_range_of_a_float_are_rejected():
    big = b"1" + b"0" * 400
    cases = {b'{"seq": 1, "x": [' + big + b', 2, 3]}': "value",
             b'{"seq": 1, "x": [1, 2, 3], "t": ' + big + b"}": "time",
             b'{"seq": 1, "x": [1, 2, 3], "boot": ' + big + b"}": "boot",
             b'{"seq": ' + big + b', "x": [1, 2, 3]}': "seq",
             b'{"seq": 1' + b"0" * 5000 + b', "x": [1, 2, 3]}': "json"}     # past Python's int-digit limit
    for raw, reason in cases.items():
        assert reason_of(payload.decode_mqtt, raw, 3) == reason, raw[:40]
    assert reason_of(payload.decode_line, b"s1," + big + b",1,2,3", 3) == "seq"
    assert reason_of(payload.decode_line, b"s1," + b"9" * 5000 + b",1,2,3", 3) == "seq"
    # json reads 1e400 as inf and a float32 overflows to inf: finiteness is the daemon's to count
    r = payload.decode_mqtt(b'{"seq": 1, "x": [1e400, 1e39, -1' + b"0" * 300 + b"]}", 3)
    assert r.x.dtype == np.float32 and np.isinf(r.x).all()


@pytest.mark.parametrize("seq,ok", [(0, True), (2**32 - 1, True), (2**32, False), (2**40, False), (-1, False)])
def test_seq_is_u32_in_json_and_line_mode(seq, ok):
    raws = [(payload.decode_mqtt, b'{"seq": %d, "x": [1, 2, 3]}' % seq),
            (payload.decode_line, b'{"stream": "s", "seq": %d, "x": [1, 2, 3]}' % seq),
            (payload.decode_line, b"s,%d,1,2,3" % seq)]
    for decode, raw in raws:
        if ok:
            got = decode(raw, 3)
            assert (got[1] if isinstance(got, tuple) else got).seq == seq
        else:
            assert reason_of(decode, raw, 3) == "seq", raw


@pytest.mark.parametrize("boot,want", [("0", 0), ("4294967295", 2**32 - 1), ("null", None),
                                       ("4294967296", "boot"), ("-1", "boot"), ("true", "boot"),
                                       ("1.5", "boot"), ('"7"', "boot"), ("[7]", "boot")])
def test_boot_is_u32_when_present(boot, want):
    raw = b'{"seq": 1, "x": [1, 2, 3], "boot": %s}' % boot.encode()
    if want == "boot":
        assert reason_of(payload.decode_mqtt, raw, 3) == "boot"
    else:
        assert payload.decode_mqtt(raw, 3).boot == want
    assert payload.decode_mqtt(b'{"seq": 1, "x": [1, 2, 3]}', 3).boot is None


GOOD_IDS = ["s1", "serial-7", "a b", "é" * 64, "x" * MAX_STREAM_ID_BYTES, "$dev", "温度"]
BAD_IDS = ["", "a+b", "#", "a/b", "a\x00b", "\x1f", "tab\there", "\x7f", "\ud800", "x" * (MAX_STREAM_ID_BYTES + 1),
           "é" * 65, 7, None, ["s"], {"s": 1}]


def short(value) -> str:
    return repr(value)[:16]


@pytest.mark.parametrize("stream", GOOD_IDS, ids=short)
def test_check_stream_id_accepts(stream):
    assert check_stream_id(stream) == stream


@pytest.mark.parametrize("stream", BAD_IDS, ids=short)
def test_check_stream_id_rejects(stream):
    assert reason_of(check_stream_id, stream) == "stream"


@pytest.mark.parametrize("stream", BAD_IDS, ids=short)
def test_json_lines_with_bad_stream_ids_are_rejected(stream):
    line = json.dumps({"stream": stream, "seq": 1, "x": [1, 2, 3]}).encode()
    assert reason_of(payload.decode_line, line, 3) == "stream"


@pytest.mark.parametrize("field", [b"\xff\xfe", b"\xed\xa0\x80", b"a\x00b", b"a+b", b"a/b", b"#", b"x" * 129, b""])
def test_csv_lines_with_bad_stream_ids_are_rejected(field):
    assert reason_of(payload.decode_line, field + b",1,1,2,3", 3) == "stream"


def test_decode_hello_says_boot_protocol_and_inputs():
    hello = payload.decode_hello(payload.hello_frame(2, 2**32 + 5, 7))
    assert hello == Hello(boot=5, protocol=frame.VERSION, n_inputs=7)
    assert reason_of(payload.decode_hello, Frame(MsgType.HELLO, 0, 0, b"\x01\x02")) == "length"


# ---- fuzz: random and mutated inputs at every decoder ----

N_INPUTS = 3
JSON_SEEDS = [b'{"seq": 17, "t": 1763800000.25, "x": [0.1, 0.2, 0.3], "boot": 7}',
              b'{"seq": 4294967295, "x": [1, -2, 3e38]}',
              b'{"seq": 0, "x": [0, 0, 0], "t": null, "boot": null}']
BINARY_SEEDS = [payload.encode_binary(9, [1.5, -2.0, 0.25], 1763800000.5, boot=3), payload.encode_binary(0, [0, 0, 0])]
LINE_SEEDS = [b"s1,5,1.0,2.0,3.0", b'{"stream": "s1", "seq": 2, "x": [0, 0, 1], "boot": 3}',
              "dev-é,4294967295,1e38,-0,nan\n".encode()]
FRAME_SEEDS = [payload.reading_frame(1, 7, [1.0, 2.0, 3.0], 40), payload.hello_frame(2, 9, N_INPUTS),
               Frame(MsgType.RESET, 3, 0), payload.prediction_frame(4, 5, [0.5]),
               Frame(MsgType.ERROR, 0, 1, b"\x01\x00oops")]
# fragments that reach the decoders' edges: nesting, digit limits, u32 bounds, NUL, bad UTF-8, separators
TOKENS = [b"[", b"{", b'"', b",", b":", b"-", b"\x00", b"\xff", b"\xed\xa0\x80", b"1" * 400, b"9" * 5000,
          b"e999", b"4294967296", b"-1", b"null", b"true", b"[" * 2000, b'"stream": ', b"+", b"#", b"/", b"\n"]


def mutate(rng: random.Random, data: bytes) -> bytes:
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        pos = rng.randrange(len(data) + 1)
        op = rng.randrange(5)
        if op == 0 and data:
            data[min(pos, len(data) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1:
            del data[pos:pos + rng.randint(1, 4)]
        elif op == 2:
            data[pos:pos] = rng.choice(TOKENS)
        elif op == 3:
            data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 4)))
        else:
            del data[pos:]
    return bytes(data)


def frame_body(f: Frame) -> bytes:
    """A frame's bytes before its CRC and stuffing."""
    return cobs.decode(frame.encode(f)[:-1])[:-frame.CRC.size]


def mutated_frame(rng: random.Random) -> bytes:
    """Half the time a corrupted wire frame (mostly bad CRCs); half a corrupted body with a fresh CRC,
    which reaches the version/length/type checks and the payload decoders."""
    seed = rng.choice(FRAME_SEEDS)
    if rng.random() < 0.5:
        return mutate(rng, frame.encode(seed))
    body = mutate(rng, frame_body(seed))[:frame.MAX_FRAME - frame.CRC.size]
    return cobs.encode(body + frame.CRC.pack(zlib.crc32(body))) + b"\x00"


def fuzz_inputs(n: int, seed: int):
    rng = random.Random(seed)
    makers = [lambda: bytes(rng.randrange(256) for _ in range(rng.randrange(80))),
              lambda: mutate(rng, rng.choice(JSON_SEEDS)),
              lambda: mutate(rng, rng.choice(BINARY_SEEDS)),
              lambda: mutate(rng, rng.choice(LINE_SEEDS)),
              lambda: mutated_frame(rng)]
    for i in range(n):
        yield makers[i % len(makers)]()


def accepted(decode, *args):
    """decode(*args), or None when it rejects; any other exception fails the test."""
    try:
        return decode(*args)
    except Rejected as exc:
        assert isinstance(exc.reason, str) and exc.reason
        return None


def assert_well_formed(r: Reading):
    assert isinstance(r, Reading)
    assert r.x.dtype == np.float32 and r.x.shape == (N_INPUTS,)
    assert type(r.seq) is int and 0 <= r.seq < 2**32
    assert r.boot is None or (type(r.boot) is int and 0 <= r.boot < 2**32)
    assert r.t is None or (type(r.t) is float and math.isfinite(r.t))


def decode_payloads_of(f: Frame, counts: dict) -> None:
    assert isinstance(f, Frame) and f.type in MsgType._value2member_map_ and 0 <= f.seq < 2**32
    reading = accepted(payload.decode_frame, f, N_INPUTS)
    if reading is not None:
        assert_well_formed(reading)
        counts["frame_reading"] += 1
    hello = accepted(payload.decode_hello, f)
    if hello is not None:
        assert isinstance(hello, Hello) and 0 <= hello.boot < 2**32
        counts["hello"] += 1


def test_fuzzed_inputs_are_decoded_well_formed_or_rejected():
    """20,000 random and mutated inputs through every decoder: nothing but Rejected escapes, and every
    reading accepted is well formed. The counts check the fuzzing reaches past the first checks."""
    counts = dict.fromkeys(["mqtt", "line", "frame", "frame_reading", "hello"], 0)
    stream_decoder = FrameDecoder()
    for data in fuzz_inputs(20_000, seed=20251122):
        reading = accepted(payload.decode_mqtt, data, N_INPUTS)
        if reading is not None:
            assert_well_formed(reading)
            counts["mqtt"] += 1
        line = accepted(payload.decode_line, data, N_INPUTS)
        if line is not None:
            assert check_stream_id(line[0]) == line[0]
            assert_well_formed(line[1])
            counts["line"] += 1
        accepted(cobs.decode, data)
        f = accepted(frame.decode, data.removesuffix(b"\x00"))
        if f is not None:
            counts["frame"] += 1
            decode_payloads_of(f, counts)
        for f in stream_decoder.feed(data):
            decode_payloads_of(f, counts)
        decode_payloads_of(Frame(MsgType.READING, 0, 1, data), counts)
    assert sum(stream_decoder.errors.values()) > 1000
    assert min(counts.values()) > 100, counts
