"""The sequencer alone: positions, reordering, duplicates, resyncs, reboots, capacity and
eviction. No model, no broker, no sleeps: time is an argument."""

import numpy as np
import pytest

from edgelstm.daemon.config import PolicyConfig
from edgelstm.daemon.messages import HelloMsg, Origin, ReadingMsg
from edgelstm.daemon.sequencer import WRAP, Answer, Apply, Drop, Sequencer
from edgelstm.protocol.payload import Hello, Reading

X = np.zeros(3, np.float32)


class Forgotten(list):
    def __call__(self, stream, why):
        self.append((stream, why))


def make(capacity=8, **policy):
    forgotten = Forgotten()
    return Sequencer(PolicyConfig(**policy), capacity, 2, forgotten), forgotten


def reading(seq, stream="a", boot=None, t=None, in_order=False, x=X):
    return ReadingMsg(stream, Reading(seq, x, t, boot), Origin(None, seq, None, in_order, 0.0))


def apply_all(seq, msgs, now=0.0):
    """Admit and apply each message as the daemon would; the decisions, in order."""
    out = []
    for m in msgs:
        d = seq.admit(m, now)
        out.append(d)
        if type(d) is Apply:
            seq.applied(m, 0.0, np.array([m.reading.seq, 0], np.float32))
    return out


def kinds(decisions):
    return [type(d).__name__ if d is not None else "held" for d in decisions]


def test_in_order_readings_apply_and_a_repeat_is_answered_again():
    seq, _ = make(replay_window=4)
    assert kinds(apply_all(seq, [reading(s) for s in range(6)])) == ["Apply"] * 6
    again = seq.admit(reading(4), 0.0)
    assert type(again) is Answer and again.y[0] == 4
    old = seq.admit(reading(1), 0.0)               # older than the 4 answers kept
    assert type(old) is Drop and old.counter == "duplicates"


def test_a_reading_that_skips_ahead_waits_for_the_missing_ones():
    seq, _ = make(reorder_window=10, reorder_timeout_s=5.0)
    apply_all(seq, [reading(0), reading(1)])
    assert seq.admit(reading(3), 0.0) is None and seq.held_count() == 1
    assert seq.release(1.0) == []                  # 2 is still missing, no timeout yet
    apply_all(seq, [reading(2)])
    released = seq.release(1.0)
    assert [m.reading.seq for m in released] == [3]
    assert type(seq.admit(released[0], 1.0, released=True)) is Apply


def test_a_real_gap_is_released_after_the_timeout_and_counted():
    seq, _ = make(reorder_timeout_s=0.2)
    apply_all(seq, [reading(0), reading(1)])
    assert seq.admit(reading(4), 10.0) is None
    assert seq.release(10.1) == []
    (late,) = seq.release(10.3)
    d = seq.admit(late, 10.3, released=True)
    assert type(d) is Apply and d.missing == 2
    seq.applied(late, 0.0, None)
    assert type(seq.admit(reading(2), 10.4)) is Drop       # too late now: never applied


def test_an_in_order_link_counts_a_gap_at_once():
    seq, _ = make(reorder_window=100)
    apply_all(seq, [reading(0, in_order=True), reading(1, in_order=True)])
    d = seq.admit(reading(4, in_order=True), 0.0)
    assert type(d) is Apply and d.missing == 2


def test_the_u32_wrap_is_the_next_reading_never_a_reboot():
    seq, _ = make()
    apply_all(seq, [reading(WRAP - 2, in_order=True), reading(WRAP - 1, in_order=True)])
    d = seq.admit(reading(0, in_order=True), 0.0)
    assert type(d) is Apply and d.resets == () and d.missing == 0 and not d.resync


def test_seq_zero_again_on_an_in_order_link_is_a_reboot():
    seq, _ = make(replay_window=4)
    apply_all(seq, [reading(s, in_order=True) for s in range(5)])
    d = seq.admit(reading(0, in_order=True), 0.0)
    assert type(d) is Apply and d.resets == ("reboot",)
    assert seq.tracks["a"].answers is None          # the old boot's answers are void


def test_a_new_boot_id_starts_over_and_drops_what_the_old_boot_left_held():
    seq, _ = make()
    apply_all(seq, [reading(s, boot=1) for s in range(3)])
    assert seq.admit(reading(5, boot=1), 0.0) is None
    d = seq.admit(reading(0, boot=2), 0.0)
    assert type(d) is Apply and d.resets == ("reboot",)
    assert [m.reading.seq for m in seq.take_stale()] == [5] and seq.held_count() == 0


