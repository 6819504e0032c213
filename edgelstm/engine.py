"""The streaming engine: a Model, the Stream of one sensor, and the StreamBank of many.

Each object keeps weights (the Model's, shared and read-only), per-stream state (h and c of
every layer, owned here, never by the caller) and scratch buffers apart. Calls validate their
inputs, run one compiled kernel, and leave state untouched when they raise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .errors import InputError, ModelFormatError, NumericalError, StateError
from .kernels import contract, entries
from .kernels.layout import WORK_WIDTH, pack, plain_graph, stateless_graph
from .kernels.products import GemmBank, blas_is_fast, min_streams
from .model.spec import ModelSpec
from .progress import notice_if_slow

_F32 = np.dtype(np.float32)
_NDARRAY = np.ndarray
# what Model.warmup(status=...) says while it waits on numba
COMPILING = "compiling kernels (first run only, can take a while on a small board)"
LOADING = "loading compiled kernels from the cache"


@dataclass(frozen=True)
class StreamState:
    """A copy of one stream's recurrent state, tied to the model it came from."""

    model_hash: str
    values: np.ndarray          # (S,) float32: [h_0, c_0, h_1, c_1, ...] (no c for GRU layers)

    def layers(self, model: Model) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """The state as (h, c) per layer (c is None for GRU layers)."""
        out, off = [], 0
        for layer in model.spec.layers:
            h_size, c_size = layer.state_sizes
            h = self.values[off:off + h_size]
            c = self.values[off + h_size:off + h_size + c_size] if c_size else None
            out.append((h, c))
            off += h_size + c_size
        return out


