"""Exact minibatch optimal-transport coupling between noise and data samples."""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

__all__ = ["ot_permutation"]


def ot_permutation(x0: torch.Tensor, x1: torch.Tensor, groups: torch.Tensor | None = None) -> torch.Tensor:
    """Permutation ``perm`` (B,) minimising sum_j ||x0[perm[j]] - x1[j]||^2 (exact, Hungarian algorithm).

    Args:
        x0: source samples (B, ...), e.g. Gaussian noise.
        x1: target samples (B, ...), same shape.
        groups: optional (B,) integer group ids (e.g. class labels); samples are only paired within
            a group, so each group's noise stays an i.i.d. Gaussian sample.
    """
    if x0.shape != x1.shape:
        raise ValueError(f"x0 and x1 must have the same shape, got {tuple(x0.shape)} and {tuple(x1.shape)}.")
    n = x0.shape[0]
    a = x0.detach().reshape(n, -1).double().cpu()
    b = x1.detach().reshape(n, -1).double().cpu()
    cost = torch.cdist(a, b).pow(2).numpy()
    if groups is None:
        ids = np.zeros(n, dtype=np.int64)
    else:
        if groups.shape != (n,):
            raise ValueError(f"groups must have shape ({n},), got {tuple(groups.shape)}.")
        ids = groups.detach().cpu().numpy()
    perm = np.arange(n)
    for g in np.unique(ids):
        idx = np.flatnonzero(ids == g)
        rows, cols = linear_sum_assignment(cost[np.ix_(idx, idx)])
        perm[idx[cols]] = idx[rows]
    return torch.as_tensor(perm, dtype=torch.long, device=x0.device)
