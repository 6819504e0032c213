"""`edgelstm export-c`: the model as portable C99 for a microcontroller.

Writes <name>.h (sizes, the state struct, reset/step) and <name>.c (weights as const arrays and
the step function), from the templates beside this module. float32 weights, or int8 with a
float32 scale per row (model/quantize.py; the state stays float32). No heap, no VLAs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import ModelFormatError
from ..model.quantize import quantize_matrix
from ..model.spec import ModelSpec

TEMPLATES = Path(__file__).resolve().parent / "templates"
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
        self.int8, self.chunks, self.bytes = int8, [], 0

    def floats(self, name: str, a: np.ndarray) -> str:
        values = np.asarray(a, np.float32).ravel()
        self._emit("float", name, [_float_literal(v) for v in values])
        self.bytes += 4 * values.size
        return name

    def matrix(self, name: str, w: np.ndarray) -> str:
        """A matrix initialiser {w, scale, cols} for the template's `matrix` struct."""
        rows, cols = w.shape
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
    parts = spec.classic_parts()
    if parts is None:
        raise ModelFormatError(f"export-c does not generate C for {spec.beyond_classic()} yet; the Python "
                               f"engine runs this model (edgelstm run / edgelstm.load)")
    in_norm, linear, out_norm = parts
    arrays = _Arrays(int8)
    table, offset = [], 0
    for k, layer in enumerate(spec.layers):
        p = f"L{k}"
        w_hr = arrays.matrix(f"{p}_W_HR", layer.w_hr) if layer.w_hr is not None else "{NULL, NULL, 0}"
        h_size, c_size = layer.state_sizes
        table.append(
            f"    {{{int(layer.kind == 'lstm')}, {layer.hidden_size}, {layer.output_size}, "
            f"{arrays.matrix(f'{p}_W_IH', layer.w_ih)}, {arrays.matrix(f'{p}_W_HH', layer.w_hh)}, {w_hr}, "
            f"{arrays.floats(f'{p}_B_IH', layer.b_ih)}, {arrays.floats(f'{p}_B_HH', layer.b_hh)}, "
            f"{offset}, {offset + h_size}}},")
        offset += h_size + c_size

    head = ""
    output = "        y[i] = in[i];"
    if linear is not None:
        head = (f"\nstatic const matrix HEAD = {arrays.matrix('HEAD_W', linear.weight)};\n"
                f"static const float *const HEAD_BIAS = {arrays.floats('HEAD_B', linear.bias)};\n")
        output = "        y[i] = HEAD_BIAS[i] + row_dot(&HEAD, i, in);"
    input_norm = "        scratch_in[i] = x[i];"
    if in_norm is not None:
        arrays.floats("IN_MEAN", in_norm.offset)
        arrays.floats("IN_SCALE", in_norm.scale)
        input_norm = "        scratch_in[i] = (x[i] - IN_MEAN[i]) * IN_SCALE[i];"
    if out_norm is not None:
        arrays.floats("OUT_MEAN", out_norm.shift)
        arrays.floats("OUT_STD", out_norm.scale)
        output += "\n        y[i] = y[i] * OUT_STD[i] + OUT_MEAN[i];"

    scratch_in, scratch_h = spec.input_size, max(layer.hidden_size for layer in spec.layers)
    footprint = Footprint(arrays.bytes, 4 * spec.state_size, 4 * (scratch_in + scratch_h))
    fields = {
        "@PU@": name.upper(), "@P@": name, "@VERSION@": __version__, "@HASH@": spec.content_hash(),
        "@DESCRIPTION@": description or _describe(spec), "@INT8@": str(int(int8)),
        "@WEIGHTS@": "int8 with a float32 scale per row" if int8 else "float32",
        "@FLASH@": f"{footprint.flash_bytes}", "@STATE_BYTES@": f"{footprint.state_bytes}",
        "@SCRATCH_BYTES@": f"{footprint.scratch_bytes}", "@INPUT_SIZE@": str(spec.input_size),
        "@OUTPUT_SIZE@": str(spec.output_size), "@STATE_SIZE@": str(spec.state_size),
        "@N_LAYERS@": str(len(spec.layers)), "@WEIGHT_ARRAYS@": "\n".join(arrays.chunks),
        "@LAYER_TABLE@": "\n".join(table), "@HEAD@": head,
        "@SCRATCH_IN@": str(scratch_in), "@SCRATCH_H@": str(scratch_h),
        "@INPUT_NORM@": input_norm, "@OUTPUT@": output,
    }
    files = {}
    for template, out in (("model.h.in", f"{name}.h"), ("model.c.in", f"{name}.c")):
        text = (TEMPLATES / template).read_text()
        for key, value in fields.items():
            text = text.replace(key, value)
        files[out] = text
    return files, footprint


def _float_literal(v) -> str:
    """A C float literal that reads back as exactly this float32 (9 significant digits)."""
    text = f"{float(v):.9g}"
    return text + ("f" if any(ch in text for ch in ".e") else ".0f")


def _describe(spec: ModelSpec) -> str:
    parts = [f"{layer.kind.upper()} {layer.input_size}->{layer.hidden_size}"
             + (f" (proj {layer.proj_size})" if layer.proj_size else "") for layer in spec.layers]
    linear = (spec.classic_parts() or (None, None, None))[1]
    if linear is not None:
        parts.append(f"Linear {linear.in_size}->{linear.out_size}")
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
