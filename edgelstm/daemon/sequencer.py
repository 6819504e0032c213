"""Per-stream bookkeeping, in one place: sequence positions, the reorder buffer, the answers
kept for readings sent again, and eviction of all of it.

Pure: no model, no I/O, no clock of its own (time is an argument). Sequence numbers are
u32 and compared modulo 2^32 (firmware_bridge/PROTOCOL.md):

  distance d = (seq - last) mod 2^32
  d == 1                    the next reading: apply
  1 < d <= resync_after     readings are missing: hold it for them (links that reorder), else
                            apply and count the gap
  d == 0, or behind by at most resync_after
                            seen before: a duplicate, answered again from the kept answers
  anything else             the sender jumped (or lies): resynchronise there, counted

A reboot (a new boot id; on an in-order link seq 0 after others, unless it is the wrap
from 2^32 - 1) starts the stream's positions over.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

import numpy as np

from .config import PolicyConfig
from .messages import HelloMsg, ReadingMsg

WRAP = 2**32


class Apply(NamedTuple):
    """Step the stream with this reading, after resetting it for each reason in `resets`."""

    msg: ReadingMsg
    resets: tuple[str, ...]
    missing: int                # readings skipped since the last one (a gap)
    resync: bool


class Answer(NamedTuple):
    """A reading seen before: answer it again with the prediction made the first time."""

    msg: ReadingMsg
    t_in: float
    y: np.ndarray


class Drop(NamedTuple):
    """Not applied, counted under `counter` (acknowledged all the same)."""

    msg: ReadingMsg
    counter: str                # "duplicates", "nonfinite", "capacity", "stale_after_reboot"
    resets: tuple[str, ...] = ()


Decision = Apply | Answer | Drop | None          # None: held for reordering


@dataclass(slots=True)
class Held:
    msg: ReadingMsg
    since: float


class Answers:
    """The last `window` predictions of a stream, in a ring indexed by seq mod window.

    Memory: window * (output_size * 4 + 16) bytes, allocated on first use.
    """

    __slots__ = ("seqs", "t_in", "y")

    def __init__(self, window: int, output_size: int):
        self.seqs = np.full(window, -1, np.int64)           # (window,) seq kept in each slot
        self.t_in = np.zeros(window, np.float64)            # (window,)
        self.y = np.zeros((window, output_size), np.float32)   # (window, O)

    def remember(self, seq: int, t_in: float, y: np.ndarray) -> None:
        slot = seq % len(self.seqs)
        self.seqs[slot] = seq
        self.t_in[slot] = t_in
        self.y[slot] = y

    def lookup(self, seq: int) -> tuple[float, np.ndarray] | None:
        slot = seq % len(self.seqs)
        if self.seqs[slot] != seq:
            return None
        return float(self.t_in[slot]), self.y[slot].copy()


@dataclass(slots=True)
class Track:
    """One stream's position. `last_seen` is the caller's monotonic clock."""

    last_seq: int | None = None
    boot: int | None = None
    last_t: float | None = None             # sender's time of the last applied reading
    last_seen: float = 0.0
    held: dict[int, Held] = field(default_factory=dict)   # seq -> Held, in arrival order
    answers: Answers | None = None


class Sequencer:
    """Decides what each reading means for its stream. `forget(stream, why)` is called for every
    stream it drops (why: "capacity" or "idle"), so the owner frees the stream's bank row and
    metric series at the same moment."""

    def __init__(self, policy: PolicyConfig, capacity: int, output_size: int,
                 forget: Callable[[str, str], None], track_changes: bool = True):
        self.policy = policy
        self.capacity = capacity
        self.output_size = output_size
        self._forget = forget
        # streams whose position or state may have changed, or that were forgotten, since the
        # last clear_changed(): what the next checkpoint delta holds (snapshots.py). The pipeline
        # marks the state changes it makes outside a reading (mark_changed).
        self._changed: set[str] | None = set() if track_changes else None
        self._everything = False
        self.tracks: collections.OrderedDict[str, Track] = collections.OrderedDict()   # least recently seen first
        self._holding: set[str] = set()         # streams with readings in their reorder buffer
        self._stale: list[ReadingMsg] = []      # held readings of a previous boot, for take_stale

    def __len__(self) -> int:
        return len(self.tracks)

    def __contains__(self, stream: str) -> bool:
        return stream in self.tracks

    # -- readings -----------------------------------------------------------------------------

    def admit(self, msg: ReadingMsg, now: float, released: bool = False) -> Decision:
        """What to do with a reading. released: it comes out of the reorder buffer."""
        track = self.tracks.get(msg.stream)
        if track is None:
            track = self._new_track(msg.stream, now)
            if track is None:
                return Drop(msg, "capacity")
        self.tracks.move_to_end(msg.stream)
        track.last_seen = now
        self.mark_changed(msg.stream)
        r = msg.reading
        if self._is_reboot(track, msg):
            self._start_over(msg.stream, track)
            return self._checked(msg, track, Apply(msg, self._resets("reboot"), 0, False))
        if track.last_seq is None:
            return self._checked(msg, track, Apply(msg, (), 0, False))
        d = (r.seq - track.last_seq) % WRAP
        behind = (WRAP - d) % WRAP
        if behind <= self.policy.resync_after:          # includes d == 0
            return self._duplicate(msg, track)
        if not released and r.seq in track.held:
            return Drop(msg, "duplicates")
        if d > self.policy.resync_after:
            return self._checked(msg, track, Apply(msg, self._resets("resync"), 0, True))
        missing = d - 1
        if missing and not released and not msg.origin.in_order and missing <= self.policy.reorder_window:
            track.held[r.seq] = Held(msg, now)
            self._holding.add(msg.stream)
            return None
        return self._checked(msg, track, Apply(msg, self._time_gap(track, r.t), missing, False))

    def applied(self, msg: ReadingMsg, t_in: float, y: np.ndarray | None) -> None:
        """The reading was stepped (y: its prediction) or failed numerically (y is None)."""
        track = self.tracks.get(msg.stream)
        if track is None:
            return
        self._advance(track, msg)            # marked changed already: admit() did, in the same turn
        if y is not None and self.policy.replay_window:
            if track.answers is None:
                track.answers = Answers(self.policy.replay_window, self.output_size)
            track.answers.remember(msg.reading.seq, t_in, y)

    def release(self, now: float) -> list[ReadingMsg]:
        """Readings leaving the reorder buffer in sequence order: those that now follow on, and
        (after reorder_timeout_s, or when a stream holds more than reorder_window) the next one
        past a real gap. Pass each to admit(..., released=True)."""
        out: list[ReadingMsg] = []
        for stream in list(self._holding):
            track = self.tracks[stream]
            out.extend(self._release_stream(track, now))
            if not track.held:
                self._holding.discard(stream)
        return out

    def _release_stream(self, track: Track, now: float) -> list[ReadingMsg]:
        out = []
        cursor = track.last_seq
        while track.held:
            nxt = (cursor + 1) % WRAP if cursor is not None else None
            if nxt in track.held:
                seq = nxt
            elif self._waited_enough(track, now):
                seq = min(track.held, key=lambda s: (s - cursor) % WRAP if cursor is not None else s)
            else:
                break
            out.append(track.held.pop(seq).msg)
            cursor = seq
        return out

    def _waited_enough(self, track: Track, now: float) -> bool:
        """The oldest held reading (held keeps arrival order) timed out, or too many wait."""
        oldest = next(iter(track.held.values()))
        return now - oldest.since > self.policy.reorder_timeout_s or len(track.held) > self.policy.reorder_window

    # -- control messages ------------------------------------------------------------------------

    def hello(self, msg: HelloMsg, now: float) -> tuple[str, ...]:
        """A board booted: the reasons to reset its stream (none if the boot id is unchanged)."""
        track = self.tracks.get(msg.stream)
        if track is None:
            track = self._new_track(msg.stream, now)
            if track is None:
                return ()
        track.last_seen = now
        self.mark_changed(msg.stream)
        resets: tuple[str, ...] = ()
        if track.boot is not None and track.boot != msg.hello.boot:
            self._start_over(msg.stream, track)
            resets = self._resets("reboot")
        track.boot = msg.hello.boot
        return resets

    def take_stale(self) -> list[ReadingMsg]:
        """Held readings made void by a reboot since the last call (to count and acknowledge)."""
        stale, self._stale = self._stale, []
        return stale

    # -- eviction --------------------------------------------------------------------------------

    def evict_idle(self, now: float, ttl: float, limit: int) -> list[str]:
        """Forget at most `limit` streams silent for more than `ttl` (oldest first): a sweep
        is spread over several calls so live streams never wait behind it."""
        gone: list[str] = []
        for stream, track in self.tracks.items():
            if len(gone) >= limit or now - track.last_seen <= ttl:
                break
            gone.append(stream)
        for stream in gone:
            self._drop(stream, "idle")
        return gone

    def restore(self, stream: str, last_seq: int | None, boot: int | None, last_t: float | None,
                last_seen: float) -> None:
        self.tracks[stream] = Track(last_seq, boot, last_t, last_seen)
        self.mark_changed(stream)

    def forget_answers(self) -> None:
        """The model changed: earlier answers are not this model's."""
        for track in self.tracks.values():
            track.answers = None

    def changed(self) -> tuple[set[str], bool]:
        """The streams changed or forgotten since clear_changed(), and whether that is every
        stream instead (more than twice the capacity were marked: ids churning between rare
        snapshots; the set is not kept then, so it never grows past that)."""
        return self._changed or set(), self._everything

    def clear_changed(self) -> None:
        if self._changed is not None:
            self._changed = set()
        self._everything = False

    def mark_changed(self, stream: str) -> None:
        """The stream's position or state changed (or it is gone): in the next checkpoint delta."""
        if self._changed is None or self._everything:
            return
        self._changed.add(stream)
        if len(self._changed) > 2 * self.capacity:
            self._everything = True
            self._changed = set()

    def held_count(self) -> int:
        return sum(len(self.tracks[s].held) for s in self._holding)

    # -- helpers ---------------------------------------------------------------------------------

    def _new_track(self, stream: str, now: float) -> Track | None:
        """A track for a new stream; at capacity, the least recently seen stream gives up its
        place if it has been idle for policy.evict_idle_s, else None (the reading is refused)."""
        if len(self.tracks) >= self.capacity:
            oldest, track = next(iter(self.tracks.items()))
            if now - track.last_seen < self.policy.evict_idle_s or track.held:
                return None
            self._drop(oldest, "capacity")
        track = self.tracks[stream] = Track(last_seen=now)
        self.mark_changed(stream)
        return track

    def _drop(self, stream: str, why: str) -> None:
        track = self.tracks.pop(stream, None)
        if track is not None:
            self._stale.extend(h.msg for h in track.held.values())
        self._holding.discard(stream)
        self.mark_changed(stream)
        self._forget(stream, why)

    def _is_reboot(self, track: Track, msg: ReadingMsg) -> bool:
        r = msg.reading
        if r.boot is not None and track.boot is not None and r.boot != track.boot:
            return True
        wrapped = track.last_seq == WRAP - 1
        return msg.origin.in_order and r.seq == 0 and track.last_seq not in (None, 0) and not wrapped

    def _start_over(self, stream: str, track: Track) -> None:
        """Positions, answers and held readings of the previous boot are void."""
        track.last_seq = None
        track.last_t = None
        track.answers = None
        self._stale.extend(h.msg for h in track.held.values())
        track.held.clear()
        self._holding.discard(stream)

    def _duplicate(self, msg: ReadingMsg, track: Track) -> Decision:
        kept = track.answers.lookup(msg.reading.seq) if track.answers is not None else None
        if kept is None:
            return Drop(msg, "duplicates")
        return Answer(msg, kept[0], kept[1])

    def _checked(self, msg: ReadingMsg, track: Track, apply: Apply) -> Decision:
        """A non-finite reading is never stepped: the position moves past it and the policy
        says whether the state is kept or reset."""
        if np.isfinite(msg.reading.x).all():
            return apply
        self._advance(track, msg)
        return Drop(msg, "nonfinite", apply.resets + self._resets("nonfinite"))

    def _time_gap(self, track: Track, t: float | None) -> tuple[str, ...]:
        max_gap = self.policy.max_gap_s
        if max_gap > 0 and t is not None and track.last_t is not None and t - track.last_t > max_gap:
            return self._resets("time_gap")
        return ()

    def _resets(self, reason: str) -> tuple[str, ...]:
        policy = {"reboot": self.policy.reboot, "time_gap": self.policy.gap, "resync": self.policy.gap,
                  "nonfinite": self.policy.nonfinite}[reason]
        return (reason,) if policy == "reset" else ()

    @staticmethod
    def _advance(track: Track, msg: ReadingMsg) -> None:
        r = msg.reading
        track.last_seq = r.seq
        if r.boot is not None:
            track.boot = r.boot
        if r.t is not None:
            track.last_t = r.t
