"""Replacing a file atomically: after a crash or a failed write the old file or the new one is there, never a
torn one, and no temporary file is left behind."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterable


def atomic_write(path: str, chunks: Iterable[bytes], mode: int = 0o600) -> None:
    """Write the concatenated `chunks` to `path` with permissions `mode`, replacing it atomically.

    The data goes to a temporary file in the same directory (same filesystem, so the rename is atomic), created
    exclusively under a unique name so that two writers of one path never share it. It is fsynced, renamed over
    `path`, and the directory is fsynced so that the rename itself survives a power cut.
    Raises the OSError of any failing step (ENOSPC, EFBIG, EROFS, EACCES, ...); the old file is then intact and
    the temporary file removed.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)    # mkstemp made it 0600 whatever the umask; the caller decides
            for chunk in chunks:
                fh.write(chunk)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        # also on KeyboardInterrupt or a failing `chunks` iterator: a temp file nobody will rename is litter
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_directory(directory)


def fsync_directory(directory: str) -> None:
    """Make the entries of `directory` (a rename, a new file) durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    except OSError as exc:
        # some filesystems cannot fsync a directory at all; their renames are as durable as they get
        if exc.errno != errno.EINVAL:
            raise
    finally:
        os.close(fd)
