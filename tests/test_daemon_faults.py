"""Faults seen on the daemon before the single-thread rewrite, each replayed against a real
Mosquitto and the daemon as a subprocess (`edgelstm run`): the daemon stays up, counts the
bad input in /metrics, answers the good readings exactly as offline stepping does, and keeps
its connection, its session and its state."""

import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from urllib.parse import quote

import numpy as np
import pytest
from broker import Broker
from conftest import golden
from daemon_helpers import (
    _STARTED,
    MODEL,
    ROOT,
    Collector,
    DaemonProcess,
    Pty,
    Publisher,
    broker_connections,
    by_label,
    family_total,
    log_since_mark,
    offline,
    poll,
    readings,
    scrape,
    wait_log,
    wait_metrics,
)

from edgelstm.daemon import checkpoint
from edgelstm.protocol import frame as framing
from edgelstm.protocol.payload import reading_frame

pytestmark = pytest.mark.integration

SECRET = "s3cret/Pa55%w@rd"             # '/', '%' and '@' must be percent-encoded in a URL



def json_reading(seq, x, t=None) -> bytes:
    d = {"seq": seq, "x": [float(v) for v in x]}
    if t is not None:
        d["t"] = t
    return json.dumps(d).encode()


def assert_same(got: dict, want: dict, what: str = "") -> None:
    """Every expected (stream, seq) arrived, with exactly the expected prediction."""
    missing = sorted(set(want) - set(got))
    assert not missing, f"{what}{len(missing)} of {len(want)} predictions missing, e.g. {missing[:5]}"
    for key, y in want.items():
        np.testing.assert_array_equal(got[key], y, err_msg=f"{what}{key}")


def offline_keys(xs: dict, first_seq: int = 0) -> dict:
    """(stream, first_seq + i) -> prediction, each stream stepped alone from zero state."""
    ys, _ = offline(xs)
    return {(sid, first_seq + i): y for sid, yy in ys.items() for i, y in enumerate(yy)}


def handled(m: dict) -> float:
    """Readings that ended as a prediction or a capacity refusal."""
    return family_total(m, "edgelstm_predictions_total") + by_label(m, "edgelstm_drops_total").get("capacity", 0)


# -- 1 ------------------------------------------------------------------------------------------

def test_more_new_streams_in_one_burst_than_capacity(tmp_path, broker):
    """20 new streams at once into capacity 8: the excess is refused and counted, the daemon
    stays up; once the held streams are idle for evict_idle_s, new streams take their rows.
    Restarted while the broker holds another such burst for it: still up."""
    daemon = DaemonProcess(tmp_path, broker.url, extra="capacity = 8\n[policy]\nevict_idle_s = 0.5\n")
    daemon.mark()
    daemon.start()
    collector, pub = Collector(broker.port), Publisher(broker.port)
    xs = readings(20, 10, seed=21)
    pub.send_readings(xs)                                # 200 readings of 20 new streams, interleaved
    assert pub.wait_all(30)
    m = wait_metrics(daemon, lambda m: handled(m) >= 200, 30)
    assert daemon.proc.poll() is None, log_since_mark(daemon)[-3000:]
    assert handled(m) == 200, collector.shortfall(xs, daemon, broker)
    assert by_label(m, "edgelstm_drops_total").get("capacity", 0) > 0
    answered = family_total(m, "edgelstm_predictions_total")
    assert collector.wait_for(int(answered), 20)
    streams = {sid for sid, _ in collector.got}
    assert 8 <= len(streams) < 20, streams
    ys, _ = offline(xs)
    for sid in streams:                                   # a stream admitted at seq k is stepped from there on
        seqs = sorted(seq for s, seq in collector.got if s == sid)
        assert seqs == list(range(seqs[0], 10)), (sid, seqs)
        want = offline({sid: xs[sid][seqs[0]:]})[0][sid]
        for i, seq in enumerate(seqs):
            np.testing.assert_array_equal(collector.got[(sid, seq)], want[i], err_msg=f"{sid} {seq}")

    time.sleep(0.6)                                       # the held streams are now idle past evict_idle_s
    fresh = {f"new{i}": x for i, x in enumerate(readings(4, 10, seed=22).values())}
    pub.send_readings(fresh)
    assert pub.wait_all(30)
    assert collector.wait_for(int(answered) + 40, 20), collector.shortfall(fresh, daemon, broker)
    assert_same(collector.got, offline_keys(fresh), "new streams after eviction: ")
    m = scrape(daemon)
    assert by_label(m, "edgelstm_drops_total").get("evicted_capacity", 0) >= 4
    assert daemon.terminate() == 0

    burst = {f"burst{i}": x for i, x in enumerate(readings(20, 10, seed=23).values())}
    pub.send_readings(burst)                              # the broker holds these for the stopped daemon
    assert pub.wait_all(30)
    daemon.mark()
    daemon.start()
    m = wait_metrics(daemon, lambda m: handled(m) >= 200, 30)
    assert daemon.proc.poll() is None, log_since_mark(daemon)[-3000:]
    assert handled(m) == 200, m
    assert by_label(m, "edgelstm_drops_total").get("capacity", 0) > 0
    assert daemon.terminate() == 0
    collector.stop()
    pub.stop()


