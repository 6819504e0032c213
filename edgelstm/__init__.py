"""edgelstm: stateful streaming LSTM/GRU inference for edge devices.

    model = edgelstm.load("model.pt")
    s = model.stream(); y = s.step(x)
    bank = model.bank(capacity=1024); Y = bank.step(ids, X)
"""

__version__ = "0.1.0"

from . import _numba  # noqa: F401,E402  (sets the numba cache directory before numba loads)
from .engine import Model, Stream, StreamBank, StreamState  # noqa: E402
from .errors import (  # noqa: E402
    EdgeLSTMError, InputError, ModelFormatError, NumericalError, StateError, UnsafePickleError,
)
from .model.loader import load  # noqa: E402
from .model.spec import Dense, ModelSpec, Normalisation, RecurrentLayer  # noqa: E402

__all__ = [
    "load", "Model", "Stream", "StreamBank", "StreamState", "ModelSpec", "RecurrentLayer", "Dense",
    "Normalisation", "EdgeLSTMError", "InputError", "ModelFormatError", "NumericalError",
    "StateError", "UnsafePickleError", "__version__",
]
