"""Regenerate frames.json, the test vectors shared by the Python codec and the C library,
and frames.txt, the same vectors one per line for the C tests (no JSON parser on that side):

    .venv/bin/python firmware_bridge/vectors/make_vectors.py

frames.txt lines ("-" stands for no bytes):
    cobs <decoded hex> <encoded hex>
    frame <type> <stream> <seq> <payload hex> <wire hex, with the 0x00>
    corrupt <reason> <stuffed hex, without the 0x00>

COBS cases include the boundary cases of the COBS literature; the known answers for the
classic ones are also asserted independently in tests/test_protocol.py.
"""

import json
import struct
import sys
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))
from edgelstm.protocol import cobs, frame  # noqa: E402
from edgelstm.protocol.payload import hello_frame, reading_frame  # noqa: E402

COBS_CASES = {
    "empty": b"",
    "one zero": b"\x00",
    "two zeros": b"\x00\x00",
    "zero framed": b"\x00\x11\x00",
    "inner zero": b"\x11\x22\x00\x33",
    "no zero": b"\x11\x22\x33\x44",
    "trailing zeros": b"\x11\x00\x00\x00",
    "all zero 10": bytes(10),
    "254 non-zero": bytes(range(1, 255)),
    "zero then 254 non-zero": b"\x00" + bytes(range(1, 255)),
    "255 non-zero": bytes(range(1, 256)),
    "253 non-zero then zero": bytes(range(2, 256)) + b"\x00",
    "254 non-zero then zero then one": bytes(range(3, 256)) + b"\x00\x01",
    "600 non-zero": bytes((i % 255) + 1 for i in range(600)),
}


def corrupt_cases():
    good = frame.encode(reading_frame(1, 7, [1.0, 2.0, 3.0], 1000))[:-1]
    body = cobs.decode(good)
    flipped = bytearray(body)
    flipped[12] ^= 0x01
    wrong_version = bytearray(body)
    wrong_version[0] = 2
    wrong_version = bytes(wrong_version[:-4]) + struct.pack("<I", zlib.crc32(bytes(wrong_version[:-4])))
    bad_len = bytearray(body[:-4])
    bad_len[8] += 1
    bad_len = bytes(bad_len) + struct.pack("<I", zlib.crc32(bytes(bad_len)))
    bad_type = bytearray(body[:-4])
    bad_type[1] = 99
    bad_type = bytes(bad_type) + struct.pack("<I", zlib.crc32(bytes(bad_type)))
    return [
        {"name": "payload bit flipped", "wire": cobs.encode(bytes(flipped)).hex(), "reason": "crc"},
        {"name": "truncated", "wire": good[:-3].hex(), "reason": "cobs"},
        {"name": "too short", "wire": cobs.encode(body[:8]).hex(), "reason": "short"},
        {"name": "version 2", "wire": cobs.encode(wrong_version).hex(), "reason": "version"},
        {"name": "length field off by one", "wire": cobs.encode(bad_len).hex(), "reason": "length"},
        {"name": "unknown type", "wire": cobs.encode(bad_type).hex(), "reason": "type"},
        {"name": "code runs past end", "wire": "05112233", "reason": "cobs"},
        {"name": "empty after stuffing", "wire": "01", "reason": "short"},
        {"name": "zero byte inside", "wire": cobs.encode(body)[:5].hex() + "00" + cobs.encode(body)[6:].hex(),
         "reason": "cobs"},
        {"name": "longer than any frame", "wire": (b"\xff" * (frame.MAX_STUFFED + 1)).hex(), "reason": "oversize"},
    ]


def as_lines(doc) -> str:
    def h(hexstr):
        return hexstr or "-"
    lines = [f"cobs {h(c['decoded'])} {h(c['encoded'])}" for c in doc["cobs"]]
    lines += [f"frame {f['type']} {f['stream']} {f['seq']} {h(f['payload'])} {f['wire']}" for f in doc["frames"]]
    lines += [f"corrupt {c['reason']} {h(c['wire'])}" for c in doc["corrupt"]]
    return "\n".join(lines) + "\n"


def main():
    frames = [
        ("reading", reading_frame(0, 0, [0.5, -1.25, 3.0], 123456)),
        ("reading, seq about to wrap", reading_frame(3, 0xFFFFFFFF, [0.0, 0.0, 0.0], 0)),
        ("reading with zeros everywhere", reading_frame(0, 256, [0.0] * 8, 0)),
        ("hello", hello_frame(2, 0xDEADBEEF, 3)),
        ("reset", frame.Frame(frame.MsgType.RESET, 65535, 42)),
        ("prediction", frame.Frame(frame.MsgType.PREDICTION, 1, 9, struct.pack("<3f", 0.1, 0.7, 0.2))),
        ("error", frame.Frame(frame.MsgType.ERROR, 0, 1, struct.pack("<H", 3) + b"bad length")),
        ("largest payload", frame.Frame(frame.MsgType.READING, 5, 77, bytes((i * 7) % 256 for i in range(1024)))),
    ]
    doc = {
        "protocol_version": frame.VERSION,
        "cobs": [{"name": n, "decoded": d.hex(), "encoded": cobs.encode(d).hex()} for n, d in COBS_CASES.items()],
        "frames": [{"name": n, "type": f.type, "stream": f.stream, "seq": f.seq, "payload": f.payload.hex(),
                    "wire": frame.encode(f).hex()} for n, f in frames],
        "corrupt": corrupt_cases(),
    }
    (HERE / "frames.json").write_text(json.dumps(doc, indent=1) + "\n")
    (HERE / "frames.txt").write_text(as_lines(doc))
    print("wrote", HERE / "frames.json", "and", HERE / "frames.txt")


if __name__ == "__main__":
    main()
