"""House rules checked as tests: no print or logging set-up in the library, torch never
imported by the package, every kernel compiled through the one decorator, the package type-checks."""

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "edgelstm"
LIBRARY = [p for p in PKG.rglob("*.py") if p.name not in ("cli.py", "__main__.py")]


def calls(path, name):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            if (isinstance(f, ast.Name) and f.id == name) or (isinstance(f, ast.Attribute) and f.attr == name):
                yield node.lineno


def test_library_never_prints_or_configures_logging():
    offenders = [f"{p.name}:{n}" for p in LIBRARY for fn in ("print", "basicConfig") for n in calls(p, fn)]
    assert not offenders, offenders


TRAINING_MACHINE_MODULES = {"from_torch.py", "trace_cli.py", "verify.py"}   # they run the user's torch model


def _torch_imports(tree) -> list:
    return [node for node in ast.walk(tree)
            if any(n.split(".")[0] == "torch" for n in
                   ([a.name for a in node.names] if isinstance(node, ast.Import) else
                    [node.module or ""] if isinstance(node, ast.ImportFrom) else []))]


def test_package_never_imports_torch():
    """Only the modules that run the user's own torch model import torch, and only inside the
    function that needs it; nothing on the device's path does."""
    for p in PKG.rglob("*.py"):
        tree = ast.parse(p.read_text())
        if p.name not in TRAINING_MACHINE_MODULES:
            assert not _torch_imports(tree), f"{p.name} imports torch"
            continue
        top_level = [n for n in tree.body if n in _torch_imports(tree)]
        assert not top_level, f"{p.name} imports torch at module level"
    out = subprocess.run([sys.executable, "-c", "import sys, edgelstm, edgelstm.cli, edgelstm.daemon.service; "
                          "print('torch' in sys.modules)"], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr


def test_importing_the_package_and_the_daemon_does_not_import_numba():
    """numba loads only when a kernel is first needed and no prebuilt build serves it
    (kernels/entries.py), so a process on prebuilt kernels never pays its memory."""
    out = subprocess.run([sys.executable, "-c", "import sys, edgelstm, edgelstm.cli, edgelstm.daemon.service; "
                          "print('numba' in sys.modules)"], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr


def test_kernels_use_the_shared_decorator():
    for p in PKG.rglob("*.py"):
        if p.name == "_numba.py":
            continue
        text = p.read_text()
        assert "njit(" not in text and "numba.jit" not in text, f"{p.name}: use edgelstm._numba.kernel"


@pytest.mark.slow
def test_package_type_checks():
    """mypy, with the settings in pyproject.toml ([tool.mypy]), finds no errors in the package."""
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy is not installed (pip install -e '.[dev]')")
    out = subprocess.run([sys.executable, "-m", "mypy"], cwd=PKG.parent, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
