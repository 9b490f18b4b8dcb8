"""Curriculum of degradation step sizes dt for RelativeFlow training."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

__all__ = ["DtCurriculum"]


class DtCurriculum:
    """Range [dt_min, dt_max] of RelativeFlow step sizes, widened once per epoch.

    After ``epoch`` steps: dt_min = max(start[0] * factor**epoch, dt_min_floor) and
    dt_max = min(start[1] / factor**epoch, dt_max_cap). Per-sample dt ~ U[dt_min, dt_max].
    Has ``state_dict()``/``load_state_dict()`` so MONAI ``CheckpointSaver``/``CheckpointLoader``
    can store and restore it.

    Args:
        start: initial (dt_min, dt_max), 0 < dt_min <= dt_max.
        factor: widening factor a in (0, 1]; 1 keeps the range fixed.
        dt_min_floor: lower bound of dt_min, > 0.
        dt_max_cap: upper bound of dt_max (e.g. 1.0: one step at most multiplies the noise std
            by e, i.e. a CT dose fraction e^-2 ~ 0.14).
    """

    def __init__(
        self,
        start: Sequence[float] = (0.2, 0.2),
        factor: float = 0.9,
        dt_min_floor: float = 0.01,
        dt_max_cap: float = 1.0,
    ) -> None:
        if len(start) != 2 or not 0 < start[0] <= start[1]:
            raise ValueError(f"start must be (dt_min, dt_max) with 0 < dt_min <= dt_max, got {tuple(start)}.")
        if not 0 < factor <= 1:
            raise ValueError(f"factor must be in (0, 1], got {factor}.")
        if not 0 < dt_min_floor <= start[0]:
            raise ValueError(f"dt_min_floor must be in (0, start[0]={start[0]}], got {dt_min_floor}.")
        if not dt_max_cap >= start[1]:
            raise ValueError(f"dt_max_cap must be >= start[1]={start[1]}, got {dt_max_cap}.")
        self.start = (float(start[0]), float(start[1]))
        self.factor = float(factor)
        self.dt_min_floor = float(dt_min_floor)
        self.dt_max_cap = float(dt_max_cap)
        self.epoch = 0

    @property
    def dt_min(self) -> float:
        return max(self.start[0] * self.factor**self.epoch, self.dt_min_floor)

    @property
    def dt_max(self) -> float:
        return min(self.start[1] / self.factor**self.epoch, self.dt_max_cap)

    @property
    def range(self) -> tuple[float, float]:
        """Current (dt_min, dt_max)."""
        return self.dt_min, self.dt_max

    def step(self) -> None:
        """Advance one epoch (widen the range)."""
        self.epoch += 1

    def sample(
        self,
        batch_size: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Per-sample step sizes dt (B,) ~ U[dt_min, dt_max]."""
        lo, hi = self.range
        u = torch.rand(batch_size, device=device, dtype=dtype, generator=generator)
        return lo + (hi - lo) * u

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "dt_min": self.dt_min, "dt_max": self.dt_max}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        epoch = state_dict.get("epoch") if isinstance(state_dict, Mapping) else None
        epoch = int(epoch.item()) if isinstance(epoch, torch.Tensor) else epoch
        if not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"state_dict['epoch'] must be a non-negative int, got {epoch!r}.")
        self.epoch = epoch

    def __repr__(self) -> str:
        return f"{type(self).__name__}(epoch={self.epoch}, range=({self.dt_min:.4g}, {self.dt_max:.4g}))"
