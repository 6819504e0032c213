"""`edgelstm replay`: a recording streamed through a model as the daemon would have stepped it live.

    recordings = edgelstm.recording.read("recordings/")
    result = replay(recordings, model, cfg)            # cfg: the daemon's DaemonConfig ([policy] ...)
    write_predictions(result, "out/predictions.csv")
    summary(result)                                    # counts by reason, accuracy

The daemon's own objects do the work, so the policies are the deployed ones by construction: a
daemon Pipeline (daemon/pipeline.py) with its Sequencer, StreamBank and Metrics, fed one reading
per call with the recorded t as its clock, and Outputs that keep the predictions here instead of
publishing them. Only the links are missing. Every stream starts from zero state (the daemon's
checkpoint is not read).

Order: each stream's readings in recorded order, the streams interleaved by t (a merge: of every
stream's next reading, the one with the smallest t goes first), as they reached the daemon. A
reading recorded without t (NaN) keeps its place in its stream, and the clock stands still for it.

What a recording cannot tell, so where a replay may differ from the live run:
  - when readings arrived: the reorder buffer's timeout (reorder_timeout_s) and idle eviction
    (stream_ttl_s, evict_idle_s) run on the recorded t, which is the sender's clock;
  - whether the sender gave t: one that did not was recorded with its time of receipt, which the
    replay takes for the sender's (so max_gap_s applies where the live daemon saw no t);
  - MQTT redeliveries, which edgelstm record skips as duplicates.
"""

from __future__ import annotations

import csv
import dataclasses
import heapq
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from .daemon.config import DaemonConfig
from .daemon.ledger import Ledger
from .daemon.messages import Message, Origin, ReadingMsg
from .daemon.metrics import LabelledCounter, Metrics
from .daemon.outputs import Outputs
from .daemon.pipeline import Pipeline
from .engine import Model
from .errors import ReplayError
from .model.names import top_class
from .protocol.payload import Reading
from .recording.reader import NO_BOOT, StreamRecording

SWEEP_EVERY_S = 1.0             # the daemon's idle-stream sweep runs once a second (daemon/service.py)
PROGRESS_EVERY = 1000           # readings between progress callbacks
UNLABELLED, UNKNOWN_LABEL = -1, -2      # class_indices() of a reading without a label / with one not a class
# the reasons a reading gets no new prediction: the daemon's counters, and a "numerical" reset (NaN/Inf out)
NOT_PREDICTED = ("duplicates", "nonfinite", "capacity", "stale", "numerical")


# -- the daemon's objects, with the links taken out ----------------------------------------------------

class _RecordingLink:
    """Where replayed readings come from, for their Origin: nothing to read, acknowledge or reply to."""

    name = "recording"

    def open(self, now: float) -> None: ...
    def selectable(self) -> Any: return None
    def wants_write(self) -> bool: return False
    def pending(self) -> bool: return False
    def read(self, now: float, limit: int) -> list[Message]: return []
    def write(self) -> None: ...
    def tick(self, now: float) -> None: ...
    def ack(self, origin: Origin) -> None: ...
    def reply(self, origin: Origin, seq: int, y: np.ndarray) -> bool: return True
    def flush(self) -> None: ...
    def close(self) -> None: ...


class _TimedResets(LabelledCounter):
    """edgelstm_resets that also notes each reset as (stream, reason, clock), for the plots."""

    def __init__(self, registry, clock: Callable[[], float]):
        super().__init__("edgelstm_resets", "Stream state resets", ["stream", "reason"], registry)
        self.clock = clock
        self.events: list[tuple[str, str, float]] = []

    def inc(self, *label_values: str, by: float = 1) -> None:
        super().inc(*label_values, by=by)
        self.events.append((label_values[0], label_values[1], self.clock()))


