"""edgelstm: stateful streaming LSTM/GRU inference for edge devices.

    model = edgelstm.load("model.pt")
    s = model.stream(); y = s.step(x)
    bank = model.bank(capacity=1024); Y = bank.step(ids, X)
"""

__version__ = "0.1.0"

from typing import TYPE_CHECKING

from .engine import Model, Stream, StreamBank, StreamState
from .errors import (
    EdgeLSTMError,
    InputError,
    ModelFormatError,
    NumericalError,
    StateError,
    UnsafePickleError,
)
from .kernels import cache  # noqa: F401  (sets the numba cache directory before numba loads)
from .model.layers import Activation, Affine, AttentionPool, CausalConv1d, Head, LayerNorm, Linear
from .model.loader import load
from .model.spec import ModelSpec, RecurrentLayer

if TYPE_CHECKING:
    from .model.from_torch import from_torch


def __getattr__(name: str):
    # from_torch pulls in the state_dict reader and the arch grammar: imported on first use, so
    # a daemon that only loads an .elstm starts faster (bench_startup.py)
    if name == "from_torch":
        from .model.from_torch import from_torch
        return from_torch
    raise AttributeError(f"module 'edgelstm' has no attribute {name!r}")


__all__ = [
    "Activation",
    "Affine",
    "AttentionPool",
    "CausalConv1d",
    "EdgeLSTMError",
    "InputError",
    "Model",
    "ModelFormatError",
    "ModelSpec",
    "Head",
    "from_torch",
    "LayerNorm",
    "Linear",
    "NumericalError",
    "RecurrentLayer",
    "StateError",
    "Stream",
    "StreamBank",
    "StreamState",
    "UnsafePickleError",
    "__version__",
    "load",
]
