"""The pictures of a replay (edgelstm replay --plot), drawn with matplotlib: pip install 'edgelstm[plot]'.

    plot_stream(result, "wrist1", "out/wrist1.png")     # inputs, outputs, predicted class; resets marked
    plot_confusion(result, "out/confusion.png")         # when the recording and the model have labels

matplotlib's object API (Figure, no pyplot): nothing global is touched, no display is needed.
Lines longer than MAX_POINTS are thinned to every k-th point, which is plenty for a picture (a
class held for fewer than k readings may then not show).
"""

from __future__ import annotations

import os
import re
import time
import zlib
from pathlib import Path

import numpy as np

from .errors import ReplayError
from .replay import ReplayResult, class_indices, confusion, probabilities

INSTALL = "pip install 'edgelstm[plot]'"
DPI = 80
MAX_POINTS = 20_000             # per line
GAP_FACTOR = 5.0                # a pause in t this many times the usual step breaks the lines
MAX_INPUT_LINES = 8             # x0..x7 drawn; more inputs would be an unreadable tangle
RESET_COLOURS = {"reboot": "tab:red", "resync": "tab:purple", "time_gap": "tab:orange", "nonfinite": "tab:cyan",
                 "numerical": "black", "requested": "tab:gray"}
RESERVED = {"confusion", "predictions", "summary"}        # the other files in the output directory
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def require_matplotlib():
    """matplotlib.figure.Figure, or ReplayError saying how to install it."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ReplayError(f"--plot needs matplotlib: {INSTALL} (predictions.csv and summary.json need nothing: "
                          "leave out --plot to write only those)") from None
    return Figure


def safe_file_name(stream: str, taken: set[str]) -> str:
    """A file name stem for `stream`: its id when that is plain ASCII letters, digits, '.', '_', '-'
    (not starting with '.', not one of RESERVED, not taken), else a cleaned id with a short hash
    of the real one; added to `taken`. Case-insensitive file systems are counted with."""
    stem = _UNSAFE.sub("_", stream)[:80].lstrip(".") or "stream"
    if stem != stream or stem.lower() in RESERVED or stem.lower() in taken:
        base = stem = f"{stem}-{zlib.crc32(stream.encode('utf-8', 'surrogatepass')):08x}"
        n = 1
        while stem.lower() in taken:                # two ids with the same hash: numbered
            stem, n = f"{base}~{n}", n + 1
    taken.add(stem.lower())
    return stem


def _thin(n: int) -> slice:
    return slice(None, None, max(1, -(-n // MAX_POINTS)))


def _broken(t: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """t (k,) and values (k, m) with a NaN row wherever t jumps by over GAP_FACTOR times its usual
    step, so that a line stops at a pause in the readings instead of bridging it."""
    dt = np.diff(t)
    steps = dt[dt > 0]
    if not len(steps):
        return t, values
    at = np.flatnonzero(dt > GAP_FACTOR * float(np.median(steps))) + 1
    return np.insert(t, at, np.nan), np.insert(values.astype(np.float64), at, np.nan, axis=0)


def _clock(t: np.ndarray, t0: float) -> np.ndarray:
    """Seconds since t0; a reading without t (NaN) drawn at the t before it."""
    known = ~np.isnan(t)
    if not known.all():
        last = np.maximum.accumulate(np.where(known, np.arange(len(t)), 0))
        t = np.where(known, t, t[last])
    return np.nan_to_num(t - t0, nan=0.0)


def _start(result: ReplayResult, stream: str) -> float:
    t = result.recordings[stream].t
    known = t[~np.isnan(t)]
    return float(known.min()) if len(known) else 0.0


def _mark_resets(axes, resets: list[tuple[str, float]], t0: float) -> None:
    """A vertical line per reset (reason, clock) on every panel, one legend entry per reason."""
    seen: set[str] = set()
    for reason, when in resets:
        first = reason not in seen
        seen.add(reason)
        for k, ax in enumerate(axes):
            ax.axvline(when - t0, color=RESET_COLOURS.get(reason, "tab:gray"), linestyle="--", linewidth=1.3,
                       label=f"reset: {reason}" if first and k == 0 else None)


def plot_stream(result: ReplayResult, stream: str, path: str | os.PathLike) -> Path:
    """One stream's PNG: its inputs, the model's outputs (class probabilities for a model with
    labels) and, with labels, the predicted class against the recorded one, over t; resets as
    vertical lines."""
    Figure = require_matplotlib()
    rec, model = result.recordings[stream], result.model
    p = result.predictions
    rows = result.rows_of(stream)
    rows = rows[~p.replayed[rows]]                  # an answer repeated is drawn once
    t0 = _start(result, stream)
    labelled = bool(model.labels)
    panels = 3 if labelled else 2
    fig = Figure(figsize=(11, 2.4 * panels + 0.8), dpi=DPI, layout="constrained")
    axes = fig.subplots(panels, 1, sharex=True)

    ax = axes[0]
    every = _thin(len(rec))
    n = rec.x.shape[1]
    t_in, x = _broken(_clock(rec.t, t0)[every], rec.x[every, :MAX_INPUT_LINES])
    for k in range(x.shape[1]):
        ax.plot(t_in, x[:, k], linewidth=0.8, label=f"x{k}")
    ax.set_ylabel("input")
    ax.set_title(f"inputs ({n} per reading{f', the first {MAX_INPUT_LINES} drawn' if n > MAX_INPUT_LINES else ''})",
                 loc="left", fontsize=10)

    ax = axes[1]
    every = _thin(len(rows))
    y = p.y[rows][every]
    if labelled:
        recorded = class_indices(p.recorded_label[rows][every], model.labels).astype(float)
        recorded[recorded < 0] = np.nan                 # no label, or not one of the model's classes: a gap
        columns = np.column_stack([probabilities(y, model.spec.scores), np.argmax(y, axis=1), recorded])
        t_out, columns = _broken(_clock(p.t[rows], t0)[every], columns)
        for k, label in enumerate(model.labels):
            ax.plot(t_out, columns[:, k], linewidth=0.9, label=label)
        ax.set_ylabel("probability")
        ax.set_ylim(-0.05, 1.05)
    else:
        t_out, y = _broken(_clock(p.t[rows], t0)[every], y)
        names = model.output_names or tuple(f"y{k}" for k in range(model.output_size))
        units = model.output_units or ("",) * len(names)
        for k, (name, unit) in enumerate(zip(names, units)):
            ax.plot(t_out, y[:, k], linewidth=0.9, label=f"{name} [{unit}]" if unit else name)
        ax.set_ylabel("output")
    ax.set_title("outputs" + (" (class probabilities)" if labelled else ""), loc="left", fontsize=10)

    if labelled:
        ax = axes[2]
        n_classes = len(model.labels)
        ax.step(t_out, columns[:, n_classes], where="post", linewidth=1.4, label="predicted")
        if rec.labels is not None:
            ax.step(t_out, columns[:, n_classes + 1], where="post", linewidth=1.0, linestyle="--", color="black",
                    label="recorded")
        ax.set_yticks(range(len(model.labels)), model.labels)
        ax.set_ylim(-0.5, len(model.labels) - 0.5)
        ax.set_ylabel("class")
        ax.set_title("predicted class" + (" and recorded label" if rec.labels is not None else ""), loc="left",
                     fontsize=10)

    resets = [(reason, when) for s, reason, when in result.resets if s == stream]
    _mark_resets(axes, resets, t0)
    for ax in axes:
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=8, frameon=False)   # beside, not over
    start = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t0)) if t0 > 0 else "the first reading"
    axes[-1].set_xlabel(f"t (s) since {start}")
    title = f"stream {stream}: {len(rec):,} readings, {len(rows):,} predictions, {_resets_text(resets)}"
    c = confusion(result, stream)
    if c is not None and c.accuracy is not None:
        title += f" | accuracy {c.accuracy:.1%} of {c.total:,} labelled"
    fig.suptitle(title, fontsize=11)
    return _saved(fig, path)


def _resets_text(resets: list[tuple[str, float]]) -> str:
    counts: dict[str, int] = {}
    for reason, _ in resets:
        counts[reason] = counts.get(reason, 0) + 1
    return "resets: " + (", ".join(f"{r} {n}" for r, n in counts.items()) if counts else "none")


def plot_confusion(result: ReplayResult, path: str | os.PathLike) -> Path | None:
    """Recorded label (rows) against predicted class (columns), counts in the cells, over every
    stream; None (nothing written) unless the recording and the model have labels."""
    c = confusion(result)
    if c is None:
        return None
    Figure = require_matplotlib()
    size = 2.5 + 0.6 * len(c.classes)
    fig = Figure(figsize=(size + 1.2, size), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(c.counts, cmap="Blues")
    fig.colorbar(image, ax=ax, label="predictions")
    ticks = range(len(c.classes))
    ax.set_xticks(ticks, c.classes, rotation=30 if max(map(len, c.classes)) > 6 else 0)
    ax.set_yticks(ticks, c.classes)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("recorded label (true)")
    high = c.counts.max() if c.counts.size else 0
    for (i, j), count in np.ndenumerate(c.counts):
        ax.text(j, i, f"{count:,}", ha="center", va="center", fontsize=9,
                color="white" if high and count > 0.6 * high else "black")
    accuracy = f"accuracy {c.accuracy:.1%}" if c.accuracy is not None else "no labelled predictions"
    unknown = f", {c.unknown:,} with other labels left out" if c.unknown else ""
    ax.set_title(f"{len(result.recordings)} stream(s): {accuracy} of {c.total:,} labelled predictions{unknown}",
                 fontsize=10)
    return _saved(fig, path)


def _saved(fig, path: str | os.PathLike) -> Path:
    try:
        fig.savefig(path, dpi=DPI)
    except OSError as exc:
        raise ReplayError(f"cannot write {path} ({exc.strerror}): choose another output directory (-o DIR)") \
            from None
    return Path(path)

