"""Builds the prebuilt kernels that kernels/prebuilt.py loads: every entry point of
kernels/entries.py, exported by numba.pycc for its one signature into one extension module,
compiled for this machine's CPU. Needs numba, setuptools and a C compiler, only here: the
process that later loads the module needs none of them.

Each export is a forwarder that calls the kernel's dispatcher, so the kernel is compiled with
its own options (fast-math, inlining: _numba.kernel) exactly as the JIT compiles it; the
prebuilt and the JIT entry points give the same results, bit for bit (tests/test_prebuilt.py).
Two builds at once in one directory are harmless: the manifest names the extension's SHA-256,
so a loader never takes one build's manifest for the other's file.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
import warnings
from typing import Callable

import numba

from ..errors import BuildError
from ..fileio import atomic_write
from . import bank_gemm, cpu, prebuilt, sequence
from .contract import ENTRIES
from .entries import dispatcher, sample_args


def _step(p, m, s, r, x, y, w, st):
    return cpu.step(p, m, s, r, x, y, w, st)


def _step_graph(p, m, s, r, x, y, w, st):
    return cpu.step_graph(p, m, s, r, x, y, w, st)


def _step_sequence(p, tw, m, s, r, x, y, w, sq, st):
    return sequence.step_sequence(p, tw, m, s, r, x, y, w, sq, st)


def _gather(p, m, s, r, x, w, b, pl):
    return bank_gemm.gather(p, m, s, r, x, w, b, pl)


def _gather_graph(p, m, s, r, x, w, b, pl):
    return bank_gemm.gather_graph(p, m, s, r, x, w, b, pl)


def _layer_gates(p, m, layer, g, gh, s, out, k):
    return bank_gemm.layer_gates(p, m, layer, g, gh, s, out, k)


def _finish(p, m, s, r, y, w, b, pl, st):
    return bank_gemm.finish(p, m, s, r, y, w, b, pl, st)


def _finish_graph(p, m, s, r, y, w, b, pl, st):
    return bank_gemm.finish_graph(p, m, s, r, y, w, b, pl, st)


FORWARDERS = {"step": _step, "step_graph": _step_graph, "step_sequence": _step_sequence, "gather": _gather,
              "gather_graph": _gather_graph, "layer_gates": _layer_gates, "finish": _finish,
              "finish_graph": _finish_graph}


def signature(name: str):
    """The numba signature `name` is exported with: its JIT overload's, for entries.sample_args."""
    target = dispatcher(name)
    args = tuple(numba.typeof(a) for a in sample_args(name))
    target.compile(args)
    return target.overloads[args].signature


def build(status: Callable[[str], None] | None = None) -> str:
    """Compile and install the prebuilt kernels for this machine; returns the extension's path.
    Raises BuildError if this machine cannot build them (the JIT keeps working)."""
    assert set(FORWARDERS) == set(ENTRIES), "kernels/contract.py and prebuild.py list different entries"
    try:
        with warnings.catch_warnings():
            # "pending deprecation" since numba 0.57 and still maintained: no replacement exists yet
            warnings.simplefilter("ignore", PendingDeprecationWarning)
            from numba.pycc import CC
    except ImportError as exc:
        raise BuildError(f"numba.pycc cannot be imported ({exc}); install setuptools "
                         f"(pip install 'edgelstm[prebuilt]')") from None
    try:
        os.makedirs(prebuilt.directory(), exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(prebuilt.manifest_path())        # a half-replaced build must never look valid
        with tempfile.TemporaryDirectory(dir=prebuilt.directory(), prefix=".build-") as tmp:
            cc = CC(prebuilt.MODULE)
            cc.output_dir, cc.target_cpu, cc.verbose = tmp, "host", False
            for k, name in enumerate(ENTRIES):
                if status:
                    status(f"compiling kernel {k + 1}/{len(ENTRIES)}: {name}")
                cc.export(name, signature(name))(FORWARDERS[name])
            if status:
                status("building the extension module (C compiler)")
            _compile(cc)
            built = os.path.join(tmp, os.path.basename(prebuilt.extension_path()))
            with open(built, "rb") as fh:
                os.fsync(fh.fileno())                  # on disk before the manifest names it
            os.replace(built, prebuilt.extension_path())
        manifest = prebuilt.identity() | {"sha256": prebuilt.file_sha256(prebuilt.extension_path())}
        atomic_write(prebuilt.manifest_path(), [(json.dumps(manifest, indent=1) + "\n").encode()], mode=0o644)
    except OSError as exc:
        raise BuildError(f"cannot write the prebuilt kernels in {prebuilt.directory()} ({exc.strerror or exc}); "
                         f"make it writable or set EDGELSTM_CACHE_DIR to a directory that is") from None
    prebuilt.forget()
    return prebuilt.extension_path()


def _compile(cc) -> None:
    chatter = io.StringIO()
    try:
        with contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
            cc.compile()
    except Exception as exc:          # distutils/setuptools raise several unrelated types
        tail = chatter.getvalue().strip().splitlines()[-3:]
        raise BuildError(f"the prebuilt kernels did not compile ({type(exc).__name__}: {exc}); is a C "
                         f"compiler installed (apt-get install gcc)? {' | '.join(tail)}") from None
