"""Whether ONNX Runtime can be used here, asked without risking the test process."""

import functools
import importlib.util
import subprocess
import sys

import pytest


@functools.cache
def ort_usable() -> bool:
    """onnxruntime is installed and imports. Under qemu-user (../shared/tools/arm64-tests.sh) its
    import crashes the whole process, so a child process tries it first."""
    if importlib.util.find_spec("onnxruntime") is None:
        return False
    probe = subprocess.run([sys.executable, "-c", "import onnxruntime"], capture_output=True, timeout=300)
    return probe.returncode == 0


def need_ort():
    """onnxruntime, or a skip saying why it cannot be used."""
    if not ort_usable():
        pytest.skip("this needs onnxruntime, and it is not installed or crashes on import here")
    import onnxruntime
    return onnxruntime
