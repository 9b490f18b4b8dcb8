"""RelativeFlow denoising inferer (Euler in quality time, fixed or noise-adaptive dt schedule)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

import torch

from monai_flow.flows.relative import relative_euler_step
from monai_flow.inferers.base import Field, FlowInfererBase, Step
from monai_flow.inferers.calibration import QualityTimeCalibration
from monai_flow.inferers.schedules import relative_dt_schedule, split_dt_schedule

__all__ = ["RelativeFlowInferer"]


class RelativeFlowInferer(FlowInfererBase):
    """Denoise with a RelativeFlow network: Euler steps ``x <- x + (e^{dt} - 1) net(x, dt)``.

    Time convention: quality time tau, larger is cleaner; the network receives the step size
    ``dt > 0`` in its time slot (``VelocityUNet`` scales it by ``time_scale``). Noise std scales
    like ``e^{-tau}``, so a step of size dt divides the noise std by ``e^{dt}``.

    Args:
        dt_schedule: fixed step sizes applied to every input (paper default ``(0.2, 0.1, 0.05)``),
            or ``"auto"``: per-sample schedule from the input's noise level (our improvement over
            the paper's fixed schedule). The quality gap ``ln(sigma_hat / target_std)`` (clamped
            at >= 0) is split by :func:`~monai_flow.inferers.schedules.relative_dt_schedule` into
            halving steps capped at ``max_dt`` (a gap of 0.35 gives the paper's schedule). Samples of
            a batch may need different numbers of steps: all run in one batch for the longest
            schedule and finished samples take ``dt = 0`` steps, whose update factor
            ``e^0 - 1 = 0`` leaves them exactly unchanged (they still cost a network evaluation).
        num_steps: if given, the schedule's total (the sum of a fixed ``dt_schedule``, or each
            sample's gap with ``"auto"``) is taken in exactly ``num_steps`` coarse-to-fine steps
            (:func:`~monai_flow.inferers.schedules.split_dt_schedule`): more steps follow the flow
            more closely, the noise removed stays the same.
        noise_estimator: ``auto`` only; ``Callable[[Tensor (B, C, *spatial)], Tensor (B,)]``
            returning the per-sample noise std, e.g. ``monai_flow.transforms`` estimators.
        target_std: ``auto`` only; noise std regarded as clean (same units as the estimator).
        max_dt: the largest step (the largest dt the network was trained on); ``auto`` schedules
            stay below it, and a ``num_steps`` split that exceeds it warns.
        min_dt: the final (finest) step of the template.
        max_steps: ``auto`` only; upper bound on the number of steps.
        progress: tqdm bar over the steps.
        calibration: ``auto`` only; the network's measured
            :class:`~monai_flow.inferers.calibration.QualityTimeCalibration`: the gap
            ``ln(sigma_hat / target_std)`` is then the noise to *remove*, and the schedule takes the
            nominal gap that removed it when measured (later steps remove less than ``e^{dt}``).
            A target below what the network reached when measured warns and goes as far as it did.
            Without it, ``auto`` assumes every step removes ``e^{dt}``.
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
        num_steps: int | None = None,
        calibration: QualityTimeCalibration | None = None,
    ) -> None:
        super().__init__(guidance_scale=1.0, progress=progress)
        relative_dt_schedule(0.0, max_dt, min_dt)  # validates max_dt / min_dt
        if isinstance(dt_schedule, str):
            if dt_schedule != "auto":
                raise ValueError(f"dt_schedule must be a sequence of floats or 'auto', got {dt_schedule!r}.")
            if noise_estimator is None or target_std is None or not target_std > 0:
                raise ValueError(
                    "dt_schedule='auto' needs noise_estimator (callable) and target_std > 0, "
                    f"got noise_estimator={noise_estimator!r}, target_std={target_std!r}."
                )
            self.dt_schedule: tuple[float, ...] | str = "auto"
        else:
            dts = tuple(float(d) for d in dt_schedule)
            if not dts or any(not d > 0 for d in dts):
                raise ValueError(f"dt_schedule must be a non-empty sequence of dt > 0, got {dt_schedule!r}.")
            self.dt_schedule = dts
        if num_steps is not None and (isinstance(num_steps, bool) or int(num_steps) != num_steps or num_steps < 1):
            raise ValueError(f"num_steps must be an integer >= 1 or None, got {num_steps!r}.")
        self.num_steps = None if num_steps is None else int(num_steps)
        self.noise_estimator = noise_estimator
        self.target_std = target_std
        self.max_dt, self.min_dt, self.max_steps = max_dt, min_dt, max_steps
        if calibration is not None and not isinstance(calibration, QualityTimeCalibration):
            raise ValueError(f"calibration must be a QualityTimeCalibration or None, got {type(calibration).__name__}.")
        if calibration is not None and self.num_steps is not None and self.dt_schedule == "auto":
            warnings.warn(f"num_steps={self.num_steps} re-splits the calibrated schedules into other steps; the "
                          "calibration was measured on the template's steps, so target_std is met less closely.",
                          stacklevel=2)
        if calibration is not None and (calibration.max_dt, calibration.min_dt) != (max_dt, min_dt):
            warnings.warn(f"calibration measured with max_dt={calibration.max_dt}, min_dt={calibration.min_dt}, "
                          f"used with max_dt={max_dt}, min_dt={min_dt}: remeasure it for this template.", stacklevel=2)
        self.calibration = calibration
        self._warned_reach = False  # the unreachable-target warning, once per inferer

    def _rows(self, inputs: torch.Tensor) -> list[list[float]]:
        """One schedule per sample (before the ``num_steps`` split)."""
        b = inputs.shape[0]
        if self.dt_schedule != "auto":
            return [list(self.dt_schedule)] * b
        sigma = torch.as_tensor(self.noise_estimator(inputs)).detach().double().reshape(-1).cpu()  # type: ignore[misc]
        if sigma.numel() == 1:
            sigma = sigma.expand(b)
        if sigma.numel() != b:
            raise ValueError(f"noise_estimator must return shape (B,)=({b},), got {sigma.numel()} values.")
        gaps = [float(g) for g in torch.log(sigma.clamp_min(1e-30) / self.target_std).clamp_min(0.0)]  # type: ignore[operator]
        if self.calibration is not None:
            reach = [self.calibration.reach(float(s)) for s in sigma]
            if any(g > r for g, r in zip(gaps, reach)) and not self._warned_reach:
                self._warned_reach = True
                worst = max(range(b), key=lambda i: gaps[i] - reach[i])
                warnings.warn(f"target_std={self.target_std:.4g} asks to divide the noise by {math.exp(gaps[worst]):.3g}; "
                              f"the calibration measured at most {math.exp(reach[worst]):.3g} (its largest nominal gap, "
                              f"{self.calibration.nominal[-1]:g}), so auto goes that far.", stacklevel=3)
            gaps = [self.calibration.nominal_gap(g, float(s)) for g, s in zip(gaps, sigma)]
        return [relative_dt_schedule(g, self.max_dt, self.min_dt, self.max_steps) for g in gaps]

    def dt_table(self, inputs: torch.Tensor) -> torch.Tensor:
        """Step sizes as a (B, K) tensor (K steps; finished samples padded with 0)."""
        rows = self._rows(inputs)
        if self.num_steps is not None:
            rows = [split_dt_schedule(sum(r), self.num_steps, self.max_dt, self.min_dt) if r else [] for r in rows]
            largest = max((r[0] for r in rows if r), default=0.0)
            if largest > self.max_dt * (1 + 1e-6):
                warnings.warn(f"num_steps={self.num_steps}: a step of dt={largest:.3g} exceeds the largest trained "
                              f"step max_dt={self.max_dt}; use more steps.", stacklevel=2)
        k = max((len(r) for r in rows), default=0)
        table = torch.zeros(len(rows), k, dtype=torch.float64)
        for i, r in enumerate(rows):
            table[i, : len(r)] = torch.tensor(r, dtype=torch.float64)
        return table

    def step_sequence(self, inputs: torch.Tensor) -> list[Step]:
        """One ``(dt,)`` per step: 0-d when every sample shares the schedule, (B,) in ``auto`` mode."""
        table = self.dt_table(inputs).to(device=inputs.device, dtype=torch.promote_types(inputs.dtype, torch.float32))
        if self.dt_schedule != "auto":
            return [(table[0, k],) for k in range(table.shape[1])]
        return [(table[:, k],) for k in range(table.shape[1])]

    def apply_step(self, f: Field, x: torch.Tensor, step: Step) -> torch.Tensor:
        """:func:`~monai_flow.flows.relative.relative_euler_step` with ``f(x, dt)``, dt 0-d or (B,)."""
        dt = step[0]
        return relative_euler_step(x, f(x, dt), dt)
