"""`edgelstm convert`'s naming flags: --labels (class names) and --outputs (named outputs with
units), parsed into model/names.py's OutputNames and checked against the model."""

from __future__ import annotations

import argparse

from .errors import ModelFormatError
from .model.names import OutputNames
from .model.spec import ModelSpec


def add_name_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("naming the outputs (stored in the .elstm, shown by inspect, sent with predictions)")
    one = g.add_mutually_exclusive_group()
    one.add_argument("--labels", metavar="A,B,..",
                     help="class names, one per output column, e.g. still,walking,running: predictions "
                          "then carry \"label\" and \"p\"")
    one.add_argument("--outputs", metavar="NAME[:UNIT],..",
                     help="output names, one per column, each with an optional unit, e.g. "
                          "temperature:°C,humidity:%%: predictions then carry each as a field")


def parse_outputs(text: str) -> OutputNames:
    """OutputNames from --outputs' "name[:unit],...": the unit is what follows the first colon."""
    pairs = [item.partition(":") for item in text.split(",")]
    return OutputNames(outputs=tuple(n.strip() for n, _, _ in pairs), units=tuple(u.strip() for _, _, u in pairs))


def named(spec: ModelSpec, args) -> ModelSpec:
    """spec with the names the flags give (unchanged without them); ModelFormatError naming the flag."""
    flag, text = ("labels", args.labels) if args.labels is not None else ("outputs", args.outputs)
    if text is None:
        return spec
    try:
        names = OutputNames(labels=tuple(v.strip() for v in text.split(","))) if flag == "labels" \
            else parse_outputs(text)
        return spec.with_names(names)
    except ModelFormatError as exc:
        raise ModelFormatError(f"--{flag}: {exc}") from None