class ReplayMetrics(Metrics):
    """The daemon's counters, but an evicted stream's series are kept (the daemon drops them to
    bound its label sets; a replay reports every stream) and each reset's time is noted."""

    def __init__(self):
        super().__init__()
        self.now = 0.0                                  # the replay's clock: the recorded t
        self.registry.unregister(self.resets)
        self.timed_resets = _TimedResets(self.registry, lambda: self.now)
        self.resets = self.timed_resets

    def forget(self, stream: str) -> None:
        pass


class _KeptOutputs(Outputs):
    """The daemon's Outputs, keeping each prediction (in the order the daemon would publish it)
    in preallocated arrays: a reading is answered at most once, so `capacity` readings suffice."""

    def __init__(self, cfg: DaemonConfig, model: Model, capacity: int):
        super().__init__(cfg, model, None, None, lambda reason: None)
        self.count = 0
        self.streams: list[str] = []
        self.seq = np.zeros(capacity, np.int64)
        self.t = np.zeros(capacity, np.float64)
        self.y = np.zeros((capacity, model.output_size), np.float32)     # (capacity, O)
        self.replayed = np.zeros(capacity, bool)
        self.labels = np.full(capacity, "", dtype=object)

    def emit(self, msg: ReadingMsg, t_in: float, y: np.ndarray, replay: bool = False) -> None:
        k = self.count
        self.streams.append(msg.stream)
        self.seq[k], self.t[k], self.y[k], self.replayed[k] = msg.reading.seq, t_in, y, replay
        self.labels[k] = msg.reading.label or ""
        self.count = k + 1


# -- the result ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Predictions:
    """What the daemon would have published, in publishing order: P predictions of O values."""

    stream: np.ndarray          # (P,) object: stream ids
    seq: np.ndarray             # (P,) int64
    t: np.ndarray               # (P,) float64: t_in, the reading's recorded t
    y: np.ndarray               # (P, O) float32, as published
    replayed: np.ndarray        # (P,) bool: a reading sent again, answered with its first prediction
    recorded_label: np.ndarray  # (P,) object: the reading's label in the recording, "" for none

    def __len__(self) -> int:
        return len(self.seq)


@dataclass(frozen=True)
class ReplayResult:
    model: Model
    cfg: DaemonConfig
    in_order: bool                              # replayed as from a serial link (see replay())
    recordings: dict[str, StreamRecording]
    predictions: Predictions
    resets: list[tuple[str, str, float]]        # (stream, reason, clock) of every state reset, in order
    metrics: ReplayMetrics                      # the daemon's counters after the replay
    readings: int                               # readings fed
    stream_rows: dict[str, np.ndarray]          # stream -> (k,) int64 indices into predictions, in order

    @property
    def labelled(self) -> bool:
        """Accuracy and a confusion matrix can be had: the model has labels, the recording too."""
        return bool(self.model.labels) and any(r.labels is not None for r in self.recordings.values())

    def rows_of(self, stream: str) -> np.ndarray:
        """(k,) indices into predictions of `stream`'s, in order."""
        return self.stream_rows.get(stream, np.zeros(0, np.int64))


# -- replaying -------------------------------------------------------------------------------------------

def arrival_order(recordings: dict[str, StreamRecording]) -> Iterator[tuple[str, int]]:
    """(stream, index into its recording) of every reading, in the order the daemon saw them: each
    stream's in recorded order, the streams merged by t (equal t: the stream that appears first)."""
    def keyed(rank: int, stream: str, t: np.ndarray) -> Iterator[tuple[float, int, int, str]]:
        for i, key in enumerate(_filled(t).tolist()):
            yield key, rank, i, stream
    merged = heapq.merge(*(keyed(rank, s, r.t) for rank, (s, r) in enumerate(recordings.items())))
    for _key, _rank, i, stream in merged:
        yield stream, i