class Model:
    """A loaded model, ready to stream. Create with edgelstm.load(...) or Model(spec)."""

    def __init__(self, spec: ModelSpec):
        self.spec = spec
        self.params, self.meta = pack(spec)        # (P,) f32, (M,) i64; read-only
        self.content_hash = spec.content_hash()
        # the hash this model had in an older .elstm format: checkpoints written under it still fit
        self.former_hashes = tuple(h for h in (spec.source.get("content_sha256_v1"),) if isinstance(h, str))
        self.input_size, self.output_size = spec.input_size, spec.output_size
        self.state_size = spec.state_size
        # names of y's columns (model/names.py), empty when the model has none
        self.labels: tuple[str, ...] = spec.names.labels
        self.output_names: tuple[str, ...] = spec.names.outputs
        self.output_units: tuple[str, ...] = spec.names.units      # "" where an output has no unit
        self._kernel = None
        self._sequence = None                            # sequence_kernel()
        self.seq_weights: np.ndarray | None = None       # its transposed weights, on first use
        # step_many runs layer by layer (kernels/sequence.py) when the model allows it
        self.layerwise = plain_graph(self.meta) and contract.sequence_ok(self.meta)
        # banks step big batches as matrix products (kernels/products.py) for the same models
        self.gemm = (contract.sequence_ok(self.meta) and stateless_graph(self.meta)
                     and blas_is_fast())
        self._gemm_kernels = None
        self.gemm_min = min_streams(self.meta)      # the smallest batch that takes them

    def kernel(self):
        """The compiled entry point kernels.cpu.step, or step_graph (kernels/entries.py: prebuilt,
        or compiled or loaded from numba's cache on first use). Streams and banks call it with the
        same argument types, so there is one compile per entry point, shared by every model."""
        if self._kernel is None:
            self._kernel = entries.get(self._kernel_names()[0])
        return self._kernel

    def sequence_kernel(self):
        """kernels.sequence.step_sequence, as kernel(). Its transposed weights (seq_weights, as
        many bytes again as the recurrent layers') are built only when a stream first runs
        step_many (sequence_weights())."""
        if self._sequence is None:
            self._sequence = entries.get("step_sequence")
        return self._sequence

    def gemm_kernels(self):
        """kernels.bank_gemm's three kernels (gather, layer_gates, finish), as kernel()."""
        if self._gemm_kernels is None:
            self._gemm_kernels = tuple(entries.get(name) for name in self._kernel_names(banks=True)[1:])
        return self._gemm_kernels

    def _kernel_names(self, sequences: bool = False, banks: bool = False) -> list[str]:
        """The entries (kernels/entries.py) this model runs: its step, then the others asked for."""
        plain = plain_graph(self.meta)
        names = ["step" if plain else "step_graph"]
        names += ["step_sequence"] if sequences and self.layerwise else []
        names += ["gather" if plain else "gather_graph", "layer_gates", "finish" if plain else "finish_graph"] \
            if banks and self.gemm else []
        return names

    def sequence_weights(self) -> np.ndarray:
        if self.seq_weights is None:
            self.seq_weights = contract.transposed_weights(self.meta, self.params)
        return self.seq_weights

    def new_seq(self) -> np.ndarray:
        """Scratch for the layer-wise sequence kernel: (T_BLOCK, seq_width) float32."""
        return np.zeros((contract.T_BLOCK, contract.seq_width(self.meta)), np.float32)

    def stream(self) -> Stream:
        """A new stream with zero state."""
        return Stream(self)

    def bank(self, capacity: int = 1024, backend: str = "cpu", products: bool = True) -> StreamBank:
        """Room for `capacity` independent streams, stepped together in one kernel call.
        backend: "cpu", "cuda" (a GPU; BackendError if none) or "auto" (see backends.py).
        products: big batches as matrix products (kernels/products.py: faster, and within
        1e-6 of stepping each stream alone); False keeps every result bit for bit what
        Stream.step gives, as the daemon does so that its answers replay exactly."""
        from .backends import make_bank
        return make_bank(self, capacity, backend, products)

    def new_work(self) -> np.ndarray:
        """Scratch for one kernel call: (TILE, WORK_WIDTH) float32."""
        return np.zeros((contract.TILE, int(self.meta[WORK_WIDTH])), np.float32)

    def warmup(self, sequences: bool = False, banks: bool = False,
               status: Callable[[str], None] | None = None) -> None:
        """Compile (or load from the cache) the step kernel now instead of on the first reading;
        with sequences=True also the layer-wise one step_many uses, with banks=True the matrix-
        product kernels a bank uses for big batches (`edgelstm warmup` does all three; the
        daemon never runs step_many, so it does not wait for that compile).

        status: called once, from a timer thread, with a line saying what is happening
        (COMPILING, or LOADING when the cache holds these kernels) if the work is still going
        after half a second; never after warmup returns. None: silent."""
        text = LOADING if status and self._cached(sequences, banks) else COMPILING
        with notice_if_slow(status, text):
            self.kernel()
            if sequences and self.layerwise:
                self.sequence_kernel()
            if banks and self.gemm:
                self.gemm_kernels()

    def _cached(self, sequences: bool, banks: bool) -> bool:
        """Whether every kernel warmup(sequences, banks) needs is prebuilt or in numba's cache."""
        return entries.ready(self._kernel_names(sequences, banks))

    def label_of(self, y) -> str:
        """The label of y's largest value (a prediction (O,) of this model); ModelFormatError without labels."""
        if not self.labels:
            raise ModelFormatError("this model has no labels; convert it with --labels (edgelstm convert --help)")
        y = np.asarray(y)
        if y.shape != (self.output_size,):
            raise InputError(f"y has shape {y.shape}; this model's predictions are ({self.output_size},)")
        return self.labels[int(np.argmax(y))]

    @property
    def parameter_count(self) -> int:
        return self.spec.parameter_count

    @property
    def memory_bytes(self) -> int:
        """Bytes of packed weights the kernels read per step."""
        return int(self.params.nbytes)

    def __repr__(self) -> str:
        return (f"<edgelstm.Model {self.input_size} -> {self.output_size}, "
                f"{len(self.spec.layers)} layer(s), {self.parameter_count} parameters, "
                f"hash {self.content_hash[:12]}>")

    def check_input(self, x, rows: int | None) -> np.ndarray:
        """x as a C-contiguous float32 array of shape (I,) or (rows, I); raises InputError."""
        if type(x) is np.ndarray and x.dtype == _F32 and x.flags.c_contiguous:
            arr = x
        else:
            try:
                src = np.asarray(x)
            except (TypeError, ValueError) as exc:
                raise InputError(f"reading is not numeric: {exc}") from None
            if src.dtype.kind not in "fiub":
                raise InputError(f"reading has dtype {src.dtype}; expected float32 (or a type that "
                                 f"casts safely to it)")
            # float64 is accepted (NumPy's default) but values beyond float32's range are not.
            if (src.dtype.kind == "f" and src.dtype.itemsize > 4 and src.size
                    and np.nanmax(np.abs(np.where(np.isinf(src), 0, src))) > np.finfo(np.float32).max):
                raise InputError("reading overflows float32 (|value| > 3.4e38)")
            arr = np.ascontiguousarray(src, dtype=np.float32)
        want = (self.input_size,) if rows is None else (rows, self.input_size)
        if arr.shape != want:
            what = "reading" if rows is None else "batch"
            raise InputError(f"{what} has shape {arr.shape}; this model expects {want}")
        return arr


