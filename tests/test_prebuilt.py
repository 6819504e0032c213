"""Prebuilt kernels (kernels/prebuilt.py, prebuild.py; `edgelstm warmup`): a build is used only
where it matches the machine and the kernels, a bad one is ignored with a warning that says what
to do, and a real build runs without numba and gives the JIT's results bit for bit."""

import json
import logging
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import ROOT
from specs import graph_specs, random_spec

from edgelstm.kernels import entries, prebuilt
from edgelstm.model import deploy


@pytest.fixture
def build_dir(tmp_path, monkeypatch):
    """prebuilt.directory() in tmp_path, the prebuilt kernels switched on, nothing loaded yet."""
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))       # cache_dir() reads it first
    monkeypatch.setenv("EDGELSTM_PREBUILT", "1")
    prebuilt.forget()
    os.makedirs(prebuilt.directory())
    yield tmp_path
    prebuilt.forget()


def write_manifest(extension: bytes = b"never loaded", **changes):
    """A manifest (with `changes`) beside an extension file holding `extension`."""
    with open(prebuilt.extension_path(), "wb") as fh:
        fh.write(extension)
    manifest = prebuilt.identity() | {"sha256": prebuilt.file_sha256(prebuilt.extension_path())} | changes
    with open(prebuilt.manifest_path(), "w") as fh:
        json.dump(manifest, fh)


def test_no_build_means_numba_and_no_warning(build_dir, caplog):
    with caplog.at_level(logging.WARNING):
        assert prebuilt.module() is None and entries.origin() == "numba JIT"
    assert caplog.records == []


@pytest.mark.parametrize("field, value", [("cpu", "0123456789abcdef"), ("kernels", "000000000000"), ("numpy", "1.26.4"),
                                          ("ext_suffix", "x.cpython-39-x86_64-linux-gnu.so"),
                                          ("machine", "riscv64"), ("entries", ["step"])])
def test_a_build_for_another_machine_or_other_kernels_is_not_used(build_dir, caplog, field, value):
    write_manifest(**{field: value})
    with caplog.at_level(logging.WARNING):
        assert prebuilt.module() is None
    assert len(caplog.records) == 1 and f"another {field}" in caplog.text and "edgelstm warmup" in caplog.text


def test_a_build_that_does_not_load_is_ignored(build_dir, caplog):
    write_manifest(b"\x7fELF but not really")
    with caplog.at_level(logging.WARNING):
        assert prebuilt.module() is None
    assert "does not load" in caplog.text and "edgelstm warmup" in caplog.text


def test_an_extension_that_is_not_the_one_its_manifest_names_is_not_loaded(build_dir, caplog):
    """Another build replaced it half-way, or it is truncated: it is never dlopen()ed."""
    write_manifest(b"\x7fELF one build")
    with open(prebuilt.extension_path(), "wb") as fh:
        fh.write(b"\x7fELF another build")
    with caplog.at_level(logging.WARNING):
        assert prebuilt.module() is None
    assert "not the file its manifest names" in caplog.text


def test_warmup_into_an_unwritable_cache_says_what_to_do(tmp_path, monkeypatch):
    from edgelstm.errors import BuildError
    from edgelstm.kernels import prebuild
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(blocker / "cache"))
    with pytest.raises(BuildError, match="make it writable or set EDGELSTM_CACHE_DIR"):
        prebuild.build()


def test_an_unreadable_manifest_is_ignored(build_dir, caplog):
    with open(prebuilt.manifest_path(), "w") as fh:
        fh.write("{not json")
    with caplog.at_level(logging.WARNING):
        assert prebuilt.module() is None
    assert "unreadable" in caplog.text


def test_switched_off_means_not_even_looked_at(build_dir, monkeypatch):
    write_manifest()
    monkeypatch.setenv("EDGELSTM_PREBUILT", "0")
    assert prebuilt.module() is None


def test_the_cpu_fingerprint_is_stable_and_short():
    assert prebuilt.cpu_fingerprint() == prebuilt.cpu_fingerprint()
    assert len(prebuilt.cpu_fingerprint()) == 16


RUN_MODELS = textwrap.dedent("""
    import json, sys
    import numpy as np
    import edgelstm
    import edgelstm.daemon.service
    from edgelstm.kernels import entries, products
    out = {"numba": None, "origin": entries.origin(), "models": {}}
    rng = np.random.default_rng(1)
    for path in sys.argv[1:]:
        model = edgelstm.load(path)
        X = rng.standard_normal((50, model.input_size)).astype(np.float32)
        stream = model.stream()
        steps = [stream.step(x).tolist() for x in X]
        many = model.stream().step_many(X).tolist()
        model.gemm_min = products.MIN_STREAMS          # the products from a batch of 8 streams on
        bank = model.bank(64)
        batches = [bank.step(list(range(40)), X[:40] * k).tolist() for k in (1, 2, 3)]
        out["models"][path] = {"steps": steps, "many": many, "bank": batches, "gemm": model.gemm}
    out["numba"] = "numba" in sys.modules
    print(json.dumps(out))
""")


@pytest.mark.slow
def test_prebuilt_kernels_run_without_numba_and_match_the_jit(tmp_path):
    rng = np.random.default_rng(0)
    graphs = graph_specs(rng)
    models = {"plain": random_spec(rng, kinds=("lstm", "gru"), hidden=(16, 8), proj=(0, 0), norm=True),
              "mlp_head": graphs["mlp_head"], "norms": graphs["norms_and_activations"]}
    paths = [str(tmp_path / f"{name}.elstm") for name in models]
    for path, spec in zip(paths, models.values()):
        deploy.save(spec, path)
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env.update(EDGELSTM_CACHE_DIR=str(tmp_path / "cache"), EDGELSTM_PREBUILT="1", PYTHONPATH=str(ROOT))

    def edgelstm(*args, **extra):
        return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=900, cwd=ROOT,
                              env=env | extra)

    built = edgelstm("-m", "edgelstm", "warmup", paths[0])
    assert built.returncode == 0 and "prebuilt kernels built" in built.stdout, built.stdout + built.stderr
    again = edgelstm("-m", "edgelstm", "warmup", paths[0])
    assert "already built" in again.stdout, again.stdout + again.stderr
    fast = edgelstm("-c", RUN_MODELS, *paths)
    jit = edgelstm("-c", RUN_MODELS, *paths, EDGELSTM_PREBUILT="0")
    assert fast.returncode == 0 and jit.returncode == 0, fast.stderr + jit.stderr
    fast_out, jit_out = json.loads(fast.stdout), json.loads(jit.stdout)
    assert (fast_out["origin"], fast_out["numba"]) == ("prebuilt", False)
    assert (jit_out["origin"], jit_out["numba"]) == ("numba JIT", True)
    assert all(m["gemm"] for m in fast_out["models"].values())
    assert fast_out["models"] == jit_out["models"]
