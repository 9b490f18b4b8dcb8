"""RelativeFlow denoising inferer (Euler in quality time, fixed or noise-adaptive dt schedule)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

import torch

from monai_flow.inferers.base import Field, FlowInfererBase, Step

__all__ = ["RelativeFlowInferer", "relative_dt_schedule", "split_dt_schedule"]


def relative_dt_schedule(gap: float, max_dt: float = 0.2, min_dt: float = 0.05, max_steps: int = 64) -> list[float]:
    """Split a quality-time gap into a coarse-to-fine sequence of step sizes summing to ``gap``.

    Template, read from the clean end: the last step is ``min_dt``, each earlier one doubles,
    capped at ``max_dt`` (the largest trained dt): ``..., max_dt, max_dt, ..., 4 min_dt, 2 min_dt,
    min_dt``. The fewest template steps whose sum reaches ``gap`` are taken and scaled down to sum
    to ``gap`` exactly. With the defaults a gap of 0.35 gives the paper's (0.2, 0.1, 0.05); larger
    gaps add ``max_dt`` steps in front, smaller gaps drop the coarse steps. ``gap <= 0`` gives no
    step. Beyond ``max_steps`` the schedule is truncated with a warning (the gap is not closed).
    """
    if not max_dt > 0 or not 0 < min_dt <= max_dt:
        raise ValueError(f"need 0 < min_dt <= max_dt, got min_dt={min_dt}, max_dt={max_dt}.")
    if not math.isfinite(gap):
        raise ValueError(f"gap must be finite, got {gap} (check the noise estimate and target_std).")
    if gap <= 0:
        return []
    template: list[float] = []  # clean end first
    total = 0.0
    while total < gap * (1 - 1e-12):
        if len(template) == max_steps:
            warnings.warn(
                f"relative_dt_schedule: gap {gap:.3g} needs more than max_steps={max_steps} steps; truncated."
            )
            return template[::-1]
        template.append(min(max_dt, min_dt * 2.0 ** len(template)))
        total += template[-1]
    scale = gap / total
    return [d * scale for d in reversed(template)]


def split_dt_schedule(total: float, steps: int, max_dt: float = 0.2, min_dt: float = 0.05) -> list[float]:
    """``steps`` coarse-to-fine step sizes summing to ``total``: the template of
    :func:`relative_dt_schedule` (from the clean end ``min_dt``, doubling, capped at ``max_dt``)
    cut to ``steps`` entries and scaled. A total of 0.35 in 3 steps is the paper's
    (0.2, 0.1, 0.05); 1 step is ``(total,)``. Changing ``steps`` keeps the noise removed (``total``).
    """
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}.")
    if not total > 0 or not math.isfinite(total):
        raise ValueError(f"total must be a finite dt > 0, got {total}.")
    template = [min(max_dt, min_dt * 2.0**k) for k in range(int(steps))][::-1]
    scale = total / sum(template)
    return [d * scale for d in template]


class RelativeFlowInferer(FlowInfererBase):
    """Denoise with a RelativeFlow network: Euler steps ``x <- x + (e^{dt} - 1) net(x, dt)``.

    Time convention: quality time tau, larger is cleaner; the network receives the step size
    ``dt > 0`` in its time slot (``VelocityUNet`` scales it by ``time_scale``). Noise std scales
    like ``e^{-tau}``, so a step of size dt divides the noise std by ``e^{dt}``.

    Args:
        dt_schedule: fixed step sizes applied to every input (paper default ``(0.2, 0.1, 0.05)``),
            or ``"auto"``: per-sample schedule from the input's noise level (our improvement over
            the paper's fixed schedule). The quality gap ``ln(sigma_hat / target_std)`` (clamped
            at >= 0) is split by :func:`relative_dt_schedule` into halving steps capped at
            ``max_dt`` (a gap of 0.35 gives the paper's schedule). Samples of a
            batch may need different numbers of steps: all run in one batch for the longest
            schedule and finished samples take ``dt = 0`` steps, whose update factor
            ``e^0 - 1 = 0`` leaves them exactly unchanged (they still cost a network evaluation).
        noise_estimator: ``auto`` only; ``Callable[[Tensor (B, C, *spatial)], Tensor (B,)]``
            returning the per-sample noise std, e.g. ``monai_flow.transforms`` estimators.
        target_std: ``auto`` only; noise std regarded as clean (same units as the estimator).
        max_dt: ``auto`` only; largest step (the largest dt the network was trained on).
        min_dt: ``auto`` only; the final (finest) step of the template, see :func:`relative_dt_schedule`.
        max_steps: ``auto`` only; upper bound on the number of steps.
        progress: tqdm bar over the steps.
    """

    def __init__(
        self,
        dt_schedule: Sequence[float] | str = (0.2, 0.1, 0.05),
        noise_estimator: Callable[[torch.Tensor], torch.Tensor] | None = None,
        target_std: float | None = None,
        max_dt: float = 0.2,
        min_dt: float = 0.05,
        max_steps: int = 64,
        progress: bool = False,
    ) -> None:
        super().__init__(guidance_scale=1.0, progress=progress)
        if isinstance(dt_schedule, str):
            if dt_schedule != "auto":
                raise ValueError(f"dt_schedule must be a sequence of floats or 'auto', got {dt_schedule!r}.")
            if noise_estimator is None or target_std is None or not target_std > 0:
                raise ValueError(
                    "dt_schedule='auto' needs noise_estimator (callable) and target_std > 0, "
                    f"got noise_estimator={noise_estimator!r}, target_std={target_std!r}."
                )
            relative_dt_schedule(0.0, max_dt, min_dt)  # validates max_dt / min_dt
            self.dt_schedule: tuple[float, ...] | str = "auto"
        else:
            dts = tuple(float(d) for d in dt_schedule)
            if not dts or any(not d > 0 for d in dts):
                raise ValueError(f"dt_schedule must be a non-empty sequence of dt > 0, got {dt_schedule!r}.")
            self.dt_schedule = dts
        self.noise_estimator = noise_estimator
        self.target_std = target_std
        self.max_dt, self.min_dt, self.max_steps = max_dt, min_dt, max_steps

    def dt_table(self, inputs: torch.Tensor) -> torch.Tensor:
        """Step sizes as a (B, K) tensor (K steps; finished samples padded with 0)."""
        b = inputs.shape[0]
        if self.dt_schedule != "auto":
            return torch.tensor(self.dt_schedule, dtype=torch.float64).expand(b, -1)
        sigma = torch.as_tensor(self.noise_estimator(inputs)).detach().double().reshape(-1).cpu()  # type: ignore[misc]
        if sigma.numel() == 1:
            sigma = sigma.expand(b)
        if sigma.numel() != b:
            raise ValueError(f"noise_estimator must return shape (B,)=({b},), got {sigma.numel()} values.")
        gaps = torch.log(sigma.clamp_min(1e-30) / self.target_std).clamp_min(0.0)  # type: ignore[operator]
        rows = [relative_dt_schedule(float(g), self.max_dt, self.min_dt, self.max_steps) for g in gaps]
        k = max((len(r) for r in rows), default=0)
        table = torch.zeros(b, k, dtype=torch.float64)
        for i, r in enumerate(rows):
            table[i, : len(r)] = torch.tensor(r, dtype=torch.float64)
        return table

    def step_sequence(self, inputs: torch.Tensor) -> list[Step]:
        """One ``(dt,)`` per step: 0-d for a fixed schedule, (B,) in ``auto`` mode."""
        table = self.dt_table(inputs).to(device=inputs.device, dtype=torch.promote_types(inputs.dtype, torch.float32))
        if self.dt_schedule != "auto":
            return [(table[0, k],) for k in range(table.shape[1])]
        return [(table[:, k],) for k in range(table.shape[1])]

    def apply_step(self, f: Field, x: torch.Tensor, step: Step) -> torch.Tensor:
        """``x + (e^{dt} - 1) f(x, dt)``, dt 0-d or per sample (B,)."""
        dt = step[0]
        factor = torch.expm1(dt)
        if factor.ndim == 1:
            factor = factor.reshape(-1, *([1] * (x.ndim - 1)))
        return torch.addcmul(x, factor, f(x, dt))
