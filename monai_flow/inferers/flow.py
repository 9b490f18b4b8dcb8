"""Generation inferer: integrate dx/dt = v(x, t) from noise at t = 0 to data at t = 1."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from monai_flow.inferers.base import Field, FlowInfererBase, Step, make_noise
from monai_flow.solvers import ODESolver, uniform_time_grid

__all__ = ["FlowInferer"]


class FlowInferer(FlowInfererBase):
    """``FlowInferer(num_steps, solver)(noise, network, class_labels=None, mask=None, condition=None)``.

    Time convention: t in [0, 1], t = 0 source (the given ``inputs``, e.g. N(0, I) noise or a
    degraded image), t = 1 target (data). The network is called as ``network(x, t)`` with ``t`` a
    0-d tensor (one time for the batch); NFE = ``num_steps * solver.nfe_per_step`` (doubled batch
    under guidance).

    Args:
        num_steps: number of solver steps on the uniform grid (ignored when ``time_grid`` is given).
        solver: ``"euler"``, ``"heun"``, ``"midpoint"``, ``"rk4"`` or an :class:`ODESolver`.
        guidance_scale: classifier-free guidance weight w, ``v = v_u + w (v_c - v_u)``.
        time_grid: optional explicit increasing times, e.g. ``(0.0, 0.5, 0.8, 1.0)``.
        progress: tqdm bar over the steps.
    """

    def __init__(
        self,
        num_steps: int = 50,
        solver: str | ODESolver = "euler",
        guidance_scale: float = 1.0,
        time_grid: Sequence[float] | torch.Tensor | None = None,
        progress: bool = False,
    ) -> None:
        super().__init__(guidance_scale=guidance_scale, progress=progress)
        self.solver = solver if isinstance(solver, ODESolver) else ODESolver(solver)
        if time_grid is None:
            self.time_grid = uniform_time_grid(num_steps)
        else:
            grid = torch.as_tensor(time_grid, dtype=torch.float64)
            if grid.ndim != 1 or grid.numel() < 2 or not bool((grid[1:] > grid[:-1]).all()):
                raise ValueError(
                    f"time_grid must be a strictly increasing 1-D sequence of >= 2 times, got {time_grid}."
                )
            self.time_grid = grid
        self.num_steps = self.time_grid.numel() - 1

    def step_sequence(self, inputs: torch.Tensor) -> list[Step]:
        """``num_steps`` pairs (t0, t1) of 0-d tensors on ``inputs.device``."""
        grid = self.time_grid.to(device=inputs.device, dtype=torch.promote_types(inputs.dtype, torch.float32))
        return [(grid[i], grid[i + 1]) for i in range(self.num_steps)]

    def apply_step(self, f: Field, x: torch.Tensor, step: Step) -> torch.Tensor:
        """One solver step from ``step[0]`` to ``step[1]``."""
        return self.solver.step(f, x, step[0], step[1])

    def sample(
        self,
        network: Callable[..., torch.Tensor],
        shape: Sequence[int],
        seed: int | None = None,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        class_labels: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        condition: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Draw the initial noise with :func:`make_noise` (reproducible from ``seed``) and integrate it."""
        noise = make_noise(shape, seed=seed, generator=generator, device=device)
        return self(noise, network, class_labels=class_labels, mask=mask, condition=condition)
