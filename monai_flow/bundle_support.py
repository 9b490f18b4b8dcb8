"""Small helpers that MONAI Bundle configs under ``bundles/`` call through ``$`` expressions."""

from __future__ import annotations

import ast
import os
import sys
from pathlib import Path

__all__ = ["bundle_root", "latest_checkpoint"]


def _config_files_from_argv(argv: list[str]) -> list[str]:
    for i, arg in enumerate(argv):
        value = None
        if arg == "--config_file" and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith("--config_file="):
            value = arg.split("=", 1)[1]
        if value is not None:
            try:
                parsed = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                parsed = value
            return [str(p) for p in (parsed if isinstance(parsed, (list, tuple)) else [parsed])]
    return []


def bundle_root(name: str) -> str:
    """Folder of bundle ``name``: the parent of the ``configs/`` folder given to ``monai.bundle run``.

    ``python -m monai.bundle run --config_file bundles/<name>/configs/train.json`` has no notion of
    the bundle folder, so configs define ``"bundle_root": "$monai_flow.bundle_support.bundle_root('<name>')"``;
    it looks at the ``--config_file`` argument (a path or a list of paths), then at the working
    directory (run from inside the bundle), then at this repository's ``bundles/<name>``. Override
    with ``--bundle_root PATH``.
    """
    for config in _config_files_from_argv(sys.argv):
        path = Path(config).resolve()
        if path.parent.name == "configs" and path.parent.parent.name == name:
            return str(path.parent.parent)
    cwd = Path.cwd()
    if cwd.name == name and (cwd / "configs").is_dir():
        return str(cwd)
    repo = Path(__file__).resolve().parent.parent / "bundles" / name
    if (repo / "configs").is_dir():
        return str(repo)
    raise ValueError(f"cannot locate bundle '{name}': pass --bundle_root /path/to/{name}.")


def latest_checkpoint(folder: str, pattern: str = "checkpoint_epoch=*.pt") -> str | None:
    """Newest checkpoint in ``folder`` matching ``pattern`` (by epoch number), or None."""
    files = sorted(Path(folder).glob(pattern), key=lambda p: (len(p.stem), p.stem)) if os.path.isdir(folder) else []
    return str(files[-1]) if files else None
