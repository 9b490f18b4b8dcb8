"""IR-Flow restoration inferer: from the degraded image at t = 0 to the clean image at t = 1."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from monai_flow.flows.cumulative import RESTORATION_TARGETS, restoration_step
from monai_flow.flows.paths import expand_time
from monai_flow.inferers.base import Field, FlowInfererBase, Step
from monai_flow.solvers import uniform_time_grid

__all__ = ["RestorationInferer"]

_SOLVERS = ("euler", "heun")


class RestorationInferer(FlowInfererBase):
    """``RestorationInferer(num_steps)(degraded, network)``: few-step restoration with an IR-Flow network.

    Time: t = 0 the degraded input, t = 1 the clean estimate; the network is called as
    ``network(x, t)`` with ``t`` a 0-d tensor. ``target`` must match training
    (:class:`monai_flow.flows.CumulativeVelocityFlow`): ``"cvf"`` updates
    ``x + (t1 - t0) / (1 - t0) N(x, t0)``, ``"rectified"`` ``x + (t1 - t0) N(x, t0)``,
    ``"direct"`` is one step ``y + N(y, 0)``. Heun averages the velocities at both ends of a step
    (for ``"cvf"`` the velocity is ``N / (1 - t)``); a step ending at t = 1 is Euler there, where
    the cumulative velocity is undefined. Works under :class:`SlidingWindowFlowInferer`.

    Args:
        num_steps: 1..N steps on a uniform grid (1 to 4 are typical; ignored with ``time_grid``).
        solver: "euler" (NFE = steps) or "heun" (NFE = 2 steps - 1).
        target: "cvf", "rectified" or "direct".
        time_grid: explicit increasing times from 0 to 1.
        output_scale: multiplies the network's output, as in training
            (:class:`~monai_flow.flows.CumulativeVelocityFlow` ``output_scale``).
    """

    def __init__(
        self,
        num_steps: int = 2,
        solver: str = "euler",
        target: str = "cvf",
        time_grid: Sequence[float] | None = None,
        progress: bool = False,
        output_scale: float = 1.0,
    ) -> None:
        super().__init__(guidance_scale=1.0, progress=progress)
        if solver not in _SOLVERS:
            raise ValueError(f"solver must be one of {_SOLVERS}, got {solver!r}.")
        if target not in RESTORATION_TARGETS:
            raise ValueError(f"target must be one of {RESTORATION_TARGETS}, got {target!r}.")
        grid = uniform_time_grid(num_steps) if time_grid is None else torch.as_tensor(time_grid, dtype=torch.float64)
        if grid.ndim != 1 or grid.numel() < 2 or grid[0] != 0 or grid[-1] != 1 or not bool((grid[1:] > grid[:-1]).all()):
            raise ValueError(f"time_grid must increase strictly from 0 to 1, got {grid.tolist()}.")
        if target == "direct" and grid.numel() != 2:
            raise ValueError(f"target='direct' is a one-step regression: num_steps must be 1, got {grid.numel() - 1}.")
        if not output_scale > 0:
            raise ValueError(f"output_scale must be > 0, got {output_scale}.")
        self.time_grid, self.solver, self.target, self.output_scale = grid, solver, target, float(output_scale)

    def step_sequence(self, inputs: torch.Tensor) -> list[Step]:
        grid = self.time_grid.to(device=inputs.device, dtype=torch.promote_types(inputs.dtype, torch.float32))
        return [(grid[i], grid[i + 1]) for i in range(grid.numel() - 1)]

    def _velocity(self, output: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return output if self.target == "rectified" else output / (1.0 - expand_time(t, x))

    def apply_step(self, f: Field, x: torch.Tensor, step: Step) -> torch.Tensor:
        t0, t1 = step
        scale = self.output_scale
        out0 = scale * f(x, t0)
        euler = restoration_step(x, out0, t0, t1, self.target)
        if self.solver == "euler" or bool(t1 >= 1):
            return euler
        k0, k1 = self._velocity(out0, x, t0), self._velocity(scale * f(euler, t1), euler, t1)
        return x + 0.5 * (t1 - t0) * (k0 + k1)