# -- 2 ------------------------------------------------------------------------------------------

def poison(i: int) -> tuple[str, bytes]:
    """(the bad_payloads reason it must be counted under, payload)."""
    digits = b"7" * 400
    kind = i % 5
    if kind == 0:
        depth = 30_000 if i % 250 == 0 else 2_000           # a few near max_packet_bytes, the rest 4 KB
        return "json", b'{"seq": 1, "x": ' + b"[" * depth + b"]" * depth + b"}"
    if kind == 1:
        return "seq", b'{"seq": ' + digits + b', "x": [0, 0, 0]}'
    if kind == 2:
        return "value", b'{"seq": 1, "x": [' + digits + b', 0, 0]}'
    if kind == 3:
        return "time", b'{"seq": 1, "t": ' + digits + b', "x": [0, 0, 0]}'
    return "json", b'{"seq": 1, "x": [0, 0, 0], "boot": ' + b"[" * 5000 + b"]" * 5000 + b"}"


def test_thousands_of_poison_payloads_beyond_receive_maximum(tmp_path, broker):
    """3000 undecodable messages (deep nesting, 400-digit numbers), 15 times receive_maximum,
    interleaved with 500 good readings: every good one is answered, every bad one counted and
    acknowledged: a fresh daemon on the same session gets none of them again."""
    settings = "queue_size = 200\n[policy]\nreorder_window = 50\n"
    daemon = DaemonProcess(tmp_path, broker.url, extra=settings, mqtt_extra="receive_maximum = 200")
    daemon.mark()
    daemon.start()
    collector, pub = Collector(broker.port), Publisher(broker.port)
    xs = readings(5, 100, seed=24)
    sent: dict[str, int] = {}

    def interleave(k):
        for j in range(6):
            reason, data = poison(6 * k + j)
            pub.send(f"sensors/poison{j}/reading", data)
            sent[reason] = sent.get(reason, 0) + 1

    pub.send_readings(xs, between=interleave)
    assert sum(sent.values()) == 3000
    assert pub.wait_all(60)
    assert collector.wait_for(500, 60), collector.shortfall(xs, daemon, broker)
    m = wait_metrics(daemon, lambda m: family_total(m, "edgelstm_bad_payloads_total") >= 3000, 30)
    assert by_label(m, "edgelstm_bad_payloads_total") == sent
    assert family_total(m, "edgelstm_predictions_total") == 500
    assert daemon.proc.poll() is None
    assert_same(collector.got, offline_keys(xs))
    assert daemon.terminate() == 0

    daemon.mark()
    daemon.start()                                       # same client id: the broker's session for it
    pub.send("sensors/sentinel/reading", json_reading(0, [0.5, 0.25, -1.0]))
    # the broker delivers what it still holds for the session before this newer message
    assert collector.wait_for(501, 20), "the reading sent after the restart was not answered"
    m = scrape(daemon)
    assert family_total(m, "edgelstm_bad_payloads_total") == 0, by_label(m, "edgelstm_bad_payloads_total")
    assert family_total(m, "edgelstm_predictions_total") == 1
    assert family_total(m, "edgelstm_duplicates_total") == 0
    assert daemon.terminate() == 0
    collector.stop()
    pub.stop()


