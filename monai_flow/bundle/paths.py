"""Where a bundle lives: ``bundle_root(name)`` for configs run with ``python -m monai.bundle run``."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

__all__ = ["bundle_root"]


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
    the bundle folder, so configs define ``"bundle_root": "$monai_flow.bundle.bundle_root('<name>')"``;
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
    repo = Path(__file__).resolve().parents[2] / "bundles" / name
    if (repo / "configs").is_dir():
        return str(repo)
    raise ValueError(f"cannot locate bundle '{name}': pass --bundle_root /path/to/{name}.")
