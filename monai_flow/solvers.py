"""Fixed-grid ODE solvers for flow sampling: ``dx/dt = f(x, t)``.

The solver knows nothing about the probability path: it integrates any velocity callable
``f(x, t) -> v`` over an explicit 1-D time grid (increasing or decreasing). ``t`` is passed to
``f`` as a **0-d tensor** (one time for the whole batch; ``VelocityUNet`` and the inferers broadcast
it), on ``x.device`` with dtype ``promote_types(x.dtype, float32)`` so half-precision states never
round the time. Flow convention: t = 0 source (noise / degraded), t = 1 target (data / clean).

Gradients are not disabled here (a training objective may backpropagate through a rollout);
wrap calls in ``torch.no_grad()`` for inference.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch

__all__ = [
    "METHODS",
    "NFE_PER_STEP",
    "ODESolver",
    "SolverResult",
    "Velocity",
    "euler_step",
    "heun_step",
    "midpoint_step",
    "rk4_step",
    "solve",
    "step",
    "uniform_time_grid",
]

Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def euler_step(f: Velocity, x: torch.Tensor, t0: torch.Tensor, t1: torch.Tensor) -> torch.Tensor:
    """One explicit Euler step from t0 to t1 (1 evaluation)."""
    return torch.addcmul(x, t1 - t0, f(x, t0))


def heun_step(f: Velocity, x: torch.Tensor, t0: torch.Tensor, t1: torch.Tensor) -> torch.Tensor:
    """Heun (explicit trapezoid, RK2) step (2 evaluations)."""
    h = t1 - t0
    k1 = f(x, t0)
    k2 = f(torch.addcmul(x, h, k1), t1)
    return torch.addcmul(x, 0.5 * h, k1 + k2)


def midpoint_step(f: Velocity, x: torch.Tensor, t0: torch.Tensor, t1: torch.Tensor) -> torch.Tensor:
    """Explicit midpoint (RK2) step (2 evaluations)."""
    h = t1 - t0
    k1 = f(x, t0)
    return torch.addcmul(x, h, f(torch.addcmul(x, 0.5 * h, k1), t0 + 0.5 * h))


def rk4_step(f: Velocity, x: torch.Tensor, t0: torch.Tensor, t1: torch.Tensor) -> torch.Tensor:
    """Classical 4th-order Runge-Kutta step (4 evaluations).

    Memory: the state, one accumulator (a clone, updated in place) and one stage are alive at a
    time (no k1..k4 list).
    """
    h = t1 - t0
    tm = t0 + 0.5 * h
    k = f(x, t0)
    acc = k.clone()
    k = f(torch.addcmul(x, 0.5 * h, k), tm)
    acc.add_(k, alpha=2.0)
    k = f(torch.addcmul(x, 0.5 * h, k), tm)
    acc.add_(k, alpha=2.0)
    k = f(torch.addcmul(x, h, k), t1)
    acc.add_(k)
    return torch.addcmul(x, h / 6.0, acc)


METHODS: dict[str, Callable[[Velocity, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "euler": euler_step,
    "heun": heun_step,
    "midpoint": midpoint_step,
    "rk4": rk4_step,
}
NFE_PER_STEP = {"euler": 1, "heun": 2, "midpoint": 2, "rk4": 4}


def _method(method: str) -> str:
    m = str(method).lower()
    if m not in METHODS:
        raise ValueError(f"method must be one of {tuple(METHODS)}, got {method!r}.")
    return m


def step(f: Velocity, x: torch.Tensor, t0: torch.Tensor, t1: torch.Tensor, method: str = "euler") -> torch.Tensor:
    """One step of ``method`` from ``t0`` to ``t1`` (0-d tensors); returns the new state."""
    return METHODS[_method(method)](f, x, t0, t1)


def uniform_time_grid(
    num_steps: int, t0: float = 0.0, t1: float = 1.0, device: torch.device | str | None = None
) -> torch.Tensor:
    """``num_steps + 1`` equally spaced times from ``t0`` to ``t1`` (float32, shape (num_steps + 1,))."""
    if int(num_steps) != num_steps or num_steps < 1:
        raise ValueError(f"num_steps must be a positive integer, got {num_steps}.")
    return torch.linspace(t0, t1, int(num_steps) + 1, device=device)


def _as_grid(time_grid: torch.Tensor | Sequence[float], x: torch.Tensor) -> torch.Tensor:
    grid = torch.as_tensor(time_grid)
    if grid.ndim != 1 or grid.numel() < 2:
        raise ValueError(f"time_grid must be a 1-D tensor with at least 2 times, got shape {tuple(grid.shape)}.")
    grid = grid.to(device=x.device, dtype=torch.promote_types(x.dtype, torch.float32))
    d = grid[1:] - grid[:-1]
    if not (bool((d > 0).all()) or bool((d < 0).all())):
        raise ValueError(f"time_grid must be strictly increasing or strictly decreasing, got {grid.tolist()}.")
    return grid


class SolverResult(NamedTuple):
    """``x``: final state; ``nfe``: number of velocity evaluations; ``trajectory``: states at every
    grid time stacked as (len(time_grid), *x.shape), or None."""

    x: torch.Tensor
    nfe: int
    trajectory: torch.Tensor | None = None


def solve(
    f: Velocity,
    x0: torch.Tensor,
    time_grid: torch.Tensor | Sequence[float],
    method: str = "euler",
    return_trajectory: bool = False,
) -> SolverResult:
    """Integrate ``dx/dt = f(x, t)`` from ``x0`` at ``time_grid[0]`` to ``time_grid[-1]``.

    Args:
        f: velocity callable ``f(x, t)``, ``t`` a 0-d tensor.
        x0: initial state (B, C, *spatial) (any shape works).
        time_grid: 1-D, strictly monotone (increasing or decreasing) times.
        method: ``"euler"``, ``"heun"``, ``"midpoint"`` or ``"rk4"``.
        return_trajectory: also return every intermediate state (memory: len(grid) copies).
    """
    m = _method(method)
    grid = _as_grid(time_grid, x0)
    step_fn = METHODS[m]
    x = x0
    traj = [x0] if return_trajectory else None
    for i in range(grid.numel() - 1):
        x = step_fn(f, x, grid[i], grid[i + 1])
        if traj is not None:
            traj.append(x)
    nfe = NFE_PER_STEP[m] * (grid.numel() - 1)
    return SolverResult(x, nfe, torch.stack(traj) if traj is not None else None)


class ODESolver:
    """Fixed-grid solver object: ``ODESolver("rk4").solve(f, x0, time_grid)``.

    Attributes:
        method: solver name; ``nfe_per_step``: velocity evaluations per step.
    """

    def __init__(self, method: str = "euler") -> None:
        self.method = _method(method)
        self.nfe_per_step = NFE_PER_STEP[self.method]

    def step(self, f: Velocity, x: torch.Tensor, t0: torch.Tensor, t1: torch.Tensor) -> torch.Tensor:
        """One step from ``t0`` to ``t1``; see :func:`step`."""
        return METHODS[self.method](f, x, t0, t1)

    def solve(
        self,
        f: Velocity,
        x0: torch.Tensor,
        time_grid: torch.Tensor | Sequence[float],
        return_trajectory: bool = False,
    ) -> SolverResult:
        """See :func:`solve`."""
        return solve(f, x0, time_grid, self.method, return_trajectory)

    __call__ = solve

    def __repr__(self) -> str:
        return f"ODESolver(method={self.method!r})"
