"""The daemon's pipeline with the real model, driven directly with messages as the links hand
them over: order, duplicates, gaps, reboots, policies and acknowledgements."""

import numpy as np
import pytest
from conftest import ROOT

import edgelstm
from edgelstm.daemon.config import DaemonConfig, PolicyConfig, SerialConfig
from edgelstm.daemon.messages import HelloMsg, Origin, ReadingMsg, RejectedMsg, ResetMsg
from edgelstm.daemon.service import Daemon
from edgelstm.protocol.payload import Hello, Reading

MODEL = str(ROOT / "edgelstm" / "data" / "activity.elstm")
XS = np.random.default_rng(9).normal(size=(40, 3)).astype(np.float32)
EXPECTED = np.array([y.copy() for y in (lambda s: [s.step(x) for x in XS])(edgelstm.load(MODEL).stream())])


class RecordingLink:
    """An in-memory link: records the acks the daemon sends back to it."""

    name = "memory"

    def __init__(self):
        self.acked = []

    def ack(self, origin):
        self.acked.append(origin.ack_id)

    def reply(self, origin, seq, y):
        return True


LINK = RecordingLink()


class Outputs(dict):
    """(stream, seq) -> predictions made; .replays: (stream, seq) -> answers repeated."""

    def __init__(self):
        super().__init__()
        self.replays = {}

    def __call__(self, stream, seq, t_in, y, replay):
        (self.replays if replay else self).setdefault((stream, seq), []).append(y.copy())


def make_daemon(**policy):
    got = Outputs()
    cfg = DaemonConfig(model=MODEL, serial=SerialConfig(port="/dev/null"), output="stdout",
                       policy=PolicyConfig(stream_ttl_s=0, **policy)).validate()
    return Daemon(cfg, sink=got), got


def origin(ack=None, serial=False, link=LINK):
    return Origin(link, ack, 0 if serial else None, serial, 0.0)


def msg(seq, x=None, stream="a", boot=None, t=None, serial=False, ack=None):
    return ReadingMsg(stream, Reading(seq, XS[seq] if x is None else x, t, boot), origin(ack, serial))


def process(d, msgs, now=0.0):
    d.pipeline.handle(msgs, now)


def commit(d, now=0.0):
    d.ledger.tick(now, lambda: d.pipeline.snapshot(now), d.outputs)


def counter(d, name):
    return d.metrics.summary()[name]


def test_out_of_order_duplicates_and_acks():
    d, got = make_daemon()
    link = RecordingLink()
    order = [0, 1, 3, 2, 2, 5, 4, 1, 6]                 # 2 and 1 repeated (QoS 1 redelivery)
    process(d, [ReadingMsg("a", Reading(s, XS[s]), origin(s, link=link)) for s in order])
    assert sorted(got) == [("a", s) for s in range(7)] and all(len(v) == 1 for v in got.values())
    for s in range(7):
        np.testing.assert_array_equal(got[("a", s)][0], EXPECTED[s])
    assert counter(d, "duplicates") == 2 and counter(d, "gaps") == 0
    commit(d)
    assert sorted(link.acked) == sorted(order)               # every message acknowledged once handled


def test_a_reading_sent_again_gets_its_first_answer_and_steps_nothing():
    d, got = make_daemon(replay_window=4)
    process(d, [msg(s, boot=1) for s in range(8)])
    state = d.pipeline.bank.get_state("a").values.copy()
    process(d, [msg(5, boot=1), msg(7, boot=1), msg(2, boot=1)])   # 2 is older than the last 4 kept
    assert sorted(got.replays) == [("a", 5), ("a", 7)]
    for s in (5, 7):
        np.testing.assert_array_equal(got.replays[("a", s)][0], EXPECTED[s])
    np.testing.assert_array_equal(d.pipeline.bank.get_state("a").values, state)
    assert counter(d, "duplicates") == 3 and counter(d, "replays") == 2 and counter(d, "predictions") == 8
    process(d, [msg(0, boot=2), msg(1, boot=2)])          # a reboot: seqs start over
    assert d.pipeline.seq.tracks["a"].answers.lookup(5) is None   # so the old boot's answers are gone
    process(d, [msg(1, boot=2)])
    assert len(got[("a", 1)]) == 2 and len(got.replays[("a", 1)]) == 1
    np.testing.assert_array_equal(got.replays[("a", 1)][0], got[("a", 1)][-1])


def test_replay_can_be_turned_off():
    d, got = make_daemon(replay_window=0)
    process(d, [msg(0), msg(1), msg(1)])
    assert got.replays == {} and counter(d, "duplicates") == 1


def test_a_real_gap_is_released_after_the_timeout_and_counted():
    d, got = make_daemon(reorder_timeout_s=0.2)
    process(d, [msg(0), msg(1), msg(4)])
    assert ("a", 4) not in got                          # waiting for 2 and 3
    d.pipeline.handle([], 0.3)
    assert ("a", 4) in got and counter(d, "gaps") == 2
    process(d, [msg(2)])                                 # too late now: a duplicate, never applied
    assert ("a", 2) not in got and counter(d, "duplicates") == 1


def test_a_serial_gap_is_counted_at_once():
    """A serial link cannot reorder: a reading that skips ahead is applied immediately."""
    d, got = make_daemon(reorder_timeout_s=60)
    process(d, [msg(0, serial=True), msg(1, serial=True), msg(4, serial=True)])
    assert ("a", 4) in got and counter(d, "gaps") == 2 and d.pipeline.seq.held_count() == 0


