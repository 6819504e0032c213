"""Where compiled kernels are kept, without importing numba (so the engine can look for
prebuilt kernels first: kernels/prebuilt.py). Importing this module sets NUMBA_CACHE_DIR.

Cache directory, first that is set wins:
  NUMBA_CACHE_DIR        numba's own variable, used as it is
  EDGELSTM_CACHE_DIR     edgelstm's (the systemd unit sets it to /var/cache/edgelstm), + /kernels-<digest>
  $XDG_CACHE_HOME/edgelstm/kernels-<digest>, else ~/.cache/edgelstm/kernels-<digest>
Compiled kernels are saved there, so a restarted process loads them instead of compiling.
<digest> is a hash of the kernels' source (kernels/*.py and _numba.py): numba checks only a
kernel's own file, not the helpers it inlines from other modules, so an edited helper would
otherwise be served from a stale cache, wrong numbers and all. Each release (or edit) of the
kernels compiles once into a directory of its own.
"""

import hashlib
import os

_HERE = os.path.dirname(os.path.abspath(__file__))


def kernels_digest() -> str:
    """12 hex digits of SHA-256 over the kernels' source files and _numba.py."""
    paths = [os.path.join(_HERE, n) for n in sorted(os.listdir(_HERE)) if n.endswith(".py")]
    digest = hashlib.sha256()
    for path in [*paths, os.path.join(os.path.dirname(_HERE), "_numba.py")]:
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
