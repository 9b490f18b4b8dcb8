"""Time samplers for generation flows (t in [0, 1]; t = 0 noise, t = 1 data)."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

__all__ = ["TimeSampler", "UniformTimeSampler", "LogitNormalTimeSampler", "get_time_sampler"]


class TimeSampler(ABC):
    """Draw per-sample times ``t`` of shape (B,) in [0, 1]."""

    @abstractmethod
    def __call__(
        self,
        batch_size: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Times (B,) on ``device``."""


class UniformTimeSampler(TimeSampler):
    """t ~ U(0, 1)."""

    def __call__(self, batch_size, device=None, dtype=torch.float32, generator=None):
        return torch.rand(batch_size, device=device, dtype=dtype, generator=generator)


class LogitNormalTimeSampler(TimeSampler):
    """t = sigmoid(loc + scale * n), n ~ N(0, 1): values in (0, 1), median sigmoid(loc).

    Args:
        loc: mean of the logit; ``loc > 0`` puts more samples near the data end (t = 1).
        scale: standard deviation of the logit, > 0.
    """

    def __init__(self, loc: float = 0.0, scale: float = 1.0) -> None:
        if not scale > 0:
            raise ValueError(f"scale must be > 0, got {scale}.")
        self.loc = float(loc)
        self.scale = float(scale)

    def __call__(self, batch_size, device=None, dtype=torch.float32, generator=None):
        n = torch.randn(batch_size, device=device, dtype=dtype, generator=generator)
        return torch.sigmoid(self.loc + self.scale * n)


def get_time_sampler(time_sampling: str | TimeSampler, loc: float = 0.0, scale: float = 1.0) -> TimeSampler:
    """Map ``"uniform"`` / ``"logit_normal"`` (with ``loc``, ``scale``) or a sampler instance to a sampler."""
    if isinstance(time_sampling, TimeSampler):
        return time_sampling
    if time_sampling == "uniform":
        return UniformTimeSampler()
    if time_sampling == "logit_normal":
        return LogitNormalTimeSampler(loc, scale)
    raise ValueError(f"time_sampling must be 'uniform', 'logit_normal' or a TimeSampler, got {time_sampling!r}.")
