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


def add_precision_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--precision", choices=("float32", "float16"), default="float32",
                   help="how the weight matrices are stored for the CPU kernels: float16 halves the bytes read "
                        "per step (math stays float32) for models too big for the CPU's cache; convert prints "
                        "the error it costs. The CUDA backend runs float32 models only (default: float32)")


def with_precision(spec: ModelSpec, args, steps: int = 1000) -> tuple[ModelSpec, str]:
    """spec stored as --precision says, and a line saying what float16 costs (empty for float32):
    the largest difference from the float32 model over `steps` readings (the normalised inputs'
    scale when the model normalises them, else standard normal)."""
    if args.precision == "float32":
        return spec, ""
    import numpy as np

    from .engine import Model
    from .model.layers import Affine
    half = spec.with_weights(args.precision)
    z = np.random.default_rng(0).standard_normal((steps, spec.input_size))
    first = spec.pre[0] if spec.pre else None
    xs = (first.offset + z / first.scale if isinstance(first, Affine) else z).astype(np.float32)
    exact, rounded = Model(spec).stream().step_many(xs), Model(half).stream().step_many(xs)
    diff = float(np.abs(exact - rounded).max())
    scale = float(np.abs(exact).max())
    return half, (f"{args.precision} weights: max |y - y_float32| = {diff:.2g} over {steps:,} streamed readings "
                  f"(outputs up to {scale:.3g}); check it against your tolerance with `edgelstm verify`")
