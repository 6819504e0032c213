"""The daemon against a real Mosquitto, as a subprocess, fed by a real MQTT client."""

import json
import threading
import time

import numpy as np
import pytest
from daemon_helpers import Collector, DaemonProcess, Publisher, expected_keys, offline, readings

from edgelstm.daemon import checkpoint

pytestmark = pytest.mark.integration


def assert_matches_offline(collector, xs, ckpt_path):
    ys, states = offline(xs)
    expected = expected_keys(xs)
    missing = expected - set(collector.got)
    assert not missing, f"{len(missing)} predictions never arrived, e.g. {sorted(missing)[:5]}"
    for (sid, seq), y in collector.got.items():
        np.testing.assert_array_equal(y, ys[sid][seq], err_msg=f"stream {sid} seq {seq}")
    ck = checkpoint.load(str(ckpt_path))
    by_id = {m["id"]: (m, v) for m, v in zip(ck.streams, ck.states)}
    for sid, x in xs.items():
        meta, values = by_id[sid]
        assert meta["last_seq"] == len(x) - 1
        np.testing.assert_array_equal(values, states[sid], err_msg=f"final state of {sid}")


def test_10k_readings_over_20_streams_match_offline(tmp_path, broker):
    xs = readings(20, 500)
    daemon = DaemonProcess(tmp_path, broker.url).start()
    collector, pub = Collector(broker.port), Publisher(broker.port)
    pub.send_readings(xs, binary_every=3)
    assert pub.wait_all(60)
    assert collector.wait_for(10_000, 60), collector.shortfall(xs, daemon, broker)
    assert daemon.total("edgelstm_predictions_total") == 10_000
    assert daemon.total("edgelstm_duplicates_total") == 0
    assert daemon.terminate() == 0 and daemon.stop_seconds < 5
    assert_matches_offline(collector, xs, daemon.checkpoint)
    collector.stop()
    pub.stop()


def test_lingering_for_more_input_changes_no_prediction(tmp_path, broker):
    """linger_s > 0 gathers more readings per turn (paced readings arrive apart); every one is
    still answered exactly as offline, each stream stepped once per reading."""
    xs = readings(5, 200, seed=4)
    daemon = DaemonProcess(tmp_path, broker.url, extra="linger_s = 0.002").start()
    collector, pub = Collector(broker.port), Publisher(broker.port)
    pub.send_readings(xs, rate=2000)
    assert collector.wait_for(1_000, 60), collector.shortfall(xs, daemon, broker)
    assert daemon.terminate() == 0
    assert_matches_offline(collector, xs, daemon.checkpoint)
    collector.stop()
    pub.stop()


def test_a_shared_subscription_names_each_stream_by_its_topic(tmp_path, broker):
    """$share/GROUP/filter: the broker delivers the filter's topics, without the prefix."""
    xs = readings(3, 50, seed=5)
    daemon = DaemonProcess(tmp_path, broker.url, mqtt_extra='subscribe = "$share/edgelstm/sensors/+/reading"').start()
    collector, pub = Collector(broker.port), Publisher(broker.port)
    pub.send_readings(xs)
    assert collector.wait_for(150, 30), collector.shortfall(xs, daemon, broker)
    assert daemon.total("edgelstm_bad_payloads_total") == 0
    assert daemon.terminate() == 0
    assert_matches_offline(collector, xs, daemon.checkpoint)
    collector.stop()
    pub.stop()


def test_a_broker_slower_than_the_daemon_gets_back_pressure_not_drops(tmp_path, broker):
    """One prediction in flight and room for 5 more: the daemon outruns the broker's
    confirmations at once. While connected it must wait for room, not drop predictions."""
    xs = readings(10, 200)
    daemon = DaemonProcess(tmp_path, broker.url, mqtt_extra="max_inflight_out = 1\nmax_queued_out = 5").start()
    collector, pub = Collector(broker.port), Publisher(broker.port)
    pub.send_readings(xs)
    assert pub.wait_all(60)
    assert collector.wait_for(2_000, 60), collector.shortfall(xs, daemon, broker)
    assert daemon.total("edgelstm_drops_total") == 0
    assert daemon.terminate() == 0 and daemon.stop_seconds < 5
    assert_matches_offline(collector, xs, daemon.checkpoint)
    collector.stop()
    pub.stop()