# -- 3 ------------------------------------------------------------------------------------------

def test_stream_levels_unsafe_in_the_output_topic(tmp_path, broker):
    """What Mosquitto lets through on the input topic but cannot name a stream: a level of 300
    bytes ("stream") and an empty level ("topic"). A control character (\\x01) or bytes that
    are not UTF-8 in a topic never reach the daemon: Mosquitto disconnects the publisher for a
    malformed packet (checked by hand with a raw MQTT client; paho cannot send such topics at
    all: it encodes every topic as UTF-8). An odd but valid level (spaces, accents) is answered."""
    daemon = DaemonProcess(tmp_path, broker.url)
    daemon.mark()
    daemon.start()
    collector, pub = Collector(broker.port), Publisher(broker.port)
    xs = readings(2, 30, seed=25)
    odd = "salle à manger"
    bad = 0

    def interleave(k):
        nonlocal bad
        if k % 3 == 0 and bad < 20:
            pub.send(f"sensors/{'a' * 300}/reading", json_reading(k, [0, 0, 0]))
            pub.send("sensors//reading", json_reading(k, [0, 0, 0]))
            bad += 1

    pub.send_readings(xs, between=interleave)
    for seq, x in enumerate(xs["s00"][:5]):
        pub.send(f"sensors/{odd}/reading", json_reading(seq, x))
    assert pub.wait_all(30)
    assert collector.wait_for(65, 30), collector.shortfall(xs, daemon, broker)
    m = wait_metrics(daemon, lambda m: family_total(m, "edgelstm_bad_payloads_total") >= 40, 10)
    assert by_label(m, "edgelstm_bad_payloads_total") == {"stream": 20, "topic": 20}
    want = offline_keys(xs)
    want.update({(odd, seq): y for (sid, seq), y in offline_keys({"s00": xs["s00"][:5]}).items()})
    assert_same(collector.got, want)
    assert daemon.proc.poll() is None
    assert broker_connections(broker, daemon.client_id) == 1, "the daemon lost its connection"
    assert daemon.terminate() == 0
    collector.stop()
    pub.stop()