class Stream:
    """One sensor's stream: state carried from each step to the next.

    >>> s = model.stream(); y = s.step(x)     # x (I,) -> y (O,)
    """

    def __init__(self, model: Model):
        self.model = model
        self._state = np.zeros((1, model.state_size), np.float32)  # (1, S)
        self._work = model.new_work()
        self._status = np.zeros(1, np.int8)
        self._rows = np.zeros(1, np.int64)                         # its state row
        self._step = model.kernel()
        self._seq: np.ndarray | None = None                        # layer-wise scratch, on first use
        self._in_shape, self._out_size = (model.input_size,), model.output_size
        self.steps = 0

    def step(self, x, out: np.ndarray | None = None) -> np.ndarray:
        """Feed one reading x (I,), return the prediction (O,); `out` (O,) float32 receives it
        without allocating. On InputError or NumericalError the state is unchanged, so the next
        good reading continues as if this one never came."""
        # Fast path first: this method's own overhead is a visible share of a 4 us step.
        if not (type(x) is _NDARRAY and x.dtype is _F32 and x.shape == self._in_shape and x.flags.c_contiguous):
            x = self.model.check_input(x, None)
        if out is None:
            y = np.empty(self._out_size, _F32)
        else:
            y = out
            if not (type(out) is _NDARRAY and out.dtype is _F32 and out.shape == (self._out_size,)
                    and out.flags.c_contiguous and out.flags.writeable):
                raise InputError(f"out must be a writable C-contiguous float32 array of shape ({self._out_size},)")
        rc = self._step(self.model.params, self.model.meta, self._state, self._rows, x, y, self._work, self._status)
        if rc:
            raise self._error(rc, 0)
        self.steps += 1
        return y

    def step_many(self, X) -> np.ndarray:
        """Feed T readings X (T, I), return (T, O): the same as T calls of step, in one call
        (to within 1e-6 where it runs layer by layer: Model.layerwise and T >= 2; kernels/sequence.py).
        All or nothing: if any reading is bad, nothing is applied."""
        X = self.model.check_input(X, np.shape(X)[0] if np.ndim(X) == 2 else -1)
        Y = np.empty((X.shape[0], self.model.output_size), np.float32)
        if self.model.layerwise and X.shape[0] >= contract.MIN_STEPS:
            if self._seq is None:
                self._seq = self.model.new_seq()
                self._run_seq = self.model.sequence_kernel()
                self.model.sequence_weights()
            rc = self._run_seq(self.model.params, self.model.seq_weights, self.model.meta, self._state, self._rows,
                               X.reshape(-1), Y.reshape(-1), self._work, self._seq, self._status)
        else:
            rc = self._step(self.model.params, self.model.meta, self._state, self._rows, X.reshape(-1),
                            Y.reshape(-1), self._work, self._status)
        if rc:
            raise self._error(rc, abs(rc) - 1)
        self.steps += X.shape[0]
        return Y

    @staticmethod
    def _error(rc: int, t: int) -> Exception:
        if rc < 0:
            return InputError(f"reading {t} holds NaN or Inf; nothing was applied and the "
                              f"stream's state is unchanged (clean or drop the reading)")
        return NumericalError(f"step {t} produced NaN/Inf (the model overflowed); the state is "
                              f"unchanged: reset() the stream or check the input scale")

    def reset(self) -> None:
        """Back to zero state, as a new stream."""
        self._state[:] = 0
        self.steps = 0

    def get_state(self) -> StreamState:
        return StreamState(self.model.content_hash, self._state[0].copy())

    def set_state(self, state: StreamState) -> None:
        self._state[0] = _checked_state(self.model, state)


def _checked_state(model: Model, state: StreamState) -> np.ndarray:
    if not isinstance(state, StreamState):
        raise StateError(f"expected a StreamState from get_state(), got {type(state).__name__}")
    if state.model_hash != model.content_hash:
        raise StateError(f"state belongs to model {state.model_hash[:12]}, not {model.content_hash[:12]}; "
                         f"states cannot move between different models")
    values = np.asarray(state.values, np.float32)
    if values.shape != (model.state_size,) or not np.isfinite(values).all():
        raise StateError(f"state must be {model.state_size} finite floats")
    return values


