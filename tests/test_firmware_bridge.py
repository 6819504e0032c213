"""The C framing library: strict build, the shared vectors under ASan/UBSan, a differential
fuzz of one million inputs against the Python codec, and a virtual board (built from the same
C sources) driving the daemon's serial path end to end."""

from __future__ import annotations

import contextlib
import json
import random
import re
import signal
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from bridge_build import BRIDGE, make
from daemon_helpers import MODEL, DaemonProcess, wait_until

import edgelstm
from edgelstm.protocol import cobs, frame

sys.path.insert(0, str(BRIDGE / "vectors"))
import make_vectors  # noqa: E402

FUZZ_INPUTS = 1_000_000


def test_vectors_text_matches_json():
    doc = json.loads((BRIDGE / "vectors" / "frames.json").read_text())
    assert (BRIDGE / "vectors" / "frames.txt").read_text() == make_vectors.as_lines(doc)


@pytest.mark.integration
def test_c_library_strict_build_and_vectors_under_sanitizers(tmp_path):
    proc = make(tmp_path, "check")              # -std=c99 -Wall -Wextra -Werror -pedantic, then ASan+UBSan
    assert proc.stdout.count("ok ") == 2, proc.stdout
    assert "vectors" in proc.stdout


# -- differential fuzzing ---------------------------------------------------------------------

def python_answer(stuffed: bytes) -> str:
    """What the Python codec says about one stuffed frame, in decode_tool's format."""
    try:
        f = frame.decode(stuffed)
    except frame.FrameError as exc:
        return exc.reason
    return f"ok {f.type} {f.stream} {f.seq} {len(f.payload)} {zlib.crc32(f.payload):08x}"


def base_frames(rng: random.Random, n: int) -> list[tuple[bytes, str]]:
    """Valid frames of every type and many sizes: (stuffed bytes, their decode answer)."""
    out = []
    for _ in range(n):
        size = rng.randrange(40)
        if rng.random() < 0.1:
            size = rng.choice([0, 1, 6, 16, 28, 250, 254, 300, frame.MAX_PAYLOAD])
        payload = bytes(rng.choice([0, 0, 1, 255, rng.randrange(256)]) for _ in range(size))
        f = frame.Frame(rng.randrange(1, 6), rng.randrange(65536), rng.randrange(2**32), payload)
        stuffed = frame.encode(f)[:-1]
        out.append((stuffed, python_answer(stuffed)))
    return out


