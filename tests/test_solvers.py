"""Fixed-grid ODE solvers against the closed-form Gaussian conditional-OT flow."""

from __future__ import annotations

import math

import pytest
import torch

from monai_flow.solvers import NFE_PER_STEP, ODESolver, SolverResult, solve, step, uniform_time_grid

M, C = 1.5, 0.4  # data x1 ~ N(M, C^2); source x0 ~ N(0, 1)
METHODS = ("euler", "heun", "midpoint", "rk4")


def gaussian_velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Exact marginal conditional-OT velocity (sigma_min = 0) for N(0,1) -> N(M, C^2)."""
    return M + ((t * C**2 - (1 - t)) / ((1 - t) ** 2 + t**2 * C**2)) * (x - t * M)


def exact_map(x0: torch.Tensor) -> torch.Tensor:
    """The flow map from t=0 to t=1 of the field above: x1 = M + C x0."""
    return M + C * x0


class Counter:
    def __init__(self, f):
        self.f, self.calls, self.times = f, 0, []

    def __call__(self, x, t):
        self.calls += 1
        self.times.append(t)
        return self.f(x, t)


def _err(method: str, n: int) -> float:
    x0 = torch.linspace(-3, 3, 101, dtype=torch.float64)
    x1 = solve(gaussian_velocity, x0, uniform_time_grid(n), method).x
    return float((x1 - exact_map(x0)).abs().max())


@pytest.mark.parametrize("method", METHODS)
def test_moments_and_nfe(method):
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(20000, generator=g, dtype=torch.float64)
    x0 = (x0 - x0.mean()) / x0.std()
    f = Counter(gaussian_velocity)
    res = solve(f, x0, uniform_time_grid(16), method)
    assert isinstance(res, SolverResult) and res.trajectory is None
    assert res.nfe == f.calls == 16 * NFE_PER_STEP[method]
    assert NFE_PER_STEP == {"euler": 1, "heun": 2, "midpoint": 2, "rk4": 4}
    tol = 0.05 if method == "euler" else 5e-3
    assert abs(float(res.x.mean()) - M) < tol
    assert abs(float(res.x.std()) - C) < tol
    assert all(t.ndim == 0 for t in f.times)  # t passed as a 0-d tensor


def test_convergence_orders():
    """Empirical order on a generic non-autonomous linear ODE (error ratio when halving the step)."""

    def f(x, t):
        return torch.cos(3 * t) * x + t * t

    x0 = torch.tensor([1.0], dtype=torch.float64)
    ref = solve(f, x0, uniform_time_grid(2048), "rk4").x

    def ratio(m):
        e = [float((solve(f, x0, uniform_time_grid(n), m).x - ref).abs()) for n in (32, 64)]
        return e[0] / e[1]

    assert ratio("euler") > 1.7 and ratio("euler") < 2.4  # first order
    assert 3.0 < ratio("heun") < 6.5 and 3.0 < ratio("midpoint") < 6.5  # second order
    assert ratio("rk4") > 12  # fourth order


def test_gaussian_accuracy():
    assert _err("euler", 64) < _err("euler", 16) < _err("euler", 4)
    assert _err("rk4", 8) < 1e-4  # near exact with few steps
    assert _err("euler", 8) > 1e-2  # and Euler is not
    assert _err("heun", 8) < _err("euler", 8) / 10


def test_decreasing_grid_inverts_the_flow():
    x0 = torch.linspace(-2, 2, 11, dtype=torch.float64)
    x1 = solve(gaussian_velocity, x0, uniform_time_grid(20), "rk4").x
    back = solve(gaussian_velocity, x1, torch.linspace(1, 0, 21), "rk4").x
    torch.testing.assert_close(back, x0, atol=1e-6, rtol=0)


def test_trajectory_and_solver_object():
    x0 = torch.randn(3, 1, 4, 4, dtype=torch.float64)
    solver = ODESolver("heun")
    grid = torch.tensor([0.0, 0.25, 0.6, 1.0])
    res = solver.solve(gaussian_velocity, x0, grid, return_trajectory=True)
    assert res.trajectory.shape == (4, 3, 1, 4, 4)
    torch.testing.assert_close(res.trajectory[0], x0)
    torch.testing.assert_close(res.trajectory[-1], res.x)
    assert res.nfe == 6 and solver.nfe_per_step == 2
    # step() composes to solve()
    x = x0
    g = grid.double()
    for i in range(3):
        x = step(gaussian_velocity, x, g[i], g[i + 1], "heun")
    torch.testing.assert_close(x, res.x)
    torch.testing.assert_close(solver.step(gaussian_velocity, x0, g[0], g[1]), res.trajectory[1])


@pytest.mark.parametrize("method", METHODS)
def test_gradients_flow_through_the_rollout(method):
    """dx/dt = w cos(t) x from x(0) = 1: x(1) = exp(w sin 1), d x(1) / dw = sin(1) x(1)."""
    w = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    x = solve(lambda x, t: w * torch.cos(t) * x, torch.ones(2, dtype=torch.float64), uniform_time_grid(16), method).x
    (g,) = torch.autograd.grad(x.sum(), w)
    exact = 2 * math.sin(1.0) * math.exp(0.7 * math.sin(1.0))
    assert abs(float(g) - exact) < {"euler": 0.1, "heun": 1e-2, "midpoint": 1e-2, "rk4": 1e-4}[method]


def test_half_precision_state_keeps_float32_time():
    f = Counter(lambda x, t: torch.zeros_like(x))
    solve(f, torch.zeros(2, dtype=torch.float16), uniform_time_grid(3), "euler")
    assert all(t.dtype == torch.float32 for t in f.times)
    torch.testing.assert_close(torch.stack(f.times), torch.tensor([0.0, 1 / 3, 2 / 3]))


def test_uniform_grid_and_errors():
    torch.testing.assert_close(uniform_time_grid(4), torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0]))
    with pytest.raises(ValueError, match="num_steps"):
        uniform_time_grid(0)
    with pytest.raises(ValueError, match="method"):
        ODESolver("rk45")
    x = torch.zeros(2)
    with pytest.raises(ValueError, match="monotone|increasing"):
        solve(gaussian_velocity, x, [0.0, 0.5, 0.4, 1.0])
    with pytest.raises(ValueError, match="1-D"):
        solve(gaussian_velocity, x, torch.zeros(2, 2))
