"""Serial faults seen on the daemon before the single-thread rewrite, replayed on real
pseudo-terminals against `edgelstm run` as a subprocess (output = "stdout": the predictions
are JSON lines in its log; the counters come from /metrics)."""

import os
import time

import numpy as np
import pytest
from daemon_helpers import (
    DaemonProcess,
    Pty,
    by_label,
    family_total,
    log_since_mark,
    offline,
    poll,
    readings,
    scrape,
    series,
    stdout_predictions,
    wait_log,
    wait_metrics,
)

from edgelstm.protocol import frame as framing
from edgelstm.protocol.payload import reading_frame

pytestmark = pytest.mark.integration

WRAP = 2**32


def serial_daemon(tmp_path, link, settings: str = "") -> DaemonProcess:
    daemon = DaemonProcess(tmp_path, extra=f'output = "stdout"\n[serial]\nport = "{link}"\n{settings}')
    daemon.mark()
    daemon.start(wait_connected=False)
    # the port is in raw mode from then on: bytes written before would be echoed and cooked
    assert wait_log(daemon, "open at", 20), log_since_mark(daemon)[-2000:]
    return daemon


def wait_predictions(daemon, n: int, timeout: float) -> dict:
    poll(lambda: len(stdout_predictions(daemon.log)) >= n, timeout)
    return stdout_predictions(daemon.log)


def assert_same(got: dict, want: dict) -> None:
    missing = sorted(set(want) - set(got))
    assert not missing, f"{len(missing)} of {len(want)} predictions missing, e.g. {missing[:5]}"
    for key, y in want.items():
        np.testing.assert_array_equal(got[key], y, err_msg=str(key))


def csv(sid: str, seq: int, x) -> bytes:
    return f"{sid},{seq},{','.join(repr(float(v)) for v in x)}\n".encode()


# -- 13 -----------------------------------------------------------------------------------------

POISON_LINES = {
    "json": [b'{"stream": "p", "seq": 0, "x": ' + b"[" * 1500 + b"]" * 1500 + b"}",   # past the recursion limit
             b'{"stream": "\xff\xfe", "seq": 0, "x": [1, 2, 3]}'],                     # not UTF-8
    "seq": [b'{"stream": "s00", "seq": ' + b"9" * 400 + b', "x": [1, 2, 3]}',
            b"s00," + b"9" * 400 + b",1,2,3"],
    "value": [b'{"stream": "s00", "seq": 1, "x": [' + b"1" * 400 + b", 2, 3]}",
              b"s00,1,\xff\xfe,2,3"],
    "stream": [b"\xff\xfe,0,1,2,3"],
}


def test_poison_lines_do_not_stop_the_reader(tmp_path):
    link = str(tmp_path / "ttyLINES")
    pty = Pty(link)
    try:
        daemon = serial_daemon(tmp_path, link, 'mode = "lines"\n')
        xs = readings(2, 40, seed=41)
        poison = [line for lines in POISON_LINES.values() for line in lines]
        for seq in range(40):
            for sid, x in xs.items():
                pty.write(csv(sid, seq, x[seq]))
            if seq % 5 == 2:                                   # 8 rounds of poison among the good lines
                pty.write(b"\n".join(poison) + b"\n")
        got = wait_predictions(daemon, 80, 20)
        want = {(sid, seq): y for sid, ys in offline(xs)[0].items() for seq, y in enumerate(ys)}
        m = wait_metrics(daemon, lambda m: family_total(m, "edgelstm_bad_payloads_total") >= 8 * len(poison), 5)
        assert by_label(m, "edgelstm_bad_payloads_total") == {r: 8 * len(v) for r, v in POISON_LINES.items()}
        assert_same(got, want)
        assert family_total(m, "edgelstm_predictions_total") == 80
        assert daemon.proc.poll() is None
        assert daemon.terminate() == 0
    finally:
        pty.close()


# -- 14 -----------------------------------------------------------------------------------------

def test_seq_wrapping_from_2_32_minus_1_to_0_is_not_a_reboot(tmp_path):
    link = str(tmp_path / "ttyFRAMES")
    pty = Pty(link)
    try:
        daemon = serial_daemon(tmp_path, link)
        x = readings(1, 30, seed=42)["s00"]
        seqs = [(WRAP - 15 + i) % WRAP for i in range(30)]      # ..., 2**32 - 1, 0, 1, ...
        control = readings(1, 5, seed=43)["s00"]              # stream 1 really reboots: 0..4, then 0..4 again
        for i, seq in enumerate(seqs):
            pty.write(framing.encode(reading_frame(0, seq, x[i], 20 * i)))
            if i < 10:
                pty.write(framing.encode(reading_frame(1, i % 5, control[i % 5], 20 * i)))
        got = wait_predictions(daemon, 30 + 5, 20)           # stream 1's second round has the same keys
        m = scrape(daemon)
        resets = {(labels["stream"], labels["reason"]): v for labels, v in series(m, "edgelstm_resets_total")}
        assert resets.get(("1", "reboot")) == 1, resets       # the counter does count a real reboot
        assert ("0", "reboot") not in resets, resets
        assert family_total(m, "edgelstm_gap_readings_total") == 0
        ys = offline({"0": x, "1": control})[0]
        assert_same(got, {**{("0", seq): ys["0"][i] for i, seq in enumerate(seqs)},
                          **{("1", s): ys["1"][s] for s in range(5)}})
        assert daemon.proc.poll() is None and daemon.terminate() == 0
    finally:
        pty.close()


# -- 15 -----------------------------------------------------------------------------------------

def fill_output_buffer(fd: int) -> int:
    """Write into the pty slave until the kernel takes no more: the board's side (the master)
    never reads, so every reply the daemon writes after this finds the buffer full."""
    os.set_blocking(fd, False)
    n = 0
    try:
        while True:
            n += os.write(fd, b"\xaa" * 1024)
    except BlockingIOError:
        pass
    finally:
        os.set_blocking(fd, True)
    return n


def test_a_board_that_never_reads_its_replies_does_not_slow_the_daemon(tmp_path):
    link = str(tmp_path / "ttyDEAF")
    pty = Pty(link)
    try:
        daemon = serial_daemon(tmp_path, link, "reply = true\n")
        assert fill_output_buffer(pty.slave) > 0
        xs = readings(3, 500, seed=44)
        wire = b"".join(framing.encode(reading_frame(i, seq, xs[sid][seq], seq))
                        for seq in range(500) for i, sid in enumerate(sorted(xs)))
        t0 = time.monotonic()
        pty.write(wire)
        got = wait_predictions(daemon, 1500, 15)
        elapsed = time.monotonic() - t0
        m = scrape(daemon)
        drops = by_label(m, "edgelstm_drops_total")
        assert len(got) == 1500, f"{len(got)} of 1500 predictions in {elapsed:.1f} s; drops {drops}"
        assert elapsed < 6.0, f"1500 readings took {elapsed:.1f} s: the loop waits on the board"
        ys = offline({str(i): xs[sid] for i, sid in enumerate(sorted(xs))})[0]
        assert_same(got, {(s, seq): y for s, yy in ys.items() for seq, y in enumerate(yy)})
        assert drops.get("serial_reply", 0) > 0, drops
        assert daemon.proc.poll() is None
        assert daemon.terminate() == 0
    finally:
        pty.close()
