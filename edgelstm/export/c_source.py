"""`edgelstm export-c`: the model as portable C99 for a microcontroller.

Writes <name>.h (sizes, the state struct, reset/step) and <name>.c (weights as const arrays and
the step function), from the templates beside this module: the whole layer graph (pre layers,
the LSTM/GRU stack, post layers, named heads), one static function per layer kind the model
uses (templates/layers.c.in) and a straight-line step that calls them (planned by c_layers.py).
float32 weights, or int8 with a float32 scale per row for every Linear, convolution and
recurrent matrix (model/quantize.py; norms, biases, peepholes, activations and the state stay
float32). No heap, no VLAs; libm only for the layers that need it (expf, erff, logf, sqrtf).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import __version__
from ..model.layers import describe as describe_layer
from ..model.quantize import quantize_matrix
from ..model.spec import ModelSpec
from .c_layers import TEMPLATES, Program, comment, float_literal, u16

PER_LINE = 8


@dataclass(frozen=True)
class Footprint:
    flash_bytes: int            # const data: weights, scales, biases, normalisation
    state_bytes: int            # RAM per stream
    scratch_bytes: int          # static RAM shared by all streams

    def describe(self) -> str:
        return (f"flash (const data) {self.flash_bytes:,} bytes; RAM {self.state_bytes:,} bytes per stream "
                f"+ {self.scratch_bytes:,} bytes scratch")


class _Arrays:
    """Collects the C array definitions and the bytes they take."""

    def __init__(self, int8: bool):
        self.int8, self.bytes = int8, 0
        self.chunks: list[str] = []

    def floats(self, name: str, a: np.ndarray) -> str:
        values = np.asarray(a, np.float32).ravel()
        self._emit("float", name, [float_literal(v) for v in values])
        self.bytes += 4 * values.size
        return name

    def matrix(self, name: str, w: np.ndarray) -> str:
        """A matrix initialiser {w, scale, cols} for the template's `matrix` struct."""
        rows, cols = w.shape
        u16(cols, f"the width of {name}")
        if not self.int8:
            return f"{{{self.floats(name, w)}, NULL, {cols}}}"
        m = quantize_matrix(w)
        self._emit("int8_t", name, [str(int(v)) for v in m.q.ravel()])
        self.bytes += m.q.size
        return f"{{{name}, {self.floats(name + '_SCALE', m.scale)}, {cols}}}"

    def _emit(self, ctype: str, name: str, items: list[str]) -> None:
        lines = [", ".join(items[i:i + PER_LINE]) for i in range(0, len(items), PER_LINE)] or ["0"]
        body = ",\n    ".join(lines)
        self.chunks.append(f"static const {ctype} {name}[{max(len(items), 1)}] = {{\n    {body}\n}};")


def render(spec: ModelSpec, name: str = "model", int8: bool = False,
           description: str = "") -> tuple[dict, Footprint]:
    """The generated files as {filename: text}, and the footprint they imply."""
    if not name.isidentifier() or not name.isascii():
        raise ValueError(f"name {name!r} must be a C identifier (letters, digits, _)")
    arrays = _Arrays(int8)
    program = Program(spec, arrays)
    footprint = Footprint(arrays.bytes, 4 * spec.state_size, 4 * program.scratch_floats)
    libm = program.libm()
    fields = {
        "@PU@": name.upper(), "@P@": name, "@VERSION@": __version__, "@HASH@": spec.content_hash(),
        "@DESCRIPTION@": comment(description or _describe(spec)), "@INT8@": str(int(int8)),
        "@WEIGHTS@": "int8 with a float32 scale per row" if int8 else "float32",
        "@LIBM@": f"libm: {', '.join(libm)} (link with -lm)" if libm else "no libm calls",
        "@FLASH@": f"{footprint.flash_bytes}", "@STATE_BYTES@": f"{footprint.state_bytes}",
        "@SCRATCH_BYTES@": f"{footprint.scratch_bytes}", "@INPUT_SIZE@": str(spec.input_size),
        "@OUTPUT_SIZE@": str(spec.output_size), "@STATE_SIZE@": str(spec.state_size),
        "@STATE_LAYOUT@": ", then ".join(program.layout), "@HEAD_MACROS@": _head_macros(spec, name.upper()),
        "@N_LAYERS@": str(len(spec.layers)), "@WEIGHT_ARRAYS@": "\n".join(arrays.chunks),
        "@LAYER_TABLE@": "\n".join(program.table),
        "@LAYER_CONSTS@": "".join(line + "\n" for line in program.consts),
        "@SCRATCH_H@": str(program.scratch_h), "@SCRATCH@": program.scratch(),
        "@FUNCTIONS@": "\n" + program.functions() + "\n", "@STEP@": "\n".join(program.calls),
    }
    files = {}
    for template, out in (("model.h.in", f"{name}.h"), ("model.c.in", f"{name}.c")):
        text = (TEMPLATES / template).read_text()
        for key, value in fields.items():
            text = text.replace(key, value)
        files[out] = text
    return files, footprint


def _head_macros(spec: ModelSpec, prefix: str) -> str:
    """Where each named head's values are in y (only while the names stay distinct in capitals)."""
    names = [h.name.upper() for h in spec.heads]
    if not names or len(set(names)) != len(names):
        return ""
    return "".join(f"#define {prefix}_{n}_AT {start}      /* y[{start}..{start + size}): head {name} */\n"
                   f"#define {prefix}_{n}_SIZE {size}\n"
                   for n, (name, start, size) in zip(names, spec.outputs))


def _describe(spec: ModelSpec) -> str:
    parts = [describe_layer(x) for x in spec.pre]
    parts += [f"{layer.kind.upper()} {layer.input_size}->{layer.hidden_size}"
              + (f" (proj {layer.proj_size})" if layer.proj_size else "")
              + (" (peephole)" if layer.w_peep is not None else "") for layer in spec.layers]
    parts += [describe_layer(x) for x in spec.post]
    parts += [f"head {h.name}: {' > '.join(describe_layer(x) for x in h.layers) or 'trunk'}" for h in spec.heads]
    return ", ".join(parts)


def export(spec: ModelSpec, out_dir: str | Path, name: str = "model",
           int8: bool = False) -> tuple[list[Path], Footprint]:
    """Write <name>.h and <name>.c into out_dir (created if missing)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files, footprint = render(spec, name, int8)
    paths = []
    for filename, text in files.items():
        (out / filename).write_text(text)
        paths.append(out / filename)
    return paths, footprint


__all__ = ["Footprint", "export", "render"]
