"""No-data-loss writing for the command line.

* :class:`OutputFolder` checks (and creates) the output folder before any work: a file in the
  way, a missing write permission or a failing test write is a clear error up front; folders it
  created and left empty are removed at the end.
* :func:`refuse_inputs` refuses output paths that are, or lie inside, an input (inputs are
  never written, not even with ``--overwrite``); :func:`refuse_existing` refuses existing outputs
  unless ``--overwrite``.
* :class:`Staged` writes every output of one input under a hidden temporary name in its
  destination folder and commits them (:func:`monai_flow.atomic.commit`: fsync, rename into
  place) only once all are complete; on any failure the temporary files are removed, so no
  partial output is ever left behind.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from monai_flow.atomic import commit, discard, temporary_sibling

from .errors import CLIError, InputError

__all__ = ["OutputFolder", "Staged", "refuse_existing", "refuse_inputs", "resolved"]


def resolved(path: str | os.PathLike) -> Path:
    """Absolute path with symlinks resolved (``strict=False``: it need not exist)."""
    return Path(path).expanduser().resolve()


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def refuse_inputs(targets: Iterable[Path], inputs: Iterable[Path], root: Path | None = None) -> None:
    """Raise :class:`CLIError` if an output path is an input, lies inside an input folder, or
    contains an input (an output folder replaced with ``--overwrite`` would delete it).

    ``inputs`` are input files and input folders (e.g. DICOM series folders); writing into a
    series folder would add files to the series, so anything inside one is refused too.
    ``root`` (the output folder of a batch) may contain inputs: it is written into, never replaced.
    """
    inputs = [resolved(p) for p in inputs]
    root = resolved(root) if root is not None else None
    for target in targets:
        t = resolved(target)
        for src in inputs:
            if t == src:
                raise CLIError(f"output {target} is the input {src}: inputs are never overwritten; "
                               "choose another output path.")
            if src.is_dir() and _inside(t, src):
                raise CLIError(f"output {target} lies inside the input folder {src}: writing there would "
                               "change the input series; choose an output folder outside it.")
            if t in src.parents and t != root:
                raise CLIError(f"output {target} contains the input {src}: replacing it would delete the input; "
                               "choose another output path.")


def refuse_existing(targets: Iterable[Path], overwrite: bool) -> None:
    """Raise :class:`CLIError` naming the outputs that exist already, unless ``overwrite``."""
    if overwrite:
        return
    existing = [str(t) for t in targets if os.path.lexists(t)]
    if existing:
        more = f" (and {len(existing) - 3} more)" if len(existing) > 3 else ""
        raise CLIError(f"output exists: {', '.join(existing[:3])}{more}; pass --overwrite to replace it "
                       "(inputs are never replaced).")


class OutputFolder:
    """An output folder checked for writability before any work (works as root too).

    ``prepare()`` refuses a path that is a file or lies below a file, checks ``os.access`` on the
    nearest existing folder, creates the missing folders and writes and deletes a probe file.
    ``cleanup()`` removes the folders it created that are still empty.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path).expanduser().absolute()
        self.created: list[Path] = []

    def prepare(self) -> Path:
        p = self.path
        if p.exists() and not p.is_dir():
            raise CLIError(f"output folder {p} is a file, expected a folder.")
        existing = p
        while not existing.exists():
            existing = existing.parent
        if not existing.is_dir():
            raise CLIError(f"cannot create output folder {p}: {existing} is a file, not a folder.")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise CLIError(f"output folder {p} is not writable: no write permission on {existing}.")
        try:
            self.ensure(p)
            fd, probe = tempfile.mkstemp(prefix=".monai-flow-write-test-", dir=p)
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            self.cleanup()
            raise CLIError(f"output folder {p} is not writable: {e.strerror or e}.") from e
        return p

    def ensure(self, folder: Path) -> Path:
        """Create ``folder`` and missing parents, remembering them for :meth:`cleanup`."""
        missing = []
        f = Path(folder)
        while not f.exists():
            missing.append(f)
            f = f.parent
        for f in reversed(missing):
            try:
                f.mkdir()
            except FileExistsError:  # made meanwhile by another process (distributed runs): not ours to remove
                continue
            self.created.append(f)
        return Path(folder)

    def cleanup(self) -> None:
        """Remove folders this object created that are empty (deepest first)."""
        for f in reversed(self.created):
            try:
                f.rmdir()
            except OSError:
                pass
        self.created = [f for f in self.created if f.exists()]


class Staged:
    """Outputs of one unit of work, written under temporary names and committed together.

    ``file(final, ext)`` / ``folder(final)`` return a hidden temporary path next to ``final``
    (``ext`` is kept at the end so writers pick the format from it); write there, then call
    :meth:`commit`. Leaving the ``with`` block without committing (an exception) deletes the
    temporary outputs. ``commit`` refuses a destination that appeared meanwhile unless
    ``overwrite``.
    """

    def __init__(self, overwrite: bool = False) -> None:
        self.overwrite = overwrite
        self.items: list[tuple[Path, Path]] = []

    def file(self, final: Path, ext: str = "") -> Path:
        tmp = temporary_sibling(final, ext)
        self.items.append((tmp, final))
        return tmp

    def folder(self, final: Path) -> Path:
        return self.file(final)

    def commit(self) -> list[Path]:
        for tmp, final in self.items:
            if not tmp.exists():
                raise InputError(f"internal error: {tmp} was not written.")
            if os.path.lexists(final) and not self.overwrite:
                raise InputError(f"output {final} appeared while working; pass --overwrite to replace it.")
            if final.is_dir() and not tmp.is_dir():
                raise InputError(f"output {final} is a folder; expected a file path.")
        done = [commit(tmp, final) for tmp, final in self.items]
        self.items = []
        return done

    def rollback(self) -> None:
        for tmp, _ in self.items:
            discard(tmp)
        self.items = []

    def __enter__(self) -> Staged:
        return self

    def __exit__(self, *exc) -> None:
        self.rollback()
