"""Write files and folders so that a crash never leaves a partial one.

A writer fills a hidden temporary sibling of the destination (``.<name>.partial-<random>``),
which :func:`commit` fsyncs and renames onto the destination. :func:`write_atomically` does this
for one file, :func:`write_folder_atomically` for one folder; ``monai_flow.cli.safe_io.Staged``
commits several outputs together.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

__all__ = ["OLD", "PARTIAL", "commit", "discard", "fsync_tree", "temporary_sibling", "write_atomically",
           "write_folder_atomically"]

PARTIAL = ".partial-"  # tag of temporary outputs being written
OLD = ".old-"  # tag of a replaced folder, deleted once the new one is in place


def _prefix(path: Path, ext: str, tag: str) -> str:
    base = path.name[: -len(ext)] if ext and path.name.endswith(ext) else path.name
    return f".{base}{tag}"


def temporary_sibling(path: str | os.PathLike, ext: str = "", tag: str = PARTIAL) -> Path:
    """A fresh hidden name ``.<name><tag><random><ext>`` next to ``path`` (nothing is created).

    ``<name>`` drops ``ext`` when ``path`` ends in it, so writers that infer the format from the
    extension work (``out.nii.gz`` with ``ext=".nii.gz"``: ``.out.partial-1a2b3c4d.nii.gz``).
    """
    path = Path(path)
    return path.with_name(f"{_prefix(path, ext, tag)}{uuid.uuid4().hex[:8]}{ext}")


def _fsync(path: str | os.PathLike, folder: bool = False) -> None:
    if folder:
        flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    else:
        flags = os.O_RDWR if os.name == "nt" else os.O_RDONLY  # Windows flushes writable handles only
    try:
        fd = os.open(path, flags)
    except OSError:
        if folder:  # folders cannot be opened on some systems (Windows): best effort
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not folder:
            raise
    finally:
        os.close(fd)


def fsync_tree(path: str | os.PathLike) -> None:
    """Flush ``path`` to disk: a file, or a folder with every file and folder below it."""
    path = Path(path)
    if path.is_symlink():
        return
    if not path.is_dir():
        _fsync(path)
        return
    for root, _, files in os.walk(path):
        for name in files:
            if not os.path.islink(os.path.join(root, name)):
                _fsync(os.path.join(root, name))
        _fsync(root, folder=True)


def discard(path: str | os.PathLike) -> None:
    """Remove ``path`` (a file, link or folder tree) if it exists; errors are ignored."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except OSError:
            pass


def commit(tmp: str | os.PathLike, path: str | os.PathLike, overwrite: bool = True) -> Path:
    """Fsync the finished temporary file or folder ``tmp`` and rename it onto ``path``.

    A file replaces an old file in one ``os.replace`` (atomic on POSIX and Windows). For a
    folder an existing ``path`` is first renamed aside (hidden ``.old-`` sibling) and deleted only
    once the new folder is in place; if moving in fails, it is put back. ``overwrite=False``
    refuses an existing ``path`` (``FileExistsError``).
    """
    tmp, path = Path(tmp), Path(path)
    if not overwrite and os.path.lexists(path):
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it.")
    fsync_tree(tmp)
    old = None
    if tmp.is_dir() and os.path.lexists(path):
        old = temporary_sibling(path, tag=OLD)
        os.replace(path, old)
    try:
        os.replace(tmp, path)
    except BaseException:
        if old is not None:
            os.replace(old, path)
        raise
    _fsync(path.parent, folder=True)
    if old is not None:
        discard(old)
    return path


def write_atomically(path: str | os.PathLike, write: Callable[[str], None], mode: int = 0o644,
                     suffix: str | None = None) -> Path:
    """Call ``write(tmp)`` on a hidden temporary file next to ``path``, then :func:`commit` it
    onto ``path`` with permissions ``mode``.

    A failure (also in ``write``) removes the temporary file and leaves any old ``path`` as it
    was. The temporary name ``.<name>.partial-<random><suffix>`` ends in ``suffix`` (default:
    ``path``'s, so writers that infer a format from it work).
    """
    path = Path(path)
    ext = path.suffix if suffix is None else suffix
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_prefix(path, ext, PARTIAL), suffix=ext, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, mode)  # mkstemp creates 0600 files; outputs are usually shared read-only
        commit(tmp, path)
    finally:
        if os.path.lexists(tmp):
            os.remove(tmp)
    return path


def _may_replace(path: Path, overwrite: bool | Callable[[Path], bool]) -> None:
    if not os.path.lexists(path) or (path.is_dir() and not path.is_symlink() and not any(path.iterdir())):
        return
    if not (overwrite(path) if callable(overwrite) else overwrite):
        raise FileExistsError(f"{path} exists and is not empty; pass overwrite=True to replace it.")


def write_folder_atomically(path: str | os.PathLike, write: Callable[[Path], None],
                            overwrite: bool | Callable[[Path], bool] = False,
                            keep: Callable[[Path], bool] | None = None, mode: int = 0o755) -> Path:
    """Call ``write(tmp)`` on a new hidden folder next to ``path``, then :func:`commit` it onto
    ``path`` with permissions ``mode``: the folder is either absent, the old one or the new one.

    Args:
        overwrite: replace an existing non-empty ``path`` (an empty folder is always replaced);
            checked before ``write`` and again before the rename. A callable decides on the
            ``path`` found there.
        keep: asked about an existing ``path`` before the rename and when the rename fails; True
            keeps it and discards the new folder (e.g. a complete copy installed meanwhile by
            another process).

    A failure (also in ``write``) removes the temporary folder and leaves any old ``path`` as it was.
    """
    path = Path(path)
    _may_replace(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=_prefix(path, "", PARTIAL), dir=path.parent))
    try:
        write(tmp)
        os.chmod(tmp, mode)  # mkdtemp creates 0700 folders
        if keep is not None and os.path.lexists(path) and keep(path):
            return path
        _may_replace(path, overwrite)
        try:
            commit(tmp, path)
        except OSError:
            if keep is None or not os.path.lexists(path) or not keep(path):
                raise
    finally:
        discard(tmp)
    return path