def test_broker_killed_10_times_loses_nothing_applies_nothing_twice(tmp_path, broker):
    xs = readings(20, 250, seed=1)
    # The sender re-sends after a few seconds; held readings must wait that long for the lost one.
    # Its re-sends reach back as far as a broker restart lost: at 75 readings/s per stream that can
    # pass the default replay_window (32), and a re-send beyond it is dropped as a duplicate instead
    # of answered, so the window is sized to this sender (README "Memory": its cost per stream).
    daemon = DaemonProcess(tmp_path, broker.url,
                           extra="[policy]\nreorder_timeout_s = 60.0\nreplay_window = 256").start()
    collector, pub = Collector(broker.port), Publisher(broker.port)
    kills = []

    def killer():
        for _ in range(10):
            time.sleep(0.4)
            broker.kill()
            time.sleep(0.15)
            broker.start()
            kills.append(time.time())

    t = threading.Thread(target=killer)
    t.start()
    pub.send_readings(xs, rate=1500)
    t.join()
    assert len(kills) == 10
    assert pub.wait_all(90), "publisher could not deliver every reading"
    # Mosquitto sends PUBACK before it saves, so each SIGKILL can lose readings and predictions
    # it had acknowledged. The sender re-sends readings left unanswered; the daemon applies none
    # twice and answers a repeat with its first prediction, so in the end nothing is missing.
    resent = pub.resend_unanswered(xs, collector, timeout=90)
    assert collector.wait_for(5000, 10), f"{len(collector.got)} of 5000 predictions ({resent} re-sent)"
    time.sleep(0.5)
    applied = daemon.total("edgelstm_predictions_total")
    assert applied == 5000, f"{applied} readings applied to state; {resent} re-sent"
    assert daemon.total("edgelstm_gap_readings_total") == 0
    assert daemon.terminate() == 0
    assert_matches_offline(collector, xs, daemon.checkpoint)


def test_daemon_sigkilled_5_times_then_sigterm_continues_exactly(tmp_path, broker):
    xs = readings(10, 400, seed=2)
    daemon = DaemonProcess(tmp_path, broker.url)
    daemon.mark()
    daemon.start()
    collector, pub = Collector(broker.port), Publisher(broker.port)
    restarts = []

    def restarter():
        for i in range(5):
            time.sleep(0.6)
            daemon.kill()
            daemon.mark()
            daemon.start()
            restarts.append(i)

    t = threading.Thread(target=restarter)
    t.start()
    pub.send_readings(xs, rate=1000)
    t.join()
    assert pub.wait_all(60)
    assert collector.wait_for(4000, 90), f"{len(collector.got)} of 4000 predictions"
    assert daemon.terminate() == 0
    # after the SIGTERM, a restart continues exactly where the uninterrupted run would be
    more = readings(10, 50, seed=3)
    daemon.mark()
    daemon.start()
    pub2 = Publisher(broker.port)
    for seq in range(50):
        for sid, x in more.items():
            pub2.send(f"sensors/{sid}/reading", json.dumps({"seq": 400 + seq, "x": x[seq].tolist()}).encode())
    assert pub2.wait_all(30) and collector.wait_for(4500, 60)
    assert daemon.terminate() == 0
    full = {sid: np.vstack([xs[sid], more[sid]]) for sid in xs}
    assert_matches_offline(collector, full, daemon.checkpoint)
    assert len(restarts) == 5


def test_malformed_payloads_are_counted_exactly_and_hurt_nothing(tmp_path, broker):
    xs = readings(5, 200, seed=4)
    daemon = DaemonProcess(tmp_path, broker.url).start()
    collector, pub = Collector(broker.port), Publisher(broker.port)
    bad_kinds = [b"{not json", json.dumps({"seq": 1, "x": [1, 2]}).encode(), b"\xb1\x00\x01",
                 json.dumps({"seq": "x", "x": [1, 2, 3]}).encode()]
    sent = {"json": 0, "length": 0, "seq": 0, "nan": 0, "huge": 0}

    def interleave(k):
        if k % 1 == 0 and sum(sent.values()) < 1000:
            i = sum(sent.values())
            if i % 100 == 99:
                pub.send("sensors/bad/reading", b"x" * (5 * 1024 * 1024))     # 5 MB
                sent["huge"] += 1
            elif i % 5 == 4:
                pub.send(f"sensors/nan{i}/reading", json.dumps({"seq": 0, "x": [float("nan"), 0, 0]}).encode())
                sent["nan"] += 1
            else:
                kind = i % 4
                pub.send(f"sensors/bad{i}/reading", bad_kinds[kind])
                sent[["json", "length", "length", "seq"][kind]] += 1

    pub.send_readings(xs, between=interleave)
    assert sum(sent.values()) == 1000
    assert pub.wait_all(60)
    assert collector.wait_for(1000, 60)
    time.sleep(1.0)
    m = daemon.metrics()
    bad = {k.split('"')[1]: v for k, v in m.items() if k.startswith("edgelstm_bad_payloads_total")}
    assert bad == {"json": sent["json"], "length": sent["length"], "seq": sent["seq"]}, (bad, sent)
    nonfinite = sum(v for k, v in m.items() if k.startswith("edgelstm_nonfinite_readings_total"))
    assert nonfinite == sent["nan"]
    # 5 MB messages exceed the Maximum Packet Size the daemon announced: the broker never sends them
    assert daemon.proc.poll() is None
    assert daemon.terminate() == 0
    assert_matches_offline(collector, xs, daemon.checkpoint)