def test_serial_stream_ids_the_broker_refuses_in_a_topic(tmp_path, broker):
    """Serial input, MQTT output: a stream id goes into the output topic, so an id that Mosquitto
    refuses in a topic name (C1 control U+0085, non-characters U+FFFF and U+FDD0, which MQTT says
    SHOULD NOT appear and Mosquitto treats as a malformed packet) must be refused and counted
    ("stream") like \\x01 or 300 bytes, not published: publishing it gets the daemon's own
    connection closed by the broker, and the QoS 1 resend after each reconnect closes it again."""
    link = str(tmp_path / "ttyLINES")
    pty = Pty(link)
    try:
        daemon = DaemonProcess(tmp_path, broker.url, extra=f'[serial]\nport = "{link}"\nmode = "lines"\n',
                               mqtt_extra='subscribe = ""')
        daemon.mark()
        daemon.start(wait_connected=False)
        assert wait_log(daemon, "mqtt: connected", 20) and wait_log(daemon, "open at", 20)
        collector = Collector(broker.port)
        xs = readings(2, 20, seed=26)

        def good(lo, hi):
            for seq in range(lo, hi):
                for sid, x in xs.items():
                    pty.write(f"{sid},{seq},{','.join(repr(float(v)) for v in x[seq])}\n".encode())

        good(0, 10)
        assert collector.wait_for(20, 20), collector.shortfall(xs, daemon, broker)
        refused = ["\u0085", "\uffff", "\ufdd0", "\u0001", "a" * 300]
        for i, sid in enumerate(refused):
            pty.write(json.dumps({"stream": sid, "seq": i, "x": [0, 0, 0]}).encode() + b"\n")
        pty.write(b"\xff\xfe,0,1,2,3\n")                # a CSV stream id that is not UTF-8
        good(10, 20)
        answered = collector.wait_for(40, 10)
        m = wait_metrics(daemon, lambda m: family_total(m, "edgelstm_bad_payloads_total") >= 6, 5)
        time.sleep(1.0)                                  # a reconnect loop shows within a second (backoff 0.1-0.5 s)
        connections = broker_connections(broker, daemon.client_id)
        about_daemon = [ln for ln in (broker.dir / "mosquitto.log").read_text().splitlines() if daemon.client_id in ln]
        assert by_label(m, "edgelstm_bad_payloads_total") == {"stream": 6}
        assert connections == 1, f"the broker closed the daemon's connection {connections - 1} times: " + \
            "\n".join(about_daemon[-6:])
        assert answered, f"{len(collector.got)} of 40 predictions"
        assert_same(collector.got, offline_keys(xs))
        assert daemon.proc.poll() is None
        assert daemon.terminate() == 0
        collector.stop()
    finally:
        pty.close()


# -- 4 ------------------------------------------------------------------------------------------

def test_seq_beyond_u32_refused_and_a_far_jump_does_not_swallow_the_next_readings(tmp_path, broker):
    daemon = DaemonProcess(tmp_path, broker.url, extra='[policy]\ngap = "reset"\n')
    daemon.mark()
    daemon.start()
    collector, pub = Collector(broker.port), Publisher(broker.port)
    x = readings(1, 20, seed=27)["s00"]
    for seq in range(10):
        pub.send("sensors/s00/reading", json_reading(seq, x[seq]))
    assert collector.wait_for(10, 20)
    for seq in (2**32, 2**32 + 10, 2**40, -1):
        pub.send("sensors/s00/reading", json_reading(seq, [9, 9, 9]))
    jump = 9 + 2**31
    pub.send("sensors/s00/reading", json_reading(jump, [0.1, 0.2, 0.3]))
    for seq in range(10, 20):                              # the sender's genuine next readings
        pub.send("sensors/s00/reading", json_reading(seq, x[seq]))
    assert pub.wait_all(20)
    ok = collector.wait_for(21, 20)
    m = scrape(daemon)
    assert by_label(m, "edgelstm_bad_payloads_total") == {"seq": 4}
    assert ok, (f"genuine readings after the jump not answered; duplicates "
                f"{family_total(m, 'edgelstm_duplicates_total')}: {collector.shortfall({'s00': x}, daemon, broker)}")
    assert family_total(m, "edgelstm_duplicates_total") == 0
    assert family_total(m, "edgelstm_resyncs_total") >= 1
    want = offline_keys({"s00": x[:10]})
    want.update(offline_keys({"s00": x[10:]}, first_seq=10))    # gap = "reset": the resync restarts the state
    assert_same(collector.got, want)
    assert ("s00", jump) in collector.got
    assert daemon.proc.poll() is None and daemon.terminate() == 0
    collector.stop()
    pub.stop()


# -- 5 ------------------------------------------------------------------------------------------

