"""int8 weights with a float32 scale per row, for boards with small flash.

Every weight matrix W (rows = outputs) becomes q (int8, -127..127) and s (float32 per row) with
W ~= s[:, None] * q; biases, normalisation and the recurrent state stay float32. The generated
C code (export-c --int8) computes s[r] * sum_j q[r, j] * v[j]; `dequantized_spec` is the same
model for the Python engine, so the daemon and the board can run identical numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .layers import Linear
from .spec import ModelSpec

QMAX = 127      # symmetric: -128 is never used, so negation cannot overflow


@dataclass(frozen=True)
class Int8Matrix:
    q: np.ndarray           # (rows, cols) int8
    scale: np.ndarray       # (rows,) float32

    def dequantized(self) -> np.ndarray:
        return self.q.astype(np.float32) * self.scale[:, None]


def quantize_matrix(w: np.ndarray) -> Int8Matrix:
    """Per-row symmetric quantisation: the largest |w| of each row maps to 127."""
    w = np.asarray(w, np.float32)
    peak = np.abs(w).max(axis=1) if w.shape[1] else np.zeros(w.shape[0], np.float32)
    scale = np.where(peak > 0, peak / QMAX, 1.0).astype(np.float32)
    q = np.clip(np.rint(w / scale[:, None]), -QMAX, QMAX).astype(np.int8)
    return Int8Matrix(q, scale)


def quantized_matrices(spec: ModelSpec) -> dict[str, Int8Matrix]:
    """Each weight matrix of the spec, quantised, under spec.named_arrays() names."""
    return {name: quantize_matrix(a) for name, a in spec.named_arrays().items()
            if a.ndim == 2}


def dequantized_spec(spec: ModelSpec) -> ModelSpec:
    """The model as an int8 board computes it: every weight matrix replaced by s * q."""
    mats = quantized_matrices(spec)
    layers = []
    for k, layer in enumerate(spec.layers):
        d = {name: mats[f"layers.{k}.{name}"].dequantized() for name in ("w_ih", "w_hh", "w_hr")
             if f"layers.{k}.{name}" in mats}
        layers.append(replace(layer, **d))
    chains = {}
    for prefix, chain in spec.chains():
        chains[prefix] = tuple(replace(x, weight=mats[f"{prefix}{k}.weight"].dequantized())
                               if isinstance(x, Linear) else x for k, x in enumerate(chain))
    heads = tuple(replace(h, layers=chains[f"heads.{h.name}."]) for h in spec.heads)
    return replace(spec, layers=tuple(layers), pre=chains["pre."], post=chains["post."], heads=heads,
                   source={**spec.source, "quantized": "int8 per-row"})
