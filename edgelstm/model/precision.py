"""Reduced-precision weights (issue 13): a model whose matrices are rounded to float16.

The kernels then read half the bytes per step (kernels/matvec.py widens each weight to float32
as it loads it; all math stays float32), which matters once the weights spill out of a core's
L2 cache (LSTM 128 x 2 on a Raspberry Pi). Only matrices are rounded (recurrent W_ih, W_hh,
W_hr, Linear and Conv1d weights); biases, normalisations and peepholes stay float32. The
rounded values are the model's weights from then on: every backend, export-c and the NumPy
oracle compute with them, so the only difference from the float32 model is the rounding,
which `edgelstm convert --weights float16` measures and prints.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..errors import ModelFormatError
from .layers import AttentionPool, CausalConv1d, Head, Linear

PRECISIONS = ("float32", "float16")
_F16_MAX = float(np.finfo(np.float16).max)


def rounded(matrix: np.ndarray, what: str) -> np.ndarray:
    """matrix rounded to the nearest float16, as float32."""
    peak = float(np.abs(matrix).max()) if matrix.size else 0.0
    if peak > _F16_MAX:
        raise ModelFormatError(f"{what} holds {peak:.3g}, beyond float16's range (+-65504): keep this model's "
                               f"weights in float32")
    return np.asarray(matrix, np.float32).astype(np.float16).astype(np.float32)


def is_half(matrix: np.ndarray) -> bool:
    """Whether every value of matrix is a float16 value."""
    with np.errstate(over="ignore"):
        return bool(np.array_equal(np.asarray(matrix, np.float32).astype(np.float16).astype(np.float32), matrix))


def half_layer(layer, what: str):
    """A graph layer with its matrices rounded to float16 (the others as they are)."""
    if isinstance(layer, Linear | CausalConv1d):
        return dataclasses.replace(layer, weight=rounded(layer.weight, what))
    if isinstance(layer, AttentionPool):
        return dataclasses.replace(layer, score=tuple(half_layer(x, f"{what} score") for x in layer.score))
    return layer


def half_head(head: Head, what: str) -> Head:
    return Head(head.name, tuple(half_layer(x, f"{what} {head.name}") for x in head.layers))


def matrices(spec) -> list[tuple[str, np.ndarray]]:
    """(name, matrix) of every matrix the kernels read through matvec."""
    out = []
    for k, layer in enumerate(spec.layers):
        out += [(f"layer {k} W_ih", layer.w_ih), (f"layer {k} W_hh", layer.w_hh)]
        if layer.w_hr is not None:
            out.append((f"layer {k} W_hr", layer.w_hr))

    def graph(layer, what):
        if isinstance(layer, Linear | CausalConv1d):
            out.append((what, layer.weight))
        elif isinstance(layer, AttentionPool):
            for x in layer.score:
                graph(x, f"{what} score")
    for prefix, chain in spec.chains():
        for k, layer in enumerate(chain):
            graph(layer, f"{prefix}{k}")
    return out
