"""Flow maps that denoise: a denoiser parameterisation and a training recipe that converges at small budgets.

Time: t in [0, 1], t = 0 noise e, t = 1 data x, ``z_t = t x + (1 - t) e`` (as :mod:`.flow_map`).
A flow-map network ``u(z, s, t)`` is the average velocity from s to t; the flow-map denoiser
(:class:`~monai_flow.inferers.FlowMapDenoiser`) reads a noisy ``y = x + sigma n`` at ``s = 1 / (1 + sigma)``,
``z = s y``, and returns ``D_{s,t}(z) = z + (1 - s) u(z, s, t)`` with ``t = s + lookahead (1 - s)``.
Everything here is written in terms of that output ``D`` (an image), and in the noise level
``sigma = (1 - s) / s`` of ``x_sigma = z / s = x + sigma e`` (EDM's variable):

- ``t = s``: ``D = E[x | z]`` (MMSE); ``t = 1``: ``D = X_{s,1}(z)``, the probability-flow ODE's endpoint;
- one Euler (DDIM) step of the ODE from sigma to sigma' with the denoised ``x_hat = D(z, s, s)`` is
  ``x_sigma' = x_hat + (sigma' / sigma) (x_sigma - x_hat)``.

:class:`DenoiserFlowMap` wraps any flow-map network ``F(z, s, target_time=t)`` so that it predicts
``D`` with EDM's preconditioning (skip connection and input / output scaling per sigma) and returns
the average velocity ``u = (D - z) / (1 - s)``: the flow-map interface is unchanged, but the
network's output is an image-scale correction at every noise level, which is what makes the MMSE
end train as fast as a regression network.

:class:`FlowMapDistillation` trains it: on the diagonal (``t = s``) the loss is the regression
``||D(z, s, s) - x||^2``; off the diagonal the target is the teacher's probability-flow ODE solved
from s to t with a few steps (no gradient), ``||D(z, s, t) - D_target||^2`` with
``D_target = z + (1 - s) (X_{s,t}(z) - z) / (t - s)``. The teacher is the network's own diagonal
(self-distillation; the default) or any velocity network ``v(z, t)``. Times are drawn where the
denoiser is used: ``sigma`` log-uniform in ``sigma_range`` and the lookahead uniform in [0, 1].
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn as nn

from .base import FlowObjective
from .paths import expand_time

__all__ = ["DenoiserFlowMap", "FlowMapDistillation", "flow_map_ode", "ramp_noise", "sigma_to_time", "time_to_sigma"]

_S_MIN = 1e-4  # s = 0 is sigma = inf: clamp, so that generation from pure noise still works
_WEIGHTINGS = ("uniform", "edm")


def time_to_sigma(s: torch.Tensor) -> torch.Tensor:
    """Noise level ``sigma = (1 - s) / s`` of ``z_s / s = x + sigma e`` (s clamped to [1e-4, 1])."""
    s = s.clamp(_S_MIN, 1.0)
    return (1.0 - s) / s


def sigma_to_time(sigma: torch.Tensor) -> torch.Tensor:
    """Flow time ``s = 1 / (1 + sigma)`` of a noise level sigma >= 0."""
    return 1.0 / (1.0 + sigma)


class DenoiserFlowMap(nn.Module):
    """Flow-map network ``u(z, s, target_time=t)`` that predicts the denoiser output with EDM preconditioning.

    With ``sigma = (1 - s) / s`` and ``x_sigma = z / s``:
    ``D = c_skip x_sigma + c_out F(c_in x_sigma, s, target_time=t)``, ``c_skip = sd^2 / (sigma^2 + sd^2)``,
    ``c_out = sigma sd / sqrt(sigma^2 + sd^2)``, ``c_in = 1 / sqrt(sigma^2 + sd^2)`` (``sd`` =
    ``sigma_data``, the data's standard deviation), and the returned average velocity is
    ``u = (D - z) / (1 - s)``, so that ``z + (1 - s) u = D``. ``F`` is any flow-map network called as
    ``network(z, s, target_time=t)`` (e.g. ``VelocityUNet(flow_map=True)``); it receives the raw times.
    At ``s = 1`` (no noise) ``D = z`` and ``u = 0``.

    Args:
        network: the flow-map network F.
        sigma_data: data standard deviation in the network's units (CT in HU / 1000: about 0.5).
    """

    def __init__(self, network: nn.Module, sigma_data: float = 0.5) -> None:
        super().__init__()
        if not sigma_data > 0:
            raise ValueError(f"sigma_data must be > 0, got {sigma_data}.")
        self.network, self.sigma_data = network, float(sigma_data)
        self.flow_map = True

    def denoise(self, z: torch.Tensor, s, target_time) -> torch.Tensor:
        """``D(z, s, t)`` (B, C, *spatial) for times s, t: floats, 0-d or (B,) tensors."""
        s = _times(s, z)
        t = _times(target_time, z)
        sigma = expand_time(time_to_sigma(s), z)
        sd2 = self.sigma_data**2
        x_sigma = z / expand_time(s.clamp(_S_MIN, 1.0), z)
        c_skip = sd2 / (sigma.square() + sd2)
        c_out = sigma * self.sigma_data / (sigma.square() + sd2).sqrt()
        c_in = 1.0 / (sigma.square() + sd2).sqrt()
        return c_skip * x_sigma + c_out * self.network(c_in * x_sigma, s, target_time=t)

    def forward(self, z: torch.Tensor, t, target_time) -> torch.Tensor:
        s = _times(t, z)
        d = self.denoise(z, s, target_time)
        return (d - z) / expand_time((1.0 - s).clamp_min(1e-6), z)


def _times(t, like: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(t, device=like.device, dtype=like.dtype if like.is_floating_point() else torch.float32)
    return t.reshape(1).expand(like.shape[0]) if t.numel() == 1 else t.reshape(-1)


def flow_map_ode(
    denoiser: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    z: torch.Tensor,
    s: torch.Tensor,
    t: torch.Tensor,
    num_steps: int = 4,
    solver: str = "heun",
    floor_ratio: float = 0.1,
) -> torch.Tensor:
    """``X_{s,t}(z)``: the probability-flow ODE from s to t (B,) solved in ``num_steps`` steps.

    ``denoiser(z, time) -> E[x | z_time]`` (the teacher's MMSE estimate). In ``x_sigma = z / time``
    the ODE is ``dx / dsigma = (x - x_hat) / sigma``; its steps run geometrically in sigma from
    sigma_s to ``max(sigma_t, floor_ratio * sigma_s)``, each EDM's Euler (DDIM) step
    ``x' = x_hat + (sigma' / sigma)(x - x_hat)`` with Heun's correction (``solver="heun"``: about
    two denoiser calls per step), then, when t = 1, one Euler step into sigma = 0 (``x = x_hat``).
    On a two-component Gaussian mixture with the exact denoiser, 4 Heun steps with the floor at
    sigma_s / 10 reach the exact endpoint within 1.5 - 6 % of ``|endpoint - MMSE|`` (sigma 0.15 - 1).
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}.")
    if solver not in ("euler", "heun"):
        raise ValueError(f"solver must be 'euler' or 'heun', got {solver!r}.")
    sig_s, sig_t = time_to_sigma(s), time_to_sigma(t)
    low = torch.maximum(sig_t, sig_s * floor_ratio).clamp_min(1e-12)
    frac = torch.linspace(0.0, 1.0, num_steps + 1, device=z.device, dtype=z.dtype)[None]
    grid = torch.exp(torch.log(sig_s.clamp_min(1e-12))[:, None] * (1 - frac) + torch.log(low)[:, None] * frac)
    x = z / expand_time(s.clamp(_S_MIN, 1.0), z)
    for k in range(num_steps):
        a, b = grid[:, k], grid[:, k + 1]
        x_hat = denoiser(x * expand_time(sigma_to_time(a), x), sigma_to_time(a))
        euler = x_hat + expand_time(b / a.clamp_min(1e-12), x) * (x - x_hat)
        if solver == "heun":  # Heun on dx/dsigma = (x - x_hat) / sigma
            x_hat1 = denoiser(euler * expand_time(sigma_to_time(b), x), sigma_to_time(b))
            slope = (x - x_hat) / expand_time(a.clamp_min(1e-12), x) + (euler - x_hat1) / expand_time(b, x)
            x = x + expand_time(b - a, x) * 0.5 * slope
        else:
            x = euler
    final = sig_t < low  # t = 1 (or sigma_t below the floor): one Euler step from the floor to sigma_t
    if bool(final.any()):
        x_hat = denoiser(x[final] * expand_time(sigma_to_time(low[final]), x[final]), sigma_to_time(low[final]))
        ratio = expand_time(sig_t[final] / low[final], x[final])
        x = x.clone()
        x[final] = x_hat + ratio * (x[final] - x_hat)
    return x * expand_time(t.clamp(_S_MIN, 1.0), x)