def test_two_daemons_with_one_client_id_do_not_take_the_session_in_a_loop(tmp_path, broker):
    client_id = f"edgelstm-shared-{uuid.uuid4().hex[:6]}"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = DaemonProcess(tmp_path / "a", broker.url, client_id=client_id)
    first.mark()
    first.start()
    second = DaemonProcess(tmp_path / "b", broker.url, client_id=client_id)
    second.mark()
    second.start()
    time.sleep(5.0)                                       # the window a take-over loop would show in
    connections = broker_connections(broker, client_id)
    errors = [ln for ln in first.log.read_text().splitlines() if " ERROR " in ln]
    # first, second (takes the session over), first once more (finds second's newer announcement
    # and steps back), second again: four, then no more
    assert connections <= 4, f"the daemons took the session from each other: {connections} connections in 5 s"
    assert len(errors) == 1 and client_id in errors[0], errors
    collector, pub = Collector(broker.port), Publisher(broker.port)
    xs = readings(2, 10, seed=28)
    pub.send_readings(xs)
    assert collector.wait_for(20, 20), collector.shortfall(xs, second, broker)
    assert_same(collector.got, offline_keys(xs))
    assert second.proc.poll() is None
    assert second.terminate() == 0
    first.terminate()
    collector.stop()
    pub.stop()


# -- 6 ------------------------------------------------------------------------------------------

def test_a_second_daemon_on_the_same_checkpoint_exits_with_one_line(tmp_path, broker):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = DaemonProcess(tmp_path / "a", broker.url)
    first.mark()
    first.start()
    second = DaemonProcess(tmp_path / "b", broker.url)
    second.config.write_text(second.config.read_text().replace(str(second.checkpoint), str(first.checkpoint)))
    out = subprocess.run([sys.executable, "-m", "edgelstm", "run", "-c", str(second.config)], capture_output=True,
                         text=True, timeout=120, cwd=ROOT)
    assert out.returncode != 0
    text = out.stdout + out.stderr
    assert "Traceback" not in text, text
    about_lock = [ln for ln in text.splitlines() if str(first.checkpoint) in ln]
    assert len(about_lock) == 1, text
    assert "in use" in about_lock[0], about_lock
    assert first.proc.poll() is None
    collector, pub = Collector(broker.port), Publisher(broker.port)
    xs = readings(2, 10, seed=29)
    pub.send_readings(xs)
    assert collector.wait_for(20, 20), collector.shortfall(xs, first, broker)
    assert first.terminate() == 0
    collector.stop()
    pub.stop()


# -- 7 ------------------------------------------------------------------------------------------

def test_credentials_in_the_url_connect_and_never_show(tmp_path):
    (tmp_path / "broker").mkdir()
    broker = Broker(tmp_path / "broker", user=("edge", SECRET)).start()
    encoded = quote(SECRET, safe="")
    try:
        url = f"mqtt://edge:{encoded}@127.0.0.1:{broker.port}"
        daemon = DaemonProcess(tmp_path, url)
        daemon.mark()
        daemon.start()
        auth = ("edge", SECRET)
        collector, pub = Collector(broker.port, auth=auth), Publisher(broker.port, auth=auth)
        xs = readings(2, 10, seed=30)
        pub.send_readings(xs)
        assert collector.wait_for(20, 20), collector.shortfall(xs, daemon, broker)
        assert daemon.terminate() == 0
        out = subprocess.run([sys.executable, "-m", "edgelstm", "check-config", "-c", str(daemon.config)],
                             capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert out.returncode == 0, out.stderr
        shown = out.stdout + out.stderr
        assert "edge:***@127.0.0.1" in shown
        for text in (shown, daemon.log.read_text()):
            assert SECRET not in text and encoded not in text
        collector.stop()
        pub.stop()
    finally:
        broker.stop()


# -- 8 ------------------------------------------------------------------------------------------

def test_run_from_flags_alone_answers_and_says_once_that_state_is_not_kept(tmp_path, broker):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    log = tmp_path / "run.log"
    with open(log, "ab") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "edgelstm", "run", "--model", str(MODEL), "--mqtt", broker.url,
                                 "--in", "sensors/+/reading", "--out", "sensors/{stream}/prediction"],
                                stdout=fh, stderr=subprocess.STDOUT, cwd=cwd,
                                env=dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT)))
    _STARTED.append(proc)
    assert poll(lambda: "mqtt: subscribed" in log.read_text() or proc.poll() is not None, 60), log.read_text()
    assert proc.poll() is None, log.read_text()
    collector, pub = Collector(broker.port), Publisher(broker.port)
    xs = readings(3, 20, seed=31)
    pub.send_readings(xs)
    assert collector.wait_for(60, 20), collector.shortfall(xs, None, broker)
    assert_same(collector.got, offline_keys(xs))
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0
    text = log.read_text()
    assert sum("no checkpoint configured" in ln for ln in text.splitlines()) == 1, text
    assert os.listdir(cwd) == []                             # nothing persisted
    collector.stop()
    pub.stop()