def mutate(rng: random.Random, data: bytes, other: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(7)
        i = rng.randrange(len(b) + 1)
        if op == 0 and b:
            b[i % len(b)] ^= 1 << rng.randrange(8)                 # bit flip
        elif op == 1 and b:
            b[i % len(b)] = rng.randrange(256)                     # byte replaced (maybe by 0x00)
        elif op == 2:
            b.insert(i, rng.randrange(256))                         # byte inserted
        elif op == 3 and b:
            del b[i % len(b)]                                       # byte lost
        elif op == 4:
            del b[i:]                                               # cut short
        elif op == 5:
            b[i:i] = b[i:i + rng.randrange(1, 8)]                   # a run repeated
        else:
            b[i:] = other[rng.randrange(len(other) + 1):]           # spliced onto another frame
    return bytes(b)


def fuzz_inputs(seed: int, n: int) -> tuple[list[bytes], list[str | None], set[str]]:
    """n inputs; for each, whether it came from a valid frame (None: random bytes); and the
    answers of all valid frames used. A mutated input may only be accepted as one of those
    (a splice can land exactly on another whole frame); anything else is a corrupt frame."""
    rng = random.Random(seed)
    bases = base_frames(rng, 3000)
    inputs, origins = [], []
    for _ in range(n):
        r = rng.random()
        if r < 0.25:                                                # random bytes
            size = rng.randrange(1100) if rng.random() < 0.02 else rng.randrange(60)
            inputs.append(rng.randbytes(size))
            origins.append(None)
        elif r < 0.35:                                              # re-checksummed: reaches the
            stuffed, _ = rng.choice(bases)                          # version/length/type checks
            body = bytearray(cobs.decode(stuffed)[:-4])
            body[rng.randrange(10)] = rng.choice([0, 1, 2, 6, 99, 255, rng.randrange(256)])
            if rng.random() < 0.3:
                body = body[:rng.randrange(len(body) + 1)]
            inputs.append(cobs.encode(bytes(body) + struct.pack("<I", zlib.crc32(bytes(body)))))
            origins.append(None)                                    # a well-formed frame may result
        elif r < 0.37:                                              # unmutated
            stuffed, answer = rng.choice(bases)
            inputs.append(stuffed)
            origins.append(answer)
        else:
            stuffed, answer = rng.choice(bases)
            inputs.append(mutate(rng, stuffed, rng.choice(bases)[0]))
            origins.append(answer)
    return inputs, origins, {answer for _, answer in bases}


def run_decode_tool(bin_dir: Path, mode: str, path: Path) -> list[str]:
    proc = subprocess.run([str(bin_dir / "decode_tool"), mode, str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]            # ASan/UBSan abort with a report
    return proc.stdout.splitlines()


@pytest.mark.integration
@pytest.mark.slow
def test_fuzz_c_decoder_agrees_with_python_on_a_million_inputs(bridge_bin, tmp_path):
    inputs, origins, valid = fuzz_inputs(seed=2026, n=FUZZ_INPUTS)
    records = tmp_path / "inputs.bin"
    records.write_bytes(b"".join(struct.pack("<I", len(x)) + x for x in inputs))
    c_answers = run_decode_tool(bridge_bin, "frames", records)
    assert len(c_answers) == len(inputs)

    disagree, corrupt_accepted, accepted, reasons = [], 0, 0, {}
    for x, origin, c_answer in zip(inputs, origins, c_answers):
        py_answer = python_answer(x)
        if py_answer != c_answer:
            disagree.append((x.hex()[:120], py_answer, c_answer))
        if c_answer.startswith("ok"):
            accepted += 1
            corrupt_accepted += origin is not None and c_answer not in valid
        else:
            reasons[c_answer] = reasons.get(c_answer, 0) + 1
    assert not disagree, f"{len(disagree)} disagreements, first: {disagree[:3]}"
    assert corrupt_accepted == 0
    assert accepted > 20_000 and set(reasons) == set(C_ORDER), reasons


@pytest.mark.integration
def test_fuzz_streaming_decoders_agree(bridge_bin, tmp_path):
    """The byte-at-a-time C receiver and Python's chunked FrameDecoder see the same stream:
    fuzz inputs joined by 0x00 and occasional oversize runs. Same frames, same counters."""
    inputs, _, _ = fuzz_inputs(seed=7, n=50_000)
    rng = random.Random(7)
    parts = []
    for x in inputs:
        parts.append(x)
        if rng.random() < 0.001:
            parts.append(bytes([0x42]) * rng.randrange(1000, 3000))
    stream = b"\x00".join(parts) + b"\x00"
    (tmp_path / "stream.bin").write_bytes(stream)
    c_lines = run_decode_tool(bridge_bin, "stream", tmp_path / "stream.bin")

    decoder, py_lines, i = frame.FrameDecoder(), [], 0
    while i < len(stream):                                  # random chunking
        n = rng.randrange(1, 4096)
        for f in decoder.feed(stream[i:i + n]):
            py_lines.append(f"ok {f.type} {f.stream} {f.seq} {len(f.payload)} {zlib.crc32(f.payload):08x}")
        i += n
    py_errors = "errors" + "".join(f" {k}={v}" for k, v in sorted(decoder.errors.items(),
                                                                  key=lambda kv: C_ORDER.index(kv[0])))
    assert c_lines[:-1] == py_lines
    assert c_lines[-1] == py_errors
    assert len(py_lines) > 1000


C_ORDER = ["cobs", "short", "crc", "version", "length", "type", "oversize"]


def test_cobs_encoder_round_trips_random_data():
    """A cheap check of the Python encoder over the sizes where COBS has its boundaries."""
    rng = random.Random(1)
    for size in list(range(0, 520)) + [1037, 1038]:
        data = bytes(rng.choice([0, rng.randrange(1, 256)]) if rng.random() < 0.1 else rng.randrange(1, 256)
                     for _ in range(size))
        enc = cobs.encode(data)
        assert b"\x00" not in enc and cobs.decode(enc) == data
        assert len(enc) <= size + (size + 253) // 254 + (size == 0)


# -- the virtual device -------------------------------------------------------------------------

def replay_offline(sent_log: Path, n_inputs: int) -> dict[int, list]:
    """What the daemon must predict for the readings the device really sent: each stream from
    a fresh state at its first reading, the state reset at every reboot (the default policy),
    dropped readings simply missing. Per stream, [(seq, y)] in sending order."""
    model = edgelstm.load(MODEL)
    streams, expected = {}, {}
    for line in sent_log.read_text().splitlines():
        fields = line.split(",")
        stream, seq, boot, sent = (int(v) for v in fields[:4])
        x = np.array([float(v) for v in fields[4:4 + n_inputs]], np.float32)
        s, last_boot = streams.get(stream, (None, None))
        if s is None or boot != last_boot:
            s = model.stream()
        streams[stream] = (s, boot)
        if sent:
            expected.setdefault(stream, []).append((seq, s.step(x)))
    return expected


@pytest.mark.integration
def test_virtual_device_drives_the_daemon_end_to_end(bridge_bin, tmp_path):
    """The C encoder on a pty -> the daemon's serial path -> predictions on stdout and back to the
    board as PREDICTION frames; with noise, 2 % dropped readings and two reboots."""
    rec = np.load(Path(edgelstm.__file__).parent / "data" / "activity_recording.npz")["x"][:1500]
    np.savetxt(tmp_path / "rec.csv", rec, fmt="%.9g", delimiter=",")
    n_streams, count = 4, 600
    device = subprocess.Popen(
        [str(bridge_bin / "virtual_device"), "--wait-signal", "--recording", str(tmp_path / "rec.csv"),
         "--streams", str(n_streams), "--rate", "400", "--count", str(count), "--noise", "0.02",
         "--drop", "0.02", "--reboot-every", "250", "--seed", "5", "--log", str(tmp_path / "sent.csv"),
         "--predictions", str(tmp_path / "got.csv"), "--linger", "3"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        pty_path = device.stdout.readline().strip()
        assert pty_path.startswith("/dev/"), device.stderr.read()
        daemon = DaemonProcess(tmp_path, extra=f'output = "stdout"\n[serial]\nport = "{pty_path}"\nreply = true\n')
        daemon.start(wait_connected=False)
        assert wait_until(lambda: "open at" in daemon.log.read_text(), 30, contextlib.nullcontext())
        device.send_signal(signal.SIGUSR1)
        _, err = device.communicate(timeout=60)
        assert device.returncode == 0, err
    finally:
        if device.poll() is None:
            device.kill()
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.proc.wait(10) == 0

    expected = replay_offline(tmp_path / "sent.csv", rec.shape[1])
    sent_rows = (tmp_path / "sent.csv").read_text().splitlines()
    n_sent = sum(len(v) for v in expected.values())
    assert len(sent_rows) == n_streams * count and n_streams * count - n_sent > 10   # some were dropped
    assert f"sent {n_sent} readings" in err and "2 reboots" in err and "0 bad frames" in err, err

    # stdout: every reading the device sent was predicted, in order, equal to the offline replay.
    printed: dict = {}
    for line in daemon.log.read_text().splitlines():
        if line.startswith("{"):
            p = json.loads(line)
            printed.setdefault(int(p["stream"]), []).append((p["seq"], np.float32(p["y"])))
    assert sorted(printed) == sorted(expected)
    for stream, want in expected.items():
        assert [seq for seq, _ in printed[stream]] == [seq for seq, _ in want]
        np.testing.assert_array_equal(np.array([y for _, y in printed[stream]]), np.array([y for _, y in want]))

    # The same predictions came back to the board over the link, through the C decoder. Replies
    # go through a bounded writer: a daemon far behind (as under qemu's emulation) drops the ones
    # that do not fit and counts them, so every reply is either back or counted (the final summary).
    got = [line.split(",") for line in (tmp_path / "got.csv").read_text().splitlines()]
    dropped = int(re.findall(r" drops (\d+) ", daemon.log.read_text())[-1])
    assert len(got) + dropped == n_sent, (len(got), dropped, n_sent)
    back = {(int(g[0]), int(g[1]), tuple(np.float32(g[2:]).tolist())) for g in got}
    assert len(back) == len(got)
    assert back <= {(stream, seq, tuple(y.tolist())) for stream, ys in printed.items() for seq, y in ys}
