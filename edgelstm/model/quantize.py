"""int8 weights with a float32 scale per row, for boards with small flash.

Every weight matrix W (rows = outputs: recurrent, Linear, and a causal convolution's weight with
its taps flattened per output channel) becomes q (int8, -127..127) and s (float32 per row) with
W ~= s[:, None] * q; biases, peepholes, normalisation and the state stay float32. The generated
C code (export-c --int8) computes s[r] * sum_j q[r, j] * v[j]; `dequantized_spec` is the same
model for the Python engine, so the daemon and the board can run identical numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .layers import AttentionPool, CausalConv1d, Linear
from .spec import ModelSpec, RecurrentLayer

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
    """Each weight matrix of the spec, quantised, under spec.named_arrays() names: the recurrent
    w_ih, w_hh and w_hr, every Linear's weight (attention scores included) and every causal
    convolution's, one row per output channel (its (C_in, K) taps flattened). Peephole weights
    are per-cell vectors, like biases, and stay float32."""
    return {name: quantize_matrix(a.reshape(a.shape[0], -1)) for name, a in spec.named_arrays().items()
            if a.ndim >= 2 and not name.endswith(".w_peep")}


def _dequantized(a: np.ndarray) -> np.ndarray:
    return quantize_matrix(a.reshape(a.shape[0], -1)).dequantized().reshape(a.shape)


def _dequantized_layer(layer):
    if isinstance(layer, (Linear, CausalConv1d)):
        return replace(layer, weight=_dequantized(layer.weight))
    if isinstance(layer, AttentionPool):
        return replace(layer, score=tuple(_dequantized_layer(s) for s in layer.score))
    return layer


def _dequantized_recurrent(layer: RecurrentLayer) -> RecurrentLayer:
    weights: dict[str, Any] = {name: _dequantized(getattr(layer, name)) for name in ("w_ih", "w_hh", "w_hr")
                               if getattr(layer, name) is not None}
    return replace(layer, **weights)


def dequantized_spec(spec: ModelSpec) -> ModelSpec:
    """The model as an int8 board computes it: every weight matrix replaced by s * q."""
    layers = tuple(_dequantized_recurrent(layer) for layer in spec.layers)
    pre, post = (tuple(_dequantized_layer(x) for x in chain) for chain in (spec.pre, spec.post))
    heads = tuple(replace(h, layers=tuple(_dequantized_layer(x) for x in h.layers)) for h in spec.heads)
    return replace(spec, layers=layers, pre=pre, post=post, heads=heads,
                   source={**spec.source, "quantized": "int8 per-row"})
