"""Numba settings in one place: the JIT decorator, fast-math flags and the cache directory.

Import this module before anything imports numba: the cache directory is read from the
environment when numba starts.

Cache directory, first that is set wins:
  NUMBA_CACHE_DIR        numba's own variable, used as it is
  EDGELSTM_CACHE_DIR     edgelstm's (the systemd unit sets it to /var/cache/edgelstm), + /kernels-<digest>
  $XDG_CACHE_HOME/edgelstm/kernels-<digest>, else ~/.cache/edgelstm/kernels-<digest>
Compiled kernels are saved there, so a restarted process loads them instead of compiling.
<digest> is a hash of the kernels' source (kernels/*.py and this file): numba checks only the
timestamp of a kernel's own file, not of the helpers it inlines from other modules, so an
edited helper would otherwise be served from a stale cache, wrong numbers and all. Each
release (or edit) of the kernels compiles once into a directory of its own.
"""

import hashlib
import os


def kernels_digest() -> str:
    """12 hex digits of SHA-256 over the kernels' source files and this one."""
    here = os.path.dirname(os.path.abspath(__file__))
    kernels = os.path.join(here, "kernels")
    paths = [os.path.join(kernels, n) for n in sorted(os.listdir(kernels)) if n.endswith(".py")]
    digest = hashlib.sha256()
    for path in [*paths, os.path.abspath(__file__)]:
        with open(path, "rb") as fh:
            digest.update(os.path.basename(path).encode() + b"\0" + fh.read())
    return digest.hexdigest()[:12]


def cache_dir() -> str:
    """The directory numba writes compiled kernels to (see the module docstring)."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return os.environ["NUMBA_CACHE_DIR"]
    if os.environ.get("EDGELSTM_CACHE_DIR"):
        return os.path.join(os.environ["EDGELSTM_CACHE_DIR"], f"kernels-{kernels_digest()}")
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "edgelstm", f"kernels-{kernels_digest()}")


os.environ.setdefault("NUMBA_CACHE_DIR", cache_dir())

import numba  # noqa: E402  (must follow the environment set-up above)

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


def compiled_entry(dispatcher, *args):
    """The compiled function behind `dispatcher` for these arguments' types, called directly.

    A dispatcher call re-derives every argument's type (about 1 us for seven arrays, a fifth
    of a step); the entry point skips that. It also skips type checks, so callers must pass
    arrays of exactly the types of `args` (same dtype, ndim and C-contiguity). Calling it
    here runs the kernel once on `args`: pass scratch arrays.
    """
    dispatcher(*args)
    signature = tuple(numba.typeof(a) for a in args)
    return dispatcher.overloads[signature].entry_point


def compiled_for(dispatcher, *args):
    """As compiled_entry, but compiles (or loads from the cache) without running the kernel:
    only the types of `args` matter, so they can be small stand-ins of the same types."""
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
