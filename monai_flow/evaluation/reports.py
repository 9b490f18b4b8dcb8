"""Evaluation outputs: the CSV table and the figure (a grid of image panels), written atomically."""

from __future__ import annotations

import csv
import os
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from monai_flow.atomic import write_atomically

__all__ = ["write_csv", "write_figure"]


def write_csv(path: str | os.PathLike, rows: Sequence[Mapping]) -> Path:
    """Write ``rows`` (dicts with the keys of the first row) as a CSV table with a header."""

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)

    return write_atomically(path, write)


def write_figure(path: str | os.PathLike, rows: Mapping | Sequence[Mapping], window: Sequence[float], title: str = "",
                 label_maps: Collection[str] = (), num_labels: int = 10, panel_size: float = 4.0,
                 dpi: int = 100) -> Path:
    """Write a PNG grid of 2D image panels: one row per mapping ``{panel title: image}`` (a single
    mapping is one row), each panel under its title, ``title`` above all.

    Orientation: an image is an axial slice in MONAI layout ``[x, y]`` as ``LoadImage`` returns a
    standard axial DICOM series (axis codes L, P: x runs from the patient's right to left, y from
    anterior to posterior); it is drawn in radiological convention, anterior at the top and the
    patient's right on the viewer's left. Reorient other data first (e.g. ``Orientation("LPS")``).

    Panels are grey in ``window = (low, high)``; those named in ``label_maps`` are label maps
    (``tab10`` colours, labels 0..``num_labels`` - 1, no interpolation). ``panel_size`` is in inches.
    """
    from matplotlib.figure import Figure

    rows = [list(r.items()) for r in ([rows] if isinstance(rows, Mapping) else rows)]
    cols, gap = max(len(r) for r in rows), 0.1  # gap between panels, inches
    fontsize = 9 if panel_size < 3 else 10
    heads = [gap + fontsize / 72 * 1.3 * max(len(str(name).splitlines()) for name, _ in r) for r in rows]
    width = cols * panel_size + (cols - 1) * gap
    height = (0.4 if title else 0.0) + sum(heads) + len(rows) * panel_size + (len(rows) - 1) * gap
    fig = Figure(figsize=(width, height))
    top = height - (0.4 if title else 0.0)
    for panels, head in zip(rows, heads):
        top -= head + panel_size
        for c, (name, img) in enumerate(panels):
            ax = fig.add_axes((c * (panel_size + gap) / width, top / height, panel_size / width, panel_size / height))
            ax.axis("off")
            img = img if isinstance(img, np.ndarray) else torch.as_tensor(img).detach().cpu().numpy()
            if img.ndim != 2:
                raise ValueError(f"write_figure: panel '{name}' must be a 2D image [x, y], got shape {img.shape}.")
            # rows of the picture are y (anterior first, at the top), columns x (patient's right first, at the left)
            if name in label_maps:
                ax.imshow(img.T, cmap="tab10", vmin=0, vmax=max(num_labels - 1, 9), origin="upper",
                          interpolation="nearest")
            else:
                ax.imshow(img.T, cmap="gray", vmin=window[0], vmax=window[1], origin="upper")
            ax.set_title(name, fontsize=fontsize)
        top -= gap
    if title:
        fig.suptitle(title, fontsize=11, y=1 - 0.1 / height, va="top")
    write_atomically(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format="png", bbox_inches="tight"))
    return Path(path)