def test_reboot_resets_the_stream():
    d, got = make_daemon()
    process(d, [msg(s, boot=1) for s in range(5)])
    process(d, [msg(0, boot=2), msg(1, boot=2)])          # new boot id: seq starts over
    fresh = edgelstm.load(MODEL).stream()
    np.testing.assert_array_equal(got[("a", 1)][-1], [fresh.step(XS[0]), fresh.step(XS[1])][1])
    serial, got2 = make_daemon()
    process(serial, [msg(s, serial=True) for s in range(5)] + [msg(0, serial=True)])
    assert len(got2[("a", 0)]) == 2                     # over serial, seq 0 again means a reboot


@pytest.mark.parametrize("policy", ["hold", "reset"])
def test_nonfinite_reading_policy(policy):
    d, got = make_daemon(nonfinite=policy)
    bad = XS[3].copy()
    bad[1] = np.nan
    process(d, [msg(0), msg(1), msg(2), msg(3, x=bad), msg(4)])
    assert ("a", 3) not in got and counter(d, "nonfinite") == 1
    ref = edgelstm.load(MODEL).stream()
    if policy == "hold":
        expected = [ref.step(XS[s]) for s in (0, 1, 2, 4)][-1]
    else:
        expected = ref.step(XS[4])
    np.testing.assert_array_equal(got[("a", 4)][0], expected)


def test_time_gap_resets_when_readings_are_too_far_apart():
    d, got = make_daemon(max_gap_s=5.0, gap="reset")
    process(d, [msg(0, t=100.0), msg(1, t=101.0), msg(2, t=200.0)])
    np.testing.assert_array_equal(got[("a", 2)][0], edgelstm.load(MODEL).stream().step(XS[2]))


def test_bad_payloads_and_streams_are_independent():
    d, got = make_daemon()
    process(d, [msg(0, stream="a"), RejectedMsg("json", origin()), msg(0, stream="b"),
                RejectedMsg("length", origin()), msg(1, stream="a")])
    assert d.metrics.summary()["bad_payloads"] == 2
    np.testing.assert_array_equal(got[("b", 0)][0], EXPECTED[0])
    np.testing.assert_array_equal(got[("a", 1)][0], EXPECTED[1])


def test_reset_and_hello_frames():
    d, got = make_daemon()
    process(d, [HelloMsg("a", Hello(7, 1, 3), origin(serial=True))] + [msg(s, serial=True) for s in range(3)])
    process(d, [ResetMsg("a", origin(serial=True)), msg(3, serial=True)])         # RESET: zero state
    np.testing.assert_array_equal(got[("a", 3)][0], edgelstm.load(MODEL).stream().step(XS[3]))
    process(d, [msg(4, serial=True), HelloMsg("a", Hello(8, 1, 3), origin(serial=True)), msg(0, serial=True)])
    np.testing.assert_array_equal(got[("a", 0)][-1], EXPECTED[0])
    assert d.metrics.resets.values[("a", "reboot")] == 1


def test_per_stream_cost_at_defaults_stays_under_8_kb():
    """README (memory): beyond its bank row, a live stream costs its position, its replay
    answers (replay_window x (4 x outputs + 16) bytes) and its metric series."""
    import tracemalloc
    cfg = DaemonConfig(model=MODEL, serial=SerialConfig(port="/dev/null"), output="stdout").validate()
    d = Daemon(cfg, sink=lambda *prediction: None)
    x = np.ones(3, np.float32)
    n = 500

    def streams(first):
        for seq in range(40):                           # more than replay_window: the ring is full
            process(d, [ReadingMsg(f"sensor-{i:05d}", Reading(seq, x, 1.0 + seq, 7), origin())
                        for i in range(first, first + n)])

    streams(0)                                          # one-time costs (kernel dispatch, histograms)
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    streams(n)                                          # the cost of n more streams
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    assert used / n <= 8 * 1024, f"{used / n:.0f} bytes per stream"


def test_a_model_with_labels_sends_label_and_p_and_a_reload_can_rename_them(tmp_path, capfd):
    """Predictions of a model converted with --labels carry its top class and that class's
    probability (the activity model's y are logits: p = softmax(y)[top]); a SIGHUP reload of the
    same weights with other names keeps the hash and the streams' state and sends the new names."""
    import json

    from edgelstm.model import deploy
    from edgelstm.model.names import OutputNames
    labels = ("still", "walking", "running")
    spec = deploy.load(MODEL)
    deploy.save(spec.with_names(OutputNames(labels=labels)), tmp_path / "m.elstm")
    cfg = DaemonConfig(model=str(tmp_path / "m.elstm"), serial=SerialConfig(port="/dev/null"), output="stdout",
                       policy=PolicyConfig(stream_ttl_s=0)).validate()
    d = Daemon(cfg)
    process(d, [msg(s) for s in range(3)] + [msg(1)])          # seq 1 twice: the second is a replay
    deploy.save(spec.with_names(OutputNames(outputs=("a", "b", "c"), units=("", "", "m"))), tmp_path / "m.elstm")
    d.reload()
    process(d, [msg(3)])
    out = [json.loads(line) for line in capfd.readouterr().out.splitlines()]
    assert [(o["seq"], o.get("replay", False)) for o in out] == [(0, False), (1, False), (2, False), (1, True),
                                                                 (3, False)]
    for o in out[:4]:
        y = EXPECTED[o["seq"]].astype(np.float64)
        assert o["label"] == labels[int(np.argmax(y))] and o["y"] == EXPECTED[o["seq"]].tolist()
        assert o["p"] == pytest.approx(np.exp(y - y.max()).max() / np.exp(y - y.max()).sum(), rel=1e-6)
        assert o["model"] == edgelstm.Model(spec).content_hash
    assert "label" not in out[4] and [out[4][k] for k in "abc"] == EXPECTED[3].tolist() == out[4]["y"]
