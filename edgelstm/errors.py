"""The exceptions edgelstm raises; every one says what to do next."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np


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

    # set by StreamBank.step (CPU and CUDA) before raising: every stream's output row, and
    # the ids of the streams that failed (their rows are not valid, their state is unchanged)
    outputs: np.ndarray
    failed_ids: list


class StateError(EdgeLSTMError, ValueError):
    """A saved state does not fit this model, or a bank is misused."""


class ConfigError(EdgeLSTMError):
    """A configuration value is missing or invalid."""


class BackendError(EdgeLSTMError):
    """The requested compute backend (e.g. "cuda") cannot be used on this machine."""


class Rejected(EdgeLSTMError, ValueError):
    """A message (payload, frame, line) to drop and count; `reason` is its counter label."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


class PayloadError(Rejected):
    """A reading's payload (MQTT message, frame body, text line) cannot be decoded."""


class FrameError(Rejected):
    """A serial frame that must be dropped (bad checksum, length, version...)."""


class CobsError(Rejected):
    """Bytes that are not valid COBS."""

    def __init__(self, detail: str, reason: str = "cobs"):
        super().__init__(reason, detail)


class CheckpointError(EdgeLSTMError, ValueError):
    """A checkpoint file is unusable or locked by another daemon."""


class RecordingError(EdgeLSTMError, ValueError):
    """A recording (edgelstm record's CSV or Parquet files) cannot be written or read back; the
    message names the file and, for CSV, the line."""


class ReplayError(EdgeLSTMError, ValueError):
    """A recording cannot be replayed or plotted (it does not fit the model, an output cannot be
    written, matplotlib is missing); the message says what to change."""


class BuildError(EdgeLSTMError):
    """The prebuilt kernels cannot be built on this machine (no C compiler, no setuptools, a
    compile failure); the message says what to install. The JIT keeps working without them."""
