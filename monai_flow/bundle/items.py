"""Data items that bundle configs build through ``$`` expressions."""

from __future__ import annotations

import os

__all__ = ["generation_items", "missing_references"]


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
