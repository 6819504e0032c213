"""`edgelstm export-c`: portable C99 for a microcontroller, and what int8 weights cost."""

from __future__ import annotations

from typing import TextIO

import numpy as np

from ..errors import ModelFormatError


def run_export_c(args, load_options, out: TextIO) -> int:
    """The command on parsed `args`; load_options(args): the model-loading options (cli._load_options);
    the report goes to `out`."""
    from ..model.loader import load_spec
    from .c_source import export
    spec = load_spec(args.model, **load_options(args))
    try:
        paths, footprint = export(spec, args.output, args.name, args.int8)
    except ValueError as exc:
        raise ModelFormatError(str(exc)) from None
    out.write(f"wrote {', '.join(str(p) for p in paths)}\n")
    out.write(spec.describe() + "\n")
    out.write(f"  weights {'int8 + float32 row scales' if args.int8 else 'float32'}: {footprint.describe()}\n")
    if args.int8:
        out.write(f"  int8 vs float32 over 1,000 random steps: max |y difference| {_int8_error(spec):.2e} "
                  "(the same int8 model in Python: edgelstm.model.quantize.dequantized_spec)\n")
    out.write(f"  add {paths[1].name} to your firmware and include {paths[0].name}; see firmware_bridge/README.md\n")
    return 0


def _int8_error(spec, steps: int = 1000) -> float:
    from ..engine import Model
    from ..model.quantize import dequantized_spec
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(steps, spec.input_size)).astype(np.float32)
    norm = (spec.classic_parts() or (None,))[0]
    if norm is not None:                   # readings in the sensor's own units
        xs = xs / norm.scale + norm.offset
    ys = [Model(s).stream().step_many(xs) for s in (spec, dequantized_spec(spec))]
    return float(np.abs(ys[0] - ys[1]).max())
