"""The compiled kernels the engine calls, by name, and the one set of argument types each is
compiled for. Every model's arrays have these types (float32, int64 and int8, C order, the
weights read-only), so each entry point compiles once and serves every model; callers must pass
exactly these types, because a compiled entry point does not check them (_numba.compiled_for).

get(name) returns the callable: from the prebuilt extension when one was built for this
machine and these kernels (kernels/prebuilt.py), else numba's JIT (loaded from its cache, or
compiled now); numba is imported only then.
"""

from __future__ import annotations

import importlib
from typing import Callable

import numpy as np

from . import prebuilt
from .contract import ENTRIES

_got: dict[str, Callable] = {}


def _array(dtype, ndim: int = 1, writeable: bool = True) -> np.ndarray:
    a = np.zeros((1,) * ndim, dtype)
    a.flags.writeable = writeable
    return a


def sample_args(name: str) -> tuple:
    """Stand-in arguments of the types `name` is compiled for (their values do not matter)."""
    params, meta = _array(np.float32, writeable=False), _array(np.int64, writeable=False)
    state, work, rows, status = _array(np.float32, 2), _array(np.float32, 2), _array(np.int64), _array(np.int8)
    flat = _array(np.float32)                       # xs or ys: readings or outputs, flattened
    if name in ("step", "step_graph"):
        return params, meta, state, rows, flat, flat, work, status
    if name == "step_sequence":
        tw, seq = _array(np.float32, writeable=False), _array(np.float32, 2)
        return params, tw, meta, state, rows, flat, flat, work, seq, status
    buf, plan, rect = _array(np.float32), _array(np.int64, writeable=False), _array(np.float32, 2)
    if name in ("gather", "gather_graph"):
        return params, meta, state, rows, flat, work, buf, plan
    if name == "layer_gates":
        return params, meta, 0, rect, rect, rect, rect, 0
    if name in ("finish", "finish_graph"):
        return params, meta, state, rows, flat, work, buf, plan, status
    raise KeyError(name)


def dispatcher(name: str):
    """The numba dispatcher behind `name` (imports numba)."""
    module, function = ENTRIES[name]
    return getattr(importlib.import_module(f"{__package__}.{module}"), function)


def get(name: str) -> Callable:
    """The compiled entry point `name`: prebuilt when there is a matching build, else JIT."""
    fn = _got.get(name)
    if fn is None:
        built = prebuilt.module()
        if built is not None:
            fn = getattr(built, name)
        else:
            from .._numba import compiled_for
            fn = compiled_for(dispatcher(name), *sample_args(name))
        _got[name] = fn
    return fn


def ready(names) -> bool:
    """Whether getting every entry in `names` is quick: prebuilt, or in numba's cache."""
    if prebuilt.module() is not None:
        return True
    from .._numba import is_cached
    return all(is_cached(dispatcher(n)) for n in names)


def origin() -> str:
    """Where get() takes kernels from, in words: "prebuilt" or "numba JIT"."""
    return "prebuilt" if prebuilt.module() is not None else "numba JIT"
