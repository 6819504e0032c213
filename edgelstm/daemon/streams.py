"""Per-stream sequence bookkeeping: which readings are new, duplicated, missing, or start
over after a reboot. Sequence numbers are compared modulo 2^32 (PROTOCOL.md)."""

from __future__ import annotations

from dataclasses import dataclass

HALF = 2 ** 31
WRAP = 2 ** 32


@dataclass
class StreamInfo:
    last_seq: int | None = None
    boot: int | None = None
    last_t: float | None = None         # sender's time of the last applied reading
    last_seen: float = 0.0              # our clock, for the idle TTL


@dataclass(frozen=True)
class Verdict:
    duplicate: bool = False
    missing: int = 0                    # readings skipped between the last and this one
    reboot: bool = False
    time_gap: bool = False


def classify(info: StreamInfo, seq: int, boot: int | None, t: float | None, max_gap_s: float,
             zero_is_reboot: bool = False) -> Verdict:
    """What a reading with `seq` means for a stream in state `info` (which is not changed).
    zero_is_reboot: seq 0 after other readings means the sender restarted (serial links; over
    MQTT a redelivered seq 0 would look the same, so there only a new boot id counts)."""
    reboot = (boot is not None and info.boot is not None and boot != info.boot) or (
        zero_is_reboot and seq == 0 and info.last_seq is not None and info.last_seq != 0)
    if info.last_seq is None or reboot:
        return Verdict(reboot=reboot and info.last_seq is not None)
    d = (seq - info.last_seq) % WRAP
    if d == 0 or d >= HALF:
        return Verdict(duplicate=True)
    gap = max_gap_s > 0 and t is not None and info.last_t is not None and t - info.last_t > max_gap_s
    return Verdict(missing=d - 1, time_gap=gap)


def advance(info: StreamInfo, seq: int, boot: int | None, t: float | None, now: float) -> None:
    info.last_seq = seq
    if boot is not None:
        info.boot = boot
    if t is not None:
        info.last_t = t
    info.last_seen = now