def _filled(t: np.ndarray) -> np.ndarray:
    """t (T,) with each NaN replaced by the t before it in the stream (-inf before any)."""
    known = ~np.isnan(t)
    if known.all():
        return t
    last = np.maximum.accumulate(np.where(known, np.arange(len(t)), -1))
    return np.where(last >= 0, t[np.maximum(last, 0)], -np.inf)


def _check_fits(recordings: dict[str, StreamRecording], model: Model) -> None:
    if not recordings:
        raise ReplayError("the recording holds no readings: record some first (edgelstm record)")
    n = next(iter(recordings.values())).x.shape[1]
    if n != model.input_size:
        raise ReplayError(f"the recording's readings have {n} values, the model takes {model.input_size}: replay "
                          "it with the model it was recorded for (edgelstm record --model M checks the count)")


def replay(recordings: dict[str, StreamRecording], model: Model, cfg: DaemonConfig, in_order: bool = False,
           progress: Callable[[int, int], None] | None = None) -> ReplayResult:
    """Every reading of `recordings` through `model` as the daemon with config `cfg` would step it.

    in_order: the readings came over serial, a link that neither reorders nor redelivers (the
    sequencer then takes seq 0 again for a reboot, and holds nothing for reordering); else MQTT.
    progress(done, total) is called every PROGRESS_EVERY readings and at the end."""
    _check_fits(recordings, model)
    total = sum(len(r) for r in recordings.values())
    metrics = ReplayMetrics()
    ledger = Ledger("step", "", 0.0, lambda path, snapshot: None, lambda: None)   # no checkpoint, no acks
    outputs = _KeptOutputs(cfg, model, total)
    pipeline = Pipeline(cfg, model, metrics, ledger, outputs)
    link = _RecordingLink()
    starts = [float(np.nanmin(r.t)) for r in recordings.values() if not np.isnan(r.t).all()]
    now = min(starts) if starts else 0.0             # the clock before the first reading with a t
    next_sweep = -math.inf
    for done, (stream, i) in enumerate(arrival_order(recordings)):
        rec = recordings[stream]
        t = float(rec.t[i])
        has_t = t == t                                  # not NaN
        if has_t and t > now:
            now = t                                     # the daemon's clock is monotonic
        metrics.now = now
        if now >= next_sweep:                           # streams silent past stream_ttl_s are forgotten
            pipeline.evict_idle(now, len(pipeline.seq) + 1)
            next_sweep = now + SWEEP_EVERY_S
        if pipeline.seq.held_count():                   # held readings whose wait ran out before this one came
            pipeline.handle([], now)
        boot = int(rec.boot[i])
        label = rec.labels[i] if rec.labels is not None else ""
        reading = Reading(int(rec.seq[i]), rec.x[i], t if has_t else None, None if boot == NO_BOOT else boot,
                          label or None)
        pipeline.handle([ReadingMsg(stream, reading, Origin(link, None, None, in_order, now))], now)
        if progress is not None and done % PROGRESS_EVERY == 0:
            progress(done, total)
    if pipeline.seq.held_count():                       # the daemon runs on: their wait runs out
        now += pipeline.cfg.policy.reorder_timeout_s + 1.0
        metrics.now = now
        pipeline.handle([], now)
    if progress is not None:
        progress(total, total)
    n = outputs.count
    predictions = Predictions(np.array(outputs.streams, dtype=object), outputs.seq[:n], outputs.t[:n],
                              outputs.y[:n], outputs.replayed[:n], outputs.labels[:n])
    grouped: dict[str, list[int]] = {}
    for k, stream in enumerate(outputs.streams):
        grouped.setdefault(stream, []).append(k)
    return ReplayResult(model, cfg, in_order, recordings, predictions, metrics.timed_resets.events, metrics, total,
                        {s: np.array(rows, np.int64) for s, rows in grouped.items()})


# -- classes and accuracy --------------------------------------------------------------------------------

