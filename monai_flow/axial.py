"""Volumes and their axial slices, in one place.

A volume batch is channel-first ``(B, C, H, W, D)`` with (H, W) the axial plane and D the slice
axis (MONAI's layout of a CT or MR series); its axial slices are the 2D batch ``(B * D, C, H, W)``,
ordered sample by sample (all D slices of sample 0 first). 2D batches ``(B, C, H, W)`` are their
own slices (depth 1).
"""

from __future__ import annotations

import torch

__all__ = ["from_axial_slices", "to_axial_slices"]


def to_axial_slices(x: torch.Tensor) -> tuple[torch.Tensor, int | None]:
    """``(B, C, H, W, D) -> ((B * D, C, H, W), D)``; a 2D batch ``(B, C, H, W)`` returns ``(x, None)``."""
    if x.ndim == 4:
        return x, None
    if x.ndim != 5:
        raise ValueError(f"expected a batch (B, C, H, W) or (B, C, H, W, D), got shape {tuple(x.shape)}.")
    b, c, h, w, d = x.shape
    return x.permute(0, 4, 1, 2, 3).reshape(b * d, c, h, w), d


def from_axial_slices(slices: torch.Tensor, depth: int | None) -> torch.Tensor:
    """Inverse of :func:`to_axial_slices`: ``(B * D, C, H, W)`` and ``D`` -> ``(B, C, H, W, D)``
    (``depth=None``: the 2D batch unchanged)."""
    if depth is None:
        return slices
    n, c, h, w = slices.shape
    if n % depth:
        raise ValueError(f"{n} slices do not split into volumes of depth {depth}.")
    return slices.reshape(n // depth, depth, c, h, w).permute(0, 2, 3, 4, 1)
