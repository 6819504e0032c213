"""Checkpoint snapshots as deltas (daemon/snapshots.py): the image the writer builds from the
loop's deltas is, at every commit, the checkpoint a full snapshot would have given, through
new streams, reboots, evictions (idle and for capacity), non-finite readings and model swaps;
and a commit copies only the streams that changed."""

import math
import time

import numpy as np
from test_daemon_logic import LINK, MODEL, Outputs

import edgelstm
from edgelstm.daemon.config import DaemonConfig, PolicyConfig, SerialConfig
from edgelstm.daemon.messages import HelloMsg, Origin, ReadingMsg, ResetMsg
from edgelstm.daemon.sequencer import Sequencer
from edgelstm.daemon.service import Daemon
from edgelstm.daemon.snapshots import Image
from edgelstm.protocol.payload import Hello, Reading


def make_daemon(tmp_path, capacity=6):
    cfg = DaemonConfig(model=MODEL, serial=SerialConfig(port="/dev/null"), output="stdout", capacity=capacity,
                       checkpoint=str(tmp_path / "state.ckpt"),
                       policy=PolicyConfig(stream_ttl_s=5.0, evict_idle_s=1.0)).validate()
    return Daemon(cfg, sink=Outputs())


def full_checkpoint(d, now):
    """The oracle: every stepped stream, as a snapshot of all of them reads it (id -> position, state)."""
    wall, tracks, bank = time.time(), d.pipeline.seq.tracks, d.pipeline.bank
    out = {}
    for s, t in tracks.items():
        if t.last_seq is not None and s in bank:
            pos = (t.last_seq, -1 if t.boot is None else t.boot, math.nan if t.last_t is None else t.last_t,
                   wall - (now - t.last_seen))
            out[s] = (pos, bank.get_state(s).values)
    return out


def as_dict(ckpt):
    return {s: (tuple(ckpt.positions[i].tolist()), ckpt.states[i]) for i, s in enumerate(ckpt.ids)}


def assert_same(image, truth):
    got = as_dict(image.checkpoint())
    assert sorted(got) == sorted(truth)
    for s, ((seq, boot, t, seen), state) in truth.items():
        (g_seq, g_boot, g_t, g_seen), g_state = got[s]
        assert (g_seq, g_boot) == (seq, boot) and (g_t == t or (math.isnan(g_t) and math.isnan(t))), s
        assert abs(g_seen - seen) < 1e-3, s
        np.testing.assert_array_equal(g_state, state)


def test_an_image_built_from_deltas_is_the_full_snapshot_at_every_commit(tmp_path, monkeypatch):
    d = make_daemon(tmp_path)
    rng = np.random.default_rng(3)
    image, now, seqs, boots = Image(), 0.0, {}, {}
    monkeypatch.setattr(time, "time", lambda: 1.7e9 + now)       # the wall clock moves with the test's clock
    serial = Origin(LINK, None, 0, True, 0.0)              # in order: seq 0 after others is a reboot
    for step in range(600):
        now += rng.uniform(0.0, 0.3)
        stream = f"s{rng.integers(9)}"
        roll = rng.random()
        if roll < 0.05:
            boots[stream] = boots.get(stream, 0) + 1
            d.pipeline.handle([HelloMsg(stream, Hello(boots[stream], 1, 3), serial)], now)
        elif roll < 0.08:
            d.pipeline.handle([ResetMsg(stream, serial)], now)      # the board asks for zero state
            continue
        elif roll < 0.10:
            seqs[stream] = 0                                   # rebooted without a hello
        else:
            seqs[stream] = seqs.get(stream, -1) + 1
        x = rng.normal(size=3).astype(np.float32)
        if rng.random() < 0.03:
            x[0] = np.nan
        d.pipeline.handle([ReadingMsg(stream, Reading(seqs[stream], x, now, boots.get(stream)), serial)], now)
        if rng.random() < 0.1:
            d.pipeline.evict_idle(now, 2)
        if step == 300:
            assert d.pipeline.swap_model(edgelstm.load(MODEL))
        if rng.random() < 0.2:
            image.apply(d.pipeline.snapshot(now))
            assert_same(image, full_checkpoint(d, now))
    assert d.pipeline.evicted["idle"] + d.pipeline.evicted["capacity"] > 0 and 0 < len(image) <= 6


def test_a_commit_copies_only_the_streams_that_changed(tmp_path):
    d = make_daemon(tmp_path, capacity=100)
    origin = Origin(LINK, None, None, False, 0.0)
    d.pipeline.handle([ReadingMsg(f"s{i}", Reading(0, np.ones(3, np.float32)), origin) for i in range(100)], 0.0)
    first = d.pipeline.snapshot(0.0)
    assert first.full and len(first.ids) == 100
    d.pipeline.handle([ReadingMsg(f"s{i}", Reading(1, np.ones(3, np.float32)), origin) for i in (4, 7, 9)], 0.1)
    second = d.pipeline.snapshot(0.1)
    assert not second.full and sorted(second.ids) == ["s4", "s7", "s9"] and second.removed == []
    assert second.states.shape == (3, d.pipeline.model.state_size)
    assert d.pipeline.snapshot(0.2).ids == []


def test_without_a_checkpoint_nothing_is_tracked():
    seq = Sequencer(PolicyConfig(), 4, 1, lambda stream, why: None, track_changes=False)
    seq.restore("a", 1, None, None, 0.0)
    assert seq.changed() == (set(), False)


def test_ids_churning_between_snapshots_never_grow_the_set_past_twice_the_capacity():
    seq = Sequencer(PolicyConfig(), 4, 1, lambda stream, why: None)
    for i in range(100):
        seq.mark_changed(f"s{i}")
    changed, everything = seq.changed()
    assert everything and len(changed) <= 8
    seq.clear_changed()
    assert seq.changed() == (set(), False)


def test_a_wall_clock_stepped_since_a_streams_delta_does_not_age_it(tmp_path, monkeypatch):
    """NTP setting the clock of a board without an RTC: "seen" follows the latest delta's clocks."""
    d = make_daemon(tmp_path)
    origin = Origin(LINK, None, None, False, 0.0)
    wall = {"t": 1000.0}
    monkeypatch.setattr(time, "time", lambda: wall["t"])
    image = Image()
    d.pipeline.handle([ReadingMsg(s, Reading(0, np.ones(3, np.float32)), origin) for s in ("idle", "busy")], 0.0)
    image.apply(d.pipeline.snapshot(0.0))
    wall["t"] = 1000.0 + 365 * 86400.0 + 5.0            # a year later on the wall, 5 s later for the loop
    d.pipeline.handle([ReadingMsg("busy", Reading(1, np.ones(3, np.float32)), origin)], 5.0)
    image.apply(d.pipeline.snapshot(5.0))
    seen = dict(zip(image.checkpoint().ids, image.checkpoint().positions["seen"]))
    assert seen["busy"] == wall["t"] and seen["idle"] == wall["t"] - 5.0