class StreamBank:
    """Many independent streams keyed by any hashable id, stepped in one kernel call.

    >>> bank = model.bank(capacity=1024); Y = bank.step(ids, X)   # X (k, I) -> Y (k, O)
    A new id gets a zero state on first use; evict(id) frees its slot.
    """

    def __init__(self, model: Model, capacity: int, products: bool = True):
        if capacity < 1:
            raise StateError("capacity must be at least 1")
        self.model = model
        self.products = products and model.gemm                             # see Model.bank
        self.capacity = capacity
        self._state = np.zeros((capacity, model.state_size), np.float32)   # (N, S)
        self._work = model.new_work()
        self._status = np.zeros(capacity, np.int8)
        self._rows: dict = {}                                               # id -> state row
        self._free = list(range(capacity - 1, -1, -1))
        self._step = model.kernel()
        self._gemm: GemmBank | None = None      # its buffers, on the first big batch

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, stream_id) -> bool:
        return stream_id in self._rows

    @property
    def ids(self) -> list:
        return list(self._rows)

    def rows_for(self, ids) -> np.ndarray:
        """State rows for `ids`, creating zero-state streams for new ids; raises StateError if
        an id repeats or the bank is full (nothing is created then)."""
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if list(ids).count(i) > 1)
            raise StateError(f"stream {dup!r} appears twice in one batch; step it in two calls")
        try:                                    # the common case, every id known: one pass in C
            return np.fromiter(map(self._rows.__getitem__, ids), np.int64, len(ids))
        except KeyError:
            pass
        new = [i for i in ids if i not in self._rows]
        if len(new) > len(self._free):
            raise StateError(f"bank is full ({self.capacity} streams): evict idle streams with "
                             f"evict(id) or create the bank with a larger capacity")
        for stream_id in new:
            row = self._free.pop()
            self._write_row(row, None)
            self._rows[stream_id] = row
        return np.fromiter(map(self._rows.__getitem__, ids), np.int64, len(ids))

    def step(self, ids, X) -> np.ndarray:
        """One step for each of k streams: ids (k,), X (k, I) -> Y (k, O), row k for ids[k].
        Raises InputError (nothing applied) if any reading is bad; raises NumericalError if
        some stream's result was non-finite: the others are committed, those keep their state,
        and the exception's `outputs` and `failed_ids` say which."""
        ids = list(ids)
        X = self.model.check_input(X, len(ids))
        rows = self.rows_for(ids)
        Y = np.empty((len(ids), self.model.output_size), np.float32)
        args = (self.model.params, self.model.meta, self._state, rows, X.reshape(-1), Y.reshape(-1), self._work,
                self._status)
        if self.products and len(ids) >= self.model.gemm_min:
            rc = self._gemm_bank().step(self.model.gemm_kernels(), *args)
        else:
            rc = self._step(*args)
        if rc < 0:
            raise InputError(f"reading for stream {ids[-rc - 1]!r} holds NaN or Inf; nothing was "
                             f"applied to any stream")
        if rc > 0:
            failed = [ids[k] for k in range(len(ids)) if self._status[k] != contract.STATUS_OK]
            err = NumericalError(f"streams {failed!r} produced NaN/Inf; their state is unchanged, "
                                 f"the other streams were stepped")
            err.outputs, err.failed_ids = Y, failed
            raise err
        return Y

    def _gemm_bank(self) -> GemmBank:
        if self._gemm is None:
            self._gemm = GemmBank(self.model.meta, self.model.sequence_weights(), self.capacity)
        return self._gemm

    def reset(self, stream_id) -> None:
        self._write_row(self._row(stream_id), None)

    def evict(self, stream_id) -> None:
        """Forget a stream and free its slot."""
        self._free.append(self._rows.pop(self._row_key(stream_id)))

    def get_state(self, stream_id) -> StreamState:
        return StreamState(self.model.content_hash, self._read_row(self._row(stream_id)))

    def set_state(self, stream_id, state: StreamState) -> None:
        values = _checked_state(self.model, state)
        self._write_row(self.rows_for([stream_id])[0], values)

    def states(self, ids) -> np.ndarray:
        """The state values of `ids` at once, copied: (k, S). For snapshots of many streams."""
        rows = np.array([self._row(i) for i in ids], np.int64)
        return self._read_rows(rows)

    # Where the states live (host memory here; the CUDA bank overrides these four).
    def _read_row(self, row: int) -> np.ndarray:
        return self._state[row].copy()

    def _read_rows(self, rows: np.ndarray) -> np.ndarray:
        return self._state[rows]                # fancy indexing copies

    def _write_row(self, row: int, values: np.ndarray | None) -> None:
        """values (S,), or None for zeros."""
        self._state[row] = 0 if values is None else values

    def _row_key(self, stream_id):
        if stream_id not in self._rows:
            raise StateError(f"no stream {stream_id!r} in this bank")
        return stream_id

    def _row(self, stream_id) -> int:
        return self._rows[self._row_key(stream_id)]