def ramp_noise(shape: Sequence[int], generator: torch.Generator | None = None, device=None, dtype=torch.float32) -> torch.Tensor:
    """Unit-variance Gaussian noise (B, C, H, W) whose power spectrum rises like ``|k|`` up to the
    Nyquist frequency: the texture of ramp-filtered FBP CT noise (stationary approximation). A source
    for :class:`FlowMapDistillation` (``noise=lambda x, g: ramp_noise(x.shape, g)``), so that the flow
    starts from CT-like noise and ``s = 1 / (1 + sigma)`` with sigma the pixel std holds for it."""
    white = torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype)
    h, w = shape[-2:]
    k = torch.sqrt(torch.fft.fftfreq(h, device=white.device)[:, None] ** 2 + torch.fft.fftfreq(w, device=white.device)[None, :] ** 2)
    amplitude = torch.sqrt(k) * (k <= 0.5)
    amplitude = amplitude / amplitude.square().mean().sqrt()
    return torch.fft.ifft2(torch.fft.fft2(white) * amplitude.to(white.dtype)).real


class FlowMapDistillation(FlowObjective):
    """Flow-map training for denoising: regression on the diagonal, teacher-ODE distillation off it.

    Per sample: e ~ N(0, I) (or ``noise(x, generator)``, e.g. CT-textured noise, see
    :func:`ramp_noise`), ``sigma`` log-uniform in ``sigma_range``, ``s = 1 / (1 + sigma)``,
    ``z = s x + (1 - s) e``; a ``diagonal_fraction`` of the batch gets ``t = s`` and the loss
    ``||D(z, s, s) - x||^2``; the rest gets a lookahead ``k ~ U(0, 1)`` (``k = 1`` for an
    ``endpoint_fraction`` of them), ``t = s + k (1 - s)`` and the loss
    ``||D(z, s, t) - D_target||^2``, ``D_target = z + (1 - s)(X_{s,t}(z) - z) / (t - s)`` with X the
    teacher's ODE (:func:`flow_map_ode`, ``teacher_steps`` steps, no gradient).

    ``D = z + (1 - s) network(z, s, target_time=t)`` is the denoiser output, so the loss is an image-space
    error at every (s, t) (``weighting="uniform"``), or EDM's ``(sigma^2 + sd^2) / (sigma sd)^2``
    weight, which equalises noise levels (``"edm"``). Use a :class:`DenoiserFlowMap` network.

    Args:
        teacher: ``teacher(z, t) -> velocity`` (B,) times, e.g. a trained ``VelocityUNet``; ``None``:
            self-distillation from the network's own current diagonal ``u(z, t, t)`` (no gradient);
            ``"snapshot"``: a frozen copy of the network taken when the warm-up ends (its diagonal,
            trained by regression during the warm-up, is the teacher from then on).
        teacher_steps: ODE steps per target (Heun; about 2 network calls each).
        sigma_range: (min, max) noise levels of the inputs to denoise, in image units.
        diagonal_fraction: share of samples with t = s.
        endpoint_fraction: share of the off-diagonal samples with lookahead exactly 1.
        weighting: "uniform" or "edm".
        sigma_data: ``sd`` of the "edm" weighting.
        noise: ``noise(x, generator) -> e`` of x's shape; default white Gaussian.
        warmup_iterations: the first calls train the diagonal only (the self-teacher is untrained).
        diagonal_target: ``"data"`` (default): the diagonal keeps regressing on the clean image, so the
            MMSE end keeps improving over the whole run; ``"teacher"``: with a frozen or external teacher
            it distils the teacher's MMSE estimate instead (no label noise: on a Gaussian mixture the
            endpoint error halves, but the MMSE end stays at the teacher's quality).
    """

    def __init__(
        self,
        teacher: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        teacher_steps: int = 4,
        floor_ratio: float = 0.1,
        sigma_range: Sequence[float] = (0.01, 0.2),
        diagonal_fraction: float = 0.5,
        endpoint_fraction: float = 0.25,
        weighting: str = "uniform",
        sigma_data: float = 0.5,
        noise: Callable[[torch.Tensor, torch.Generator | None], torch.Tensor] | None = None,
        warmup_iterations: int = 0,
        solver: str = "heun",
        diagonal_target: str = "data",
        image_key: str = "image",
        seed: int | None = None,
    ) -> None:
        super().__init__(image_key=image_key, seed=seed)
        if len(sigma_range) != 2 or not 0 < sigma_range[0] <= sigma_range[1]:
            raise ValueError(f"sigma_range must be (min, max) with 0 < min <= max, got {tuple(sigma_range)}.")
        for name, value in (("diagonal_fraction", diagonal_fraction), ("endpoint_fraction", endpoint_fraction)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}.")
        if weighting not in _WEIGHTINGS:
            raise ValueError(f"weighting must be one of {_WEIGHTINGS}, got {weighting!r}.")
        if teacher_steps < 1:
            raise ValueError(f"teacher_steps must be >= 1, got {teacher_steps}.")
        self.teacher, self.teacher_steps, self.solver, self.floor_ratio = teacher, int(teacher_steps), solver, float(floor_ratio)
        self.sigma_range = (float(sigma_range[0]), float(sigma_range[1]))
        self.diagonal_fraction, self.endpoint_fraction = float(diagonal_fraction), float(endpoint_fraction)
        self.weighting, self.sigma_data, self.noise = weighting, float(sigma_data), noise
        self.warmup_iterations, self.calls = int(warmup_iterations), 0
        if diagonal_target not in ("data", "teacher"):
            raise ValueError(f"diagonal_target must be 'data' or 'teacher', got {diagonal_target!r}.")
        self.diagonal_target = diagonal_target
        if isinstance(teacher, str) and teacher != "snapshot":
            raise ValueError(f"teacher must be a callable, None or 'snapshot', got {teacher!r}.")
        self._snapshot: nn.Module | None = None

    def sample_times(self, batch_size: int, device, dtype, generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(s, t), each (B,): s from log-uniform sigma, t = s on the diagonal share, else s + k (1 - s)."""
        lo, hi = (math.log(v) for v in self.sigma_range)
        u = torch.rand(4, batch_size, device=device, dtype=dtype, generator=generator)
        diagonal = (u[3] < self.diagonal_fraction) | (self.calls < self.warmup_iterations)
        # the diagonal is also the self-teacher, whose ODE runs down to floor_ratio * sigma: train it there too
        lo_diag = lo + math.log(self.floor_ratio) if self.teacher is None or self.teacher == "snapshot" else lo
        log_sigma = torch.where(diagonal, lo_diag + (hi - lo_diag) * u[0], lo + (hi - lo) * u[0])
        s = sigma_to_time(torch.exp(log_sigma))
        k = torch.where(u[2] < self.endpoint_fraction, torch.ones_like(u[1]), u[1])
        return s, torch.where(diagonal, s, s + k * (1.0 - s))

    def _teacher_denoiser(self, network) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        if self.teacher == "snapshot":
            if self._snapshot is None:  # the end of the warm-up: freeze the diagonal trained so far
                self._snapshot = copy.deepcopy(network).eval().requires_grad_(False)
                pending = getattr(self, "_pending_snapshot", None)
                if pending is not None:  # resumed training: the teacher it had
                    self._snapshot.load_state_dict(pending)
                    self._pending_snapshot = None
            frozen = self._snapshot
            return lambda z, t: z + expand_time(1.0 - t, z) * frozen(z, t, target_time=t)
        if self.teacher is None:
            return lambda z, t: z + expand_time(1.0 - t, z) * network(z, t, target_time=t)
        return lambda z, t: z + expand_time(1.0 - t, z) * self.teacher(z, t)

    def loss(self, network, batch, generator=None) -> torch.Tensor:
        x = self.unpack(batch)[self.image_key]
        gen = self._resolve_generator(generator, x.device)
        e = self.noise(x, gen) if self.noise is not None else torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=gen)
        s, t = self.sample_times(x.shape[0], x.device, x.dtype, gen)
        self.calls += 1
        ss = expand_time(s, x)
        z = ss * x + (1.0 - ss) * e
        target = x.clone()
        off = t > s
        distil_diagonal = self.diagonal_target == "teacher" and self.teacher is not None and self.calls > self.warmup_iterations
        if off.any() or distil_diagonal:
            was_training = network.training
            with torch.no_grad():
                network.eval()
                teacher = self._teacher_denoiser(network)
                if distil_diagonal and (~off).any():  # the teacher's MMSE estimate: no label noise
                    target[~off] = teacher(z[~off], s[~off])
                if off.any():
                    end = flow_map_ode(teacher, z[off], s[off], t[off], self.teacher_steps, self.solver, self.floor_ratio)
                    zo, so = z[off], expand_time(s[off], z[off])
                    target[off] = zo + (1.0 - so) * (end - zo) / expand_time(t[off] - s[off], zo)
                network.train(was_training)
        d = z + (1.0 - ss) * network(z, s, target_time=t)
        err = (d.float() - target.float()).square().flatten(1).mean(1)
        if self.weighting == "edm":
            sigma = time_to_sigma(s).float()
            err = err * (sigma.square() + self.sigma_data**2) / (sigma * self.sigma_data).square()
        return err.mean()

    def state_dict(self):
        state = {"calls": self.calls}
        if self._snapshot is not None:
            state["snapshot"] = self._snapshot.state_dict()
        return state

    def load_state_dict(self, state_dict) -> None:
        """Restores the call count; the frozen snapshot teacher is rebuilt from ``snapshot`` on the next loss call."""
        self.calls = int(state_dict.get("calls", 0))
        self._pending_snapshot = state_dict.get("snapshot")
