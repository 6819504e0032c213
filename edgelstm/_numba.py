"""Numba settings in one place: the JIT decorator, fast-math flags, and how the engine gets
a kernel's compiled entry point. Where numba caches what it compiles is kernels/cache.py, imported
first: numba reads its cache directory from the environment when it starts.
"""

from .kernels import cache  # noqa: F401  (sets NUMBA_CACHE_DIR: numba reads it when it loads)

# isort: split
import numba

# Stumpy's fast-math set: allows re-association and FMA contraction (so loops vectorise) but
# keeps NaN/Inf semantics ("nnan"/"ninf" left out), so np.isfinite stays truthful in kernels.
FASTMATH = set({"nsz", "arcp", "contract", "afn", "reassoc"})


def kernel(fn):
    """Compile `fn` as a cached, GIL-free, fast-math kernel: the only JIT decorator in the package."""
    return numba.njit(cache=True, nogil=True, fastmath=FASTMATH, error_model="numpy")(fn)


def inline(fn):
    """Compile a helper that numba copies into its caller instead of compiling it on its own:
    every separately compiled function re-optimises and re-emits machine code for all it
    calls, so a deep tree of small kernels compiles slowly. Only for helpers called from one
    place (each call site gets a copy to type and lower) and for ones that take a kernel as
    an argument; tiny scalar functions (gate_math) are cheaper as `kernel`, which LLVM
    inlines anyway."""
    return numba.njit(cache=True, nogil=True, fastmath=FASTMATH, inline="always", error_model="numpy")(fn)


def compiled_for(dispatcher, *args):
    """The compiled function behind `dispatcher` for these arguments' types, to be called
    directly (compiled now, or loaded from the cache; only the types of `args` matter).

    A dispatcher call re-derives every argument's type (about 1 us for seven arrays, a fifth
    of a step); the entry point skips that. It also skips type checks, so callers must pass
    arrays of exactly the types of `args` (same dtype, ndim, C-contiguity and writeability):
    kernels/entries.py holds those types, one place for every caller."""
    signature = tuple(numba.typeof(a) for a in args)
    dispatcher.compile(signature)
    return dispatcher.overloads[signature].entry_point


def is_cached(dispatcher) -> bool:
    """Whether numba's cache holds a fresh index for `dispatcher` (written by an earlier run,
    for this source file as it is now): a cheap guess at whether the first call loads compiled
    code rather than compiling. Reads numba internals, so any surprise answers False."""
    try:
        return bool(dispatcher._cache._cache_file._load_index())
    except Exception:
        return False