def class_indices(labels: np.ndarray, classes: tuple[str, ...]) -> np.ndarray:
    """(P,) int64 class of each recorded label: a class name, or its index as digits (edgelstm
    record writes an integer label so, and training/train_activity.py reads it so); UNLABELLED
    for "", UNKNOWN_LABEL for anything else."""
    index = {name: k for k, name in enumerate(classes)}
    index.update({str(k): k for k in range(len(classes)) if str(k) not in index})
    return np.array([index.get(label, UNKNOWN_LABEL) if label else UNLABELLED for label in labels], np.int64)


def probabilities(y: np.ndarray, scores: str) -> np.ndarray:
    """(P, O) class probabilities of classifier outputs y (P, O), by the rule of `scores`
    (model/names.py: softmax of logits, exp of log-probabilities, probabilities as they are)."""
    y = y.astype(np.float64)
    if scores == "probabilities":
        return y
    if scores == "log_probabilities":
        return np.exp(np.minimum(y, 0.0))
    e = np.exp(y - y.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class Confusion:
    """Recorded label against predicted class, over the predictions made (answers repeated for a
    reading sent again are not counted twice)."""

    classes: tuple[str, ...]
    counts: np.ndarray          # (C, C) int64: rows the recorded (true) class, columns the predicted one
    unknown: int                # predictions whose recorded label is not one of the classes (not counted)

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    @property
    def correct(self) -> int:
        return int(np.trace(self.counts))

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.total if self.total else None


def confusion(result: ReplayResult, stream: str | None = None) -> Confusion | None:
    """Over every stream, or `stream`'s predictions only; None unless result.labelled."""
    if not result.labelled:
        return None
    p = result.predictions
    rows = np.arange(len(p)) if stream is None else result.rows_of(stream)
    rows = rows[~p.replayed[rows]]
    classes = result.model.labels
    true = class_indices(p.recorded_label[rows], classes)
    predicted = np.argmax(p.y[rows], axis=1) if len(rows) else np.zeros(0, np.int64)    # top_class's choice
    known = true >= 0
    counts = np.zeros((len(classes), len(classes)), np.int64)
    np.add.at(counts, (true[known], predicted[known]), 1)
    return Confusion(classes, counts, int((true == UNKNOWN_LABEL).sum()))


# -- what is written -------------------------------------------------------------------------------------

def _counts(counter: LabelledCounter, stream: str | None = None, label: int = 0) -> dict[str, int]:
    """{label value: count} of a counter family, summed over the other labels; one stream's only if given."""
    out: dict[str, int] = {}
    for key, value in counter.values.items():
        if stream is None or key[0] == stream:
            out[key[label]] = out.get(key[label], 0) + int(value)
    return out


def _not_predicted(m: ReplayMetrics, stream: str | None) -> dict[str, int]:
    numerical = _counts(m.resets, stream, label=1).get("numerical", 0)
    if stream is None:
        drops = _counts(m.drops)
        capacity, stale = drops.get("capacity", 0), drops.get("stale", 0)
    else:
        capacity = stale = 0                        # counted without a stream (it has no place in the bank)
    return {"duplicates": int(m.duplicates.total() if stream is None else m.duplicates.values.get((stream,), 0)),
            "nonfinite": int(m.nonfinite.total() if stream is None else m.nonfinite.values.get((stream,), 0)),
            "capacity": capacity, "stale": stale, "numerical": numerical}


def _stream_summary(result: ReplayResult, stream: str) -> dict:
    m = result.metrics
    rows = result.rows_of(stream)
    replayed = int(result.predictions.replayed[rows].sum())
    out: dict[str, Any] = {"readings": len(result.recordings[stream]), "predictions": len(rows) - replayed,
                           "answered_again": replayed, "not_predicted": _not_predicted(m, stream),
                           "resets": _counts(m.resets, stream, label=1),
                           "gap_readings": int(m.gaps.values.get((stream,), 0)),
                           "resyncs": int(m.resyncs.values.get((stream,), 0))}
    c = confusion(result, stream)
    if c is not None:
        out.update(accuracy=c.accuracy, labelled_predictions=c.total)
    return out


def summary(result: ReplayResult) -> dict:
    """Counts by reason (the daemon's counters), per stream too, and accuracy when result.labelled."""
    m, model, p = result.metrics, result.model, result.predictions
    replayed = int(p.replayed.sum())
    drops = _counts(m.drops)
    out: dict[str, Any] = {
        "model_hash": model.content_hash, "in_order": result.in_order, "policy": dataclasses.asdict(result.cfg.policy),
        "streams": len(result.recordings), "readings": result.readings,
        "predictions": len(p) - replayed, "answered_again": replayed,
        "not_predicted": _not_predicted(m, None),
        "resets": _counts(m.resets, label=1), "gap_readings": int(m.gaps.total()), "resyncs": int(m.resyncs.total()),
        "evicted_streams": {"idle": drops.get("evicted_idle", 0), "capacity": drops.get("evicted_capacity", 0)},
    }
    if model.labels:
        out["labels"] = list(model.labels)
    elif model.output_names:
        out["outputs"] = [{"name": n, "unit": u} for n, u in zip(model.output_names, model.output_units)]
    c = confusion(result)
    if c is not None:
        out.update(accuracy=c.accuracy, labelled_predictions=c.total, unknown_labels=c.unknown,
                   confusion={"rows": "recorded label", "columns": "predicted", "counts": c.counts.tolist()})
    out["per_stream"] = {s: _stream_summary(result, s) for s in result.recordings}
    return out


def prediction_columns(model: Model, recorded_labels: bool) -> list[str]:
    """predictions.csv's header: stream, seq, t, y0..y{O-1}, then label and p (a model with labels)
    or each output by name (named outputs) as the daemon publishes them (protocol/payload.py),
    replay (1: an answer repeated), and the recorded label when the recording has labels."""
    names = ["label", "p"] if model.labels else list(model.output_names)
    return ["stream", "seq", "t", *(f"y{k}" for k in range(model.output_size)), *names, "replay",
            *(["recorded_label"] if recorded_labels else [])]


def write_predictions(result: ReplayResult, path: str | os.PathLike) -> Path:
    """predictions.csv (prediction_columns()); floats in the text the daemon's JSON has (repr of
    each float32 as a Python float), so y reads back bit for bit."""
    model, p = result.model, result.predictions
    recorded = any(r.labels is not None for r in result.recordings.values())
    labels, scores = model.labels, model.spec.scores
    with _created(path, newline="") as fh:
        out = csv.writer(fh, lineterminator="\n")
        out.writerow(prediction_columns(model, recorded))
        for k, ys in enumerate(p.y.tolist()):
            texts = list(map(repr, ys))
            if labels:
                top, prob = top_class(ys, scores) if all(map(math.isfinite, ys)) else (-1, math.nan)
                named = [labels[top] if top >= 0 else "", repr(prob)]
            else:
                named = texts if model.output_names else []
            row = [p.stream[k], int(p.seq[k]), repr(float(p.t[k])), *texts, *named, int(p.replayed[k])]
            out.writerow(row + [p.recorded_label[k]] if recorded else row)
    return Path(path)


def write_summary(result: ReplayResult, path: str | os.PathLike, extra: dict | None = None) -> Path:
    """summary() as JSON, with `extra` fields (e.g. the recording's and the model's paths) first."""
    with _created(path) as fh:
        json.dump({**(extra or {}), **summary(result)}, fh, indent=2)
        fh.write("\n")
    return Path(path)


def _created(path: str | os.PathLike, **kwargs):
    try:
        return open(path, "w", encoding="utf-8", **kwargs)
    except OSError as exc:
        raise ReplayError(f"cannot write {path} ({exc.strerror}): choose another output directory (-o DIR)") \
            from None