# -- 9 ------------------------------------------------------------------------------------------

def test_sighup_to_a_model_of_another_input_size_keeps_the_old_one(tmp_path, broker):
    from edgelstm.model import deploy
    from edgelstm.model.loader import load_spec
    model = tmp_path / "model.elstm"
    shutil.copy(MODEL, model)
    weights, _, _ = golden("gru_2layer_head")                # 8 inputs; the running model takes 3
    np.savez(tmp_path / "other.npz", **weights)
    deploy.save(load_spec(str(tmp_path / "other.npz")), str(tmp_path / "other.elstm"))
    daemon = DaemonProcess(tmp_path, broker.url)
    daemon.config.write_text(daemon.config.read_text().replace(str(MODEL), str(model)))
    daemon.mark()
    daemon.start()
    collector, pub = Collector(broker.port), Publisher(broker.port)
    xs = readings(3, 40, seed=32)
    pub.send_readings({sid: x[:20] for sid, x in xs.items()})
    assert collector.wait_for(60, 20)
    shutil.copy(tmp_path / "other.elstm", model)
    daemon.proc.send_signal(signal.SIGHUP)
    assert wait_log(daemon, "reload refused", 30), log_since_mark(daemon)[-2000:]
    model.write_bytes(b"not a model at all")
    daemon.proc.send_signal(signal.SIGHUP)
    assert wait_log(daemon, "reload failed", 30), log_since_mark(daemon)[-2000:]
    errors = [ln for ln in log_since_mark(daemon).splitlines() if " ERROR " in ln]
    assert len(errors) == 2, errors
    for seq in range(20, 40):
        for sid, x in xs.items():
            pub.send(f"sensors/{sid}/reading", json_reading(seq, x[seq]))
    assert collector.wait_for(120, 20), collector.shortfall(xs, daemon, broker)
    assert_same(collector.got, offline_keys(xs))           # the old model, its state kept throughout
    assert daemon.proc.poll() is None and daemon.terminate() == 0
    collector.stop()
    pub.stop()


def small_filesystem(path):
    """Mount a 256 KiB tmpfs at `path` (root only); False where mounting is not possible here."""
    path.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def fill(directory) -> None:
    """Use up the free space of the filesystem holding `directory`."""
    fd = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)