def test_a_far_jump_resynchronises_instead_of_making_every_later_reading_a_duplicate():
    seq, _ = make(resync_after=1000, reorder_window=10)
    apply_all(seq, [reading(s) for s in range(5)])
    jump = seq.admit(reading(2**31 + 7), 0.0)       # a bogus seq far ahead
    assert type(jump) is Apply and jump.resync
    seq.applied(reading(2**31 + 7), 0.0, None)
    back = seq.admit(reading(5), 0.0)               # the genuine next one: far behind now
    assert type(back) is Apply and back.resync
    seq.applied(reading(5), 0.0, None)
    assert type(seq.admit(reading(6), 0.0)) is Apply


@pytest.mark.parametrize("policy,expected", [("reset", ("nonfinite",)), ("hold", ())])
def test_a_nonfinite_reading_is_never_applied_and_moves_the_position(policy, expected):
    seq, _ = make(nonfinite=policy)
    apply_all(seq, [reading(0)])
    bad = np.array([0, np.nan, 0], np.float32)
    d = seq.admit(reading(1, x=bad), 0.0)
    assert type(d) is Drop and d.counter == "nonfinite" and d.resets == expected
    assert type(seq.admit(reading(2), 0.0)) is Apply and seq.admit(reading(2), 0.0).missing == 0


def test_time_gap_policy():
    seq, _ = make(max_gap_s=5.0, gap="reset")
    apply_all(seq, [reading(0, t=100.0), reading(1, t=101.0)])
    assert seq.admit(reading(2, t=200.0), 0.0).resets == ("time_gap",)


def test_capacity_takes_the_least_recently_seen_idle_stream_or_refuses():
    seq, forgotten = make(capacity=2, evict_idle_s=60.0)
    apply_all(seq, [reading(0, "a")], now=0.0)
    apply_all(seq, [reading(0, "b")], now=10.0)
    refused = seq.admit(reading(0, "c"), 30.0)      # nobody idle for 60 s yet
    assert type(refused) is Drop and refused.counter == "capacity" and "c" not in seq
    assert type(seq.admit(reading(0, "c"), 61.0)) is Apply
    assert forgotten == [("a", "capacity")] and set(seq.tracks) == {"b", "c"}


def test_idle_eviction_is_incremental_and_forgets_everything_about_a_stream():
    seq, forgotten = make(capacity=1000, replay_window=4)
    for i in range(600):
        apply_all(seq, [reading(0, f"s{i}")], now=float(i) / 1000)
    apply_all(seq, [reading(0, "live")], now=100.0)
    swept = [len(seq.evict_idle(100.0, ttl=50.0, limit=256)) for _ in range(4)]
    assert swept == [256, 256, 88, 0] and list(seq.tracks) == ["live"]
    assert len(forgotten) == 600 and all(why == "idle" for _, why in forgotten)


def test_streams_that_only_send_bad_readings_are_evicted_too():
    seq, forgotten = make()
    bad = np.full(3, np.inf, np.float32)
    seq.admit(reading(0, "noisy", x=bad), 0.0)
    assert seq.evict_idle(1000.0, ttl=10.0, limit=10) == ["noisy"] and forgotten == [("noisy", "idle")]


def test_hello_with_a_new_boot_resets_and_an_unchanged_one_does_not():
    seq, _ = make()
    origin = Origin(None, None, 0, True, 0.0)
    assert seq.hello(HelloMsg("a", Hello(7, 1, 3), origin), 0.0) == ()
    apply_all(seq, [reading(s, in_order=True) for s in range(3)])
    assert seq.hello(HelloMsg("a", Hello(7, 1, 3), origin), 0.0) == ()
    assert seq.hello(HelloMsg("a", Hello(8, 1, 3), origin), 0.0) == ("reboot",)
    assert seq.tracks["a"].last_seq is None


def test_answers_cost_what_the_readme_formula_says():
    seq, _ = make(replay_window=32)
    apply_all(seq, [reading(0)])
    answers = seq.tracks["a"].answers
    assert answers.seqs.nbytes + answers.t_in.nbytes + answers.y.nbytes == 32 * (2 * 4 + 16)
