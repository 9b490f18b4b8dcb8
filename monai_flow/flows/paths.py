"""Probability paths: how a sample x_t and its target velocity u_t are built from (x0, x1, t)."""

from __future__ import annotations

import torch

__all__ = ["expand_time", "CondOTProbPath"]


def expand_time(t: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    """Broadcast per-sample times (B,) (or a scalar) to ``x`` of shape (B, C, *spatial)."""
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    if t.ndim == 0:
        return t
    if t.ndim != 1 or t.shape[0] not in (1, x.shape[0]):
        raise ValueError(f"t must have shape (B,)=({x.shape[0]},) or (1,), got {tuple(t.shape)}.")
    return t.reshape(-1, *([1] * (x.ndim - 1)))


class CondOTProbPath:
    """Conditional optimal-transport path of MOTFM / Lipman et al. (t = 0 noise, t = 1 data).

    x_t = (1 - (1 - sigma_min) t) x0 + t x1,   u_t = d x_t / dt = x1 - (1 - sigma_min) x0.

    Args:
        sigma_min: width of the path at the data end, in [0, 1); 0 gives the straight line x0 -> x1.
    """

    def __init__(self, sigma_min: float = 0.0) -> None:
        if not 0.0 <= sigma_min < 1.0:
            raise ValueError(f"sigma_min must be in [0, 1), got {sigma_min}.")
        self.sigma_min = float(sigma_min)

    def sample(self, x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor | float) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(x_t, u_t)``, both shaped like ``x1`` (B, C, *spatial); ``t`` is (B,) or scalar."""
        if x0.shape != x1.shape:
            raise ValueError(f"x0 and x1 must have the same shape, got {tuple(x0.shape)} and {tuple(x1.shape)}.")
        tt = expand_time(t, x1)
        c = 1.0 - self.sigma_min
        x_t = (1.0 - c * tt) * x0 + tt * x1
        u_t = x1 - c * x0
        return x_t, u_t