def test_checkpoint_writes_failing_for_real_are_counted_and_leave_no_temp_files(tmp_path, broker):
    small = tmp_path / "small"
    if not small_filesystem(small):
        pytest.skip("cannot mount a small tmpfs here (needs root and mount)")
    try:
        daemon = DaemonProcess(tmp_path, broker.url)
        ckpt = small / "state.ckpt"
        daemon.config.write_text(daemon.config.read_text().replace(str(daemon.checkpoint), str(ckpt)))
        daemon.mark()
        daemon.start()
        collector, pub = Collector(broker.port), Publisher(broker.port)
        xs = readings(3, 90, seed=33)

        def send(lo, hi):
            for seq in range(lo, hi):
                for sid, x in xs.items():
                    pub.send(f"sensors/{sid}/reading", json_reading(seq, x[seq]))

        send(0, 30)
        assert collector.wait_for(90, 20)
        assert poll(lambda: ckpt.exists(), 10)

        def failures():
            return family_total(scrape(daemon), "edgelstm_checkpoint_failures_total")

        fill(small)                                           # disk full: ENOSPC
        send(30, 60)
        assert collector.wait_for(180, 20), "readings not answered while checkpoints fail"
        assert poll(lambda: failures() > 0, 10), log_since_mark(daemon)[-2000:]
        (small / "filler").unlink()
        assert wait_log(daemon, "written again", 10)
        # read-only (EROFS): a read-only bind mount over the directory; the daemon's open lock
        # file keeps the filesystem itself from being remounted read-only
        subprocess.run(["mount", "--bind", str(small), str(small)], check=True)
        subprocess.run(["mount", "-o", "remount,bind,ro", str(small)], check=True)
        before = failures()
        send(60, 90)
        assert collector.wait_for(270, 20), "readings not answered while checkpoints fail"
        assert poll(lambda: failures() > before, 10)
        errors = [ln for ln in log_since_mark(daemon).splitlines() if " ERROR " in ln and "checkpoint" in ln]
        assert len(errors) == 2, errors                      # once per failing spell, not once per retry
        assert daemon.proc.poll() is None
        subprocess.run(["umount", str(small)], check=True)           # writable again
        assert daemon.terminate() == 0
        leftovers = [p.name for p in small.iterdir() if p.name not in ("state.ckpt", "state.ckpt.lock")]
        assert leftovers == [], leftovers
        assert_same(collector.got, offline_keys(xs))
        ck = checkpoint.load(str(ckpt))
        assert sorted(s["last_seq"] for s in ck.streams) == [89, 89, 89]
        collector.stop()
        pub.stop()
    finally:
        for _ in range(2):                                   # the bind mount if still there, then the tmpfs
            subprocess.run(["umount", "-l", str(small)], capture_output=True)


# -- 10 -----------------------------------------------------------------------------------------

def test_a_checkpoint_with_more_streams_than_capacity(tmp_path, broker):
    daemon = DaemonProcess(tmp_path, broker.url, extra="capacity = 50\n")
    daemon.mark()
    daemon.start()
    collector, pub = Collector(broker.port), Publisher(broker.port)
    xs = readings(40, 10, seed=34)
    pub.send_readings({sid: x[:5] for sid, x in xs.items()})
    assert collector.wait_for(200, 30)
    recent = sorted(xs)[30:]                                  # seen last: the ten a smaller bank keeps
    time.sleep(0.3)
    for sid in recent:
        pub.send(f"sensors/{sid}/reading", json_reading(5, xs[sid][5]))
    assert collector.wait_for(210, 20)
    assert daemon.terminate() == 0
    assert len(checkpoint.load(str(daemon.checkpoint)).streams) == 40

    daemon.config.write_text(daemon.config.read_text().replace("capacity = 50", "capacity = 10"))
    daemon.mark()
    daemon.start()
    text = log_since_mark(daemon)
    warnings = [ln for ln in text.splitlines() if " WARNING " in ln and "capacity" in ln]
    assert len(warnings) == 1 and "40" in warnings[0], text[-2000:]
    assert "restored 10 streams" in text
    for seq in range(6, 10):
        for sid in recent:
            pub.send(f"sensors/{sid}/reading", json_reading(seq, xs[sid][seq]))
    pub.send("sensors/s00/reading", json_reading(5, xs["s00"][5]))     # forgotten; the bank is full
    assert collector.wait_for(250, 20), collector.shortfall({sid: xs[sid] for sid in recent}, daemon, broker)
    assert_same(collector.got, {k: v for k, v in offline_keys(xs).items() if k[0] in recent})
    m = wait_metrics(daemon, lambda m: "capacity" in by_label(m, "edgelstm_drops_total"), 10)
    assert by_label(m, "edgelstm_drops_total").get("capacity") == 1
    assert daemon.proc.poll() is None
    assert m.get("edgelstm_streams") == 10, "the edgelstm_streams gauge does not show the streams held"
    assert daemon.terminate() == 0
    collector.stop()
    pub.stop()


