"""Kernels compiled ahead of time into a Python extension module (numba.pycc), built on the
machine that runs them by `edgelstm warmup` (kernels/prebuild.py). A process that finds a
matching build loads it like any extension, in milliseconds, and never imports numba: no JIT
at start-up and less resident memory (benchmarks/bench_startup.py measures both).

A build lives beside numba's cache, in <cache_dir>/prebuilt/: the extension and prebuilt.json,
the manifest of what it was built from. It is used only while the manifest matches this
process: the kernels' source digest (which the cache directory also carries), the interpreter's
extension suffix, NumPy's version (the module reads NumPy's array structs), and this CPU,
because the code is compiled for the build machine's instruction set and could crash on
another; and only if the extension's SHA-256 is the one the manifest names (a build that
another one replaced half-way, or a truncated file, is not loaded). Like numba's cache it is
code that this process runs: keep the cache directory writable only by the service's user.

Unlike the JIT's, the prebuilt entry points hold the GIL while they run (numba.pycc builds
them so): the same results, but threads that step streams do not run kernels in parallel.

EDGELSTM_PREBUILT=0 ignores any build (numba's JIT, as without one).
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import logging
import os
import platform
import sysconfig
from types import ModuleType

import numpy as np

from .cache import cache_dir, kernels_digest
from .contract import ENTRIES

MODULE = "edgelstm_prebuilt_kernels"
MANIFEST_VERSION = 1
log = logging.getLogger(__name__)
_loaded: dict[str, ModuleType | None] = {}      # directory -> its module, or None: looked once


def directory() -> str:
    return os.path.join(cache_dir(), "prebuilt")


def extension_path() -> str:
    return os.path.join(directory(), MODULE + (sysconfig.get_config_var("EXT_SUFFIX") or ".so"))


def manifest_path() -> str:
    return os.path.join(directory(), "prebuilt.json")


def cpu_fingerprint() -> str:
    """16 hex digits naming this CPU's model and instruction-set features (Linux: /proc/cpuinfo)."""
    keys = ("model name", "flags", "features", "cpu implementer", "cpu part", "isa")
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            lines = {line.strip() for line in fh if line.split(":")[0].strip().lower() in keys}
    except OSError:
        lines = set()
    text = "\n".join(sorted(lines)) or f"{platform.machine()} {platform.processor()}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def identity() -> dict:
    """What a build must match to be used here (the manifest holds it, and the extension's sha256)."""
    return {"version": MANIFEST_VERSION, "kernels": kernels_digest(), "ext_suffix": os.path.basename(extension_path()),
            "numpy": np.__version__, "machine": platform.machine(), "cpu": cpu_fingerprint(),
            "entries": sorted(ENTRIES)}


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def module() -> ModuleType | None:
    """The prebuilt kernels' module, or None (no build, a build for something else, or
    EDGELSTM_PREBUILT=0). Looked up once per cache directory."""
    if os.environ.get("EDGELSTM_PREBUILT", "1") == "0":
        return None
    where = directory()
    if where not in _loaded:
        _loaded[where] = _load()
    return _loaded[where]


def _load() -> ModuleType | None:
    try:
        with open(manifest_path(), encoding="utf-8") as fh:
            manifest = json.load(fh)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("ignoring the prebuilt kernels: %s is unreadable (%s); run `edgelstm warmup MODEL` "
                    "to rebuild them", manifest_path(), exc)
        return None
    want = identity()
    if not isinstance(manifest, dict) or {k: manifest.get(k) for k in want} != want:
        differs = sorted(k for k in want if manifest.get(k) != want[k]) if isinstance(manifest, dict) else ["all"]
        log.warning("ignoring the prebuilt kernels in %s: built for another %s; numba compiles instead "
                    "(run `edgelstm warmup MODEL` to rebuild them for this machine)", directory(), ", ".join(differs))
        return None
    try:
        if file_sha256(extension_path()) != manifest.get("sha256"):
            log.warning("ignoring the prebuilt kernels: %s is not the file its manifest names (replaced or "
                        "truncated); run `edgelstm warmup MODEL` to rebuild them", extension_path())
            return None
        loader = importlib.machinery.ExtensionFileLoader(MODULE, extension_path())
        spec = importlib.util.spec_from_file_location(MODULE, extension_path(), loader=loader)
        assert spec is not None
        built = importlib.util.module_from_spec(spec)
        loader.exec_module(built)
    except (ImportError, OSError) as exc:
        log.warning("ignoring the prebuilt kernels: %s does not load (%s); run `edgelstm warmup MODEL` "
                    "to rebuild them", extension_path(), exc)
        return None
    missing = [name for name in ENTRIES if not hasattr(built, name)]
    if missing:
        log.warning("ignoring the prebuilt kernels in %s: no %s; run `edgelstm warmup MODEL` to rebuild them",
                    directory(), ", ".join(missing))
        return None
    return built


def forget() -> None:
    """Look again on the next module() call (after a build, or in tests)."""
    _loaded.clear()
