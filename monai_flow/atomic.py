"""Write a file so that a crash never leaves a partial one: temporary sibling, fsync, rename."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["write_atomically"]


def write_atomically(path: str | os.PathLike, write: Callable[[str], None], mode: int = 0o644,
                     suffix: str | None = None) -> Path:
    """Call ``write(tmp)`` on a hidden temporary file next to ``path``, fsync it, then
    ``os.replace`` it onto ``path`` (atomic on POSIX and Windows) with permissions ``mode``.

    A failure (also in ``write``) removes the temporary file and leaves any old ``path`` as it
    was. The temporary name ``.<name>.<random><suffix>`` ends in ``suffix`` (default: ``path``'s,
    so writers that infer a format from it work).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix if suffix is None else suffix,
                               dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, mode)  # mkstemp creates 0600 files; outputs are usually shared read-only
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path