# -- 11 -----------------------------------------------------------------------------------------

def test_mqtt_predictions_count_no_serial_reply_drops(tmp_path, broker):
    link = str(tmp_path / "ttyBOARD")
    pty = Pty(link)
    try:
        daemon = DaemonProcess(tmp_path, broker.url, extra=f'[serial]\nport = "{link}"\nreply = true\n')
        daemon.mark()
        daemon.start()
        assert wait_log(daemon, "open at", 20)
        collector, pub = Collector(broker.port), Publisher(broker.port)
        xs = readings(3, 30, seed=35)
        pub.send_readings(xs)
        assert collector.wait_for(90, 20), collector.shortfall(xs, daemon, broker)
        board = readings(1, 5, seed=36)["s00"]
        for seq, x in enumerate(board):
            pty.write(framing.encode(reading_frame(7, seq, x)))
        decoder, replies = framing.FrameDecoder(), []
        deadline = time.time() + 10
        while len(replies) < 5 and time.time() < deadline:
            try:
                replies += decoder.feed(os.read(pty.master, 4096))
            except BlockingIOError:
                time.sleep(0.02)
        want = offline({"7": board})[0]["7"]
        assert [(f.type, f.stream, f.seq) for f in replies] == [(framing.MsgType.PREDICTION, 7, s) for s in range(5)]
        for f in replies:
            np.testing.assert_array_equal(np.frombuffer(f.payload, "<f4"), want[f.seq])
        assert collector.wait_for(95, 10)
        assert_same(collector.got, {**offline_keys(xs), **{("7", s): want[s] for s in range(5)}})
        m = scrape(daemon)
        assert "serial_reply" not in by_label(m, "edgelstm_drops_total"), by_label(m, "edgelstm_drops_total")
        assert daemon.terminate() == 0
        collector.stop()
        pub.stop()
    finally:
        pty.close()


# -- 12 -----------------------------------------------------------------------------------------

def check_config(config) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgelstm", "check-config", "-c", str(config)],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)


def assert_one_line_error(out: subprocess.CompletedProcess, *words: str) -> None:
    lines = [ln for ln in (out.stdout + out.stderr).splitlines() if ln.strip()]
    assert out.returncode == 1, (out.returncode, lines)
    assert len(lines) == 1 and "Traceback" not in lines[0], lines
    for word in words:
        assert word in lines[0], lines


def test_check_config_refuses_an_unknown_placeholder_and_a_busy_metrics_port(tmp_path):
    daemon = DaemonProcess(tmp_path, "mqtt://127.0.0.1:1883")
    good = daemon.config.read_text()
    assert check_config(daemon.config).returncode == 0
    daemon.config.write_text(good.replace('[mqtt]\n', '[mqtt]\npublish = "sensors/{device}/prediction"\n'))
    assert_one_line_error(check_config(daemon.config), "{device}")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", daemon.metrics_port))
        busy.listen()
        daemon.config.write_text(good)
        assert_one_line_error(check_config(daemon.config), str(daemon.metrics_port), "in use")


def test_a_metrics_port_taken_before_the_daemon_binds_it_is_replaced(tmp_path, broker):
    """DaemonProcess picks a free port, and another process can take it before the daemon starts
    (tests running side by side): the daemon refuses it, and the helper starts it on another."""
    daemon = DaemonProcess(tmp_path, broker.url)
    taken = daemon.metrics_port
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", taken))
        busy.listen()
        daemon.start()
        assert daemon.metrics_port != taken and f"metrics_port = {daemon.metrics_port}\n" in daemon.config.read_text()
        assert "in use" in daemon.log.read_text() and daemon.total("edgelstm_readings_total") == 0
    assert daemon.terminate() == 0
