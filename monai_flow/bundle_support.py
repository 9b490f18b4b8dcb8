"""Small helpers that MONAI Bundle configs under ``bundles/`` call through ``$`` expressions."""

from __future__ import annotations

import ast
import os
import sys
from pathlib import Path

__all__ = ["bundle_root", "generation_items", "latest_checkpoint", "missing_references"]


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


def missing_references(dataset_dir: str) -> list:
    """Raise the error for evaluating a dataset whose test items have no clean ``reference``."""
    raise ValueError(
        f"no testing item of '{dataset_dir}' has a 'reference' image: evaluation needs noise-free (or "
        "full-dose) references; give a datalist JSON whose 'testing' items have 'image' and 'reference'."
    )


def generation_items(mask_path=None, label=None, items=None) -> list[dict]:
    """Conditioning items ``{"mask": path, "label": int}`` for a generation bundle's inference.

    With ``mask_path`` (a mask file or a list of them) and ``label`` (one class for all masks, or
    one per mask): those. Otherwise ``items`` (datalist entries with ``mask`` and ``label``), with
    every label replaced by ``label`` when it is given.
    """
    if mask_path:
        paths = [str(p) for p in (mask_path if isinstance(mask_path, (list, tuple)) else [mask_path])]
        missing = [p for p in paths if not os.path.exists(p)]
        if missing:
            raise FileNotFoundError(f"mask_path not found: {missing}.")
        if label is None:
            raise ValueError("--mask_path needs --label (the class to generate, e.g. 0 or 1).")
        labels = list(label) if isinstance(label, (list, tuple)) else [label] * len(paths)
        if len(labels) != len(paths):
            raise ValueError(f"got {len(paths)} masks but {len(labels)} labels; give one label or one per mask.")
        return [{"mask": p, "label": int(lab)} for p, lab in zip(paths, labels)]
    if not items:
        raise ValueError("no masks to generate for: give --mask_path (and --label) or a dataset with a 'testing' section.")
    bad = [i for i, it in enumerate(items) if "mask" not in it or (label is None and "label" not in it)]
    if bad:
        raise ValueError(f"datalist items {bad[:5]} lack 'mask' or 'label' (give --label to set the class for all).")
    return [dict(it, label=int(label if label is not None else it["label"])) for it in items]
