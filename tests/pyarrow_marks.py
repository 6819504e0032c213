"""Whether Parquet recordings can be tested here (pyarrow is the `record` extra)."""

import pytest

try:
    import pyarrow  # noqa: F401
    HAVE_PYARROW = True
except ImportError:
    HAVE_PYARROW = False
needs_pyarrow = pytest.mark.skipif(not HAVE_PYARROW, reason="pyarrow is not installed (pip install "
                                   "'edgelstm[record]'): Parquet recordings are not tested")
FORMATS = ["csv", pytest.param("parquet", marks=needs_pyarrow)]
