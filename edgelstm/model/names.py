"""Names for a model's output columns: class labels (a classifier) or named outputs, each with
an optional unit (a regression). Metadata only: they change nothing y is computed from.

Names apply to y as the model outputs it: every column, the heads side by side in order
(spec.outputs). So n labels or n output names for an output of size n. Labels name the classes
of one classifier, so a model with several heads takes output names, not labels (a label would
otherwise be the argmax over columns of different heads).

What a classifier's y holds, from the layer that writes it (scores_of):
  softmax      probabilities             p = y[top]
  sigmoid      a probability per column  p = y[top]
  log_softmax  log-probabilities         p = exp(y[top])
  anything     logits                    p = softmax(y)[top]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import ModelFormatError
from .layers import Activation

MAX_NAME = 64               # characters of a label or an output name
MAX_UNIT = 16               # characters of a unit
# the keys a prediction payload already has (protocol/payload.py): an output name cannot be one
PAYLOAD_KEYS = ("stream", "seq", "t_in", "t_out", "model", "y", "replay", "label", "p")
SCORES = ("logits", "probabilities", "log_probabilities")


def _check_name(name, what: str) -> str:
    if not isinstance(name, str):
        raise ModelFormatError(f"{what} must be text, got {type(name).__name__}")
    if not name:
        raise ModelFormatError(f"{what} is empty; give every column a name")
    if len(name) > MAX_NAME:
        raise ModelFormatError(f"{what} {name[:20]!r}... has {len(name)} characters; keep names to {MAX_NAME}")
    if "," in name or not name.isprintable():
        raise ModelFormatError(f"{what} {name!r} holds a comma or a control character; rename it")
    return name


def _check_unit(unit, name: str) -> str:
    if not isinstance(unit, str):
        raise ModelFormatError(f"the unit of {name!r} must be text, got {type(unit).__name__}")
    if len(unit) > MAX_UNIT or "," in unit or not unit.isprintable():
        raise ModelFormatError(f"the unit of {name!r} ({unit[:20]!r}) must be at most {MAX_UNIT} printable "
                               f"characters and no comma")
    return unit


def _unique(names: tuple[str, ...], what: str) -> None:
    if len(set(names)) != len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise ModelFormatError(f"{what} {twice!r} appears twice; every column needs its own name")


@dataclass(frozen=True)
class OutputNames:
    """Either labels (one class per column) or outputs with units (one per column), or neither."""

    labels: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    units: tuple[str, ...] = ()         # one per output, "" for none

    def __post_init__(self) -> None:
        for attr in ("labels", "outputs", "units"):
            if not isinstance(getattr(self, attr), (tuple, list)):
                raise ModelFormatError(f"output names: {attr} must be a list, got {type(getattr(self, attr)).__name__}")
            object.__setattr__(self, attr, tuple(getattr(self, attr)))
        if self.labels and self.outputs:
            raise ModelFormatError("a model has labels (a classifier) or named outputs (a regression), not both")
        if len(self.units) != len(self.outputs):
            raise ModelFormatError(f"{len(self.outputs)} output names but {len(self.units)} units; give one "
                                   f"unit per output (\"\" for none)")
        for label in self.labels:
            _check_name(label, "a label")
        for name, unit in zip(self.outputs, self.units):
            _check_name(name, "an output name")
            if name in PAYLOAD_KEYS:
                raise ModelFormatError(f"output name {name!r} is a key every prediction already has "
                                       f"({', '.join(PAYLOAD_KEYS)}); rename it")
            _check_unit(unit, name)
        _unique(self.labels, "label")
        _unique(self.outputs, "output name")

    def __bool__(self) -> bool:
        return bool(self.labels or self.outputs)

    @property
    def count(self) -> int:
        return len(self.labels) + len(self.outputs)

    def check_fits(self, output_size: int, heads: tuple[str, ...]) -> None:
        """Refuse names that do not match y: n names for n columns; labels only on one output."""
        if not self:
            return
        what = "labels" if self.labels else "output names"
        if self.count != output_size:
            raise ModelFormatError(f"{self.count} {what} for a model with {output_size} outputs; give one per "
                                   f"output column")
        if self.labels and len(heads) > 1:
            raise ModelFormatError(f"labels name the classes of one output, but this model has {len(heads)} heads "
                                   f"({', '.join(heads)}) side by side in y; name each column with output names "
                                   f"(--outputs) instead")

    def header(self) -> dict:
        """The deploy file's header fields: {"labels": [...]} or {"outputs": [{"name", "unit"}, ...]}
        (no "unit" where there is none), or {} for no names, so an unnamed model's file is as before."""
        if self.labels:
            return {"labels": list(self.labels)}
        if self.outputs:
            return {"outputs": [{"name": n, **({"unit": u} if u else {})} for n, u in zip(self.outputs, self.units)]}
        return {}

    @classmethod
    def from_header(cls, header: dict, output_size: int) -> OutputNames:
        """The inverse of header(); anything malformed (wrong types, unknown keys, more names than
        outputs) is ModelFormatError, found before any work proportional to a hostile list."""
        labels, outputs = header.get("labels", []), header.get("outputs", [])
        if not isinstance(labels, list) or not isinstance(outputs, list):
            raise ModelFormatError("\"labels\" and \"outputs\" must be lists")
        if len(labels) + len(outputs) > output_size:
            raise ModelFormatError(f"{len(labels) + len(outputs)} names for {output_size} outputs")
        names, units = [], []
        for item in outputs:
            if not isinstance(item, dict) or "name" not in item or set(item) - {"name", "unit"}:
                raise ModelFormatError(f"each output must be {{\"name\": ..., \"unit\": ...}}, got {item!r:.60}")
            names.append(item["name"])
            units.append(item.get("unit", ""))
        return cls(tuple(labels), tuple(names), tuple(units))

    def describe(self, scores: str) -> str:
        """One line, as `inspect` and `convert` print it."""
        if self.labels:
            rule = {"logits": "softmax(y)[top]", "probabilities": "y[top]", "log_probabilities": "exp(y[top])"}
            return f"  labels {', '.join(self.labels)}  (y holds {scores.replace('_', '-')}: p = {rule[scores]})"
        return "  outputs " + ", ".join(f"{n} [{u}]" if u else n for n, u in zip(self.outputs, self.units))


NO_NAMES = OutputNames()


def scores_of(last_layer) -> str:
    """What y holds (one of SCORES), from the layer that writes it (None: a recurrent layer's h)."""
    if isinstance(last_layer, Activation):
        if last_layer.kind in ("softmax", "sigmoid"):
            return "probabilities"
        if last_layer.kind == "log_softmax":
            return "log_probabilities"
    return "logits"


def top_class(values: list[float], scores: str) -> tuple[int, float]:
    """(column of the largest value, its probability) of a finite y, by the rule of `scores`.
    The first of equal values wins, as numpy.argmax."""
    best = max(values)
    top = values.index(best)
    if scores == "probabilities":
        return top, best
    if scores == "log_probabilities":
        return top, math.exp(min(best, 0.0))    # log_softmax is <= 0; above it is rounding, not a p over 1
    exp = math.exp
    return top, 1.0 / sum([exp(v - best) for v in values])     # the top term is 1: no overflow, no 0/0
