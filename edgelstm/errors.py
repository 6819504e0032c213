"""The exceptions edgelstm raises; every one says what to do next."""


class EdgeLSTMError(Exception):
    """Base class of every error raised by edgelstm."""


class ModelFormatError(EdgeLSTMError):
    """A model file or state dict cannot be turned into a streaming model."""


class UnsafePickleError(ModelFormatError):
    """A .pt file asked the unpickler for something outside the allow-list."""


class InputError(EdgeLSTMError, ValueError):
    """A reading has the wrong shape or dtype, or holds NaN/Inf. State is unchanged."""


class NumericalError(EdgeLSTMError, FloatingPointError):
    """A step produced NaN/Inf (an overflowing model). State is unchanged."""


class StateError(EdgeLSTMError, ValueError):
    """A saved state does not fit this model, or a bank is misused."""


class ConfigError(EdgeLSTMError):
    """A configuration value is missing or invalid."""


class BackendError(EdgeLSTMError):
    """The requested compute backend (e.g. "cuda") cannot be used on this machine."""
