"""The wire protocol: COBS known answers, the shared vectors, chunking, resync, corruption."""

import json
import random

import numpy as np
import pytest
from conftest import ROOT

from edgelstm.protocol import cobs, frame, payload
from edgelstm.protocol.frame import Frame, FrameDecoder, FrameError, MsgType

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
    stream, r = payload.decode_line(b'{"stream": 7, "seq": 2, "x": [0, 0, 1]}', 3)
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
