"""Flow-map denoiser: one network, a lookahead knob between the MMSE and the perceptual end."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from monai.inferers import Inferer
from monai.utils import convert_to_dst_type

from monai_flow.flows.paths import expand_time
from monai_flow.inferers.base import make_noise, plain

__all__ = ["FlowMapDenoiser"]


class FlowMapDenoiser(Inferer):
    """Denoise ``y = x + sigma n`` with a flow-map network ``u(z, s, target_time=t)``.

    Time: t = 0 noise, t = 1 data, z_t = t x + (1 - t) n. A noisy image sits at flow time
    ``s = 1 / (1 + sigma)`` after scaling, ``z = s y``; the output is
    ``D_{s,t}(z) = z + (1 - s) u(z, s, t)`` with ``t = s + lookahead (1 - s)``:
    ``lookahead=0`` gives the MMSE estimate E[x | y] (least distortion), ``lookahead=1`` the ODE
    endpoint X_{s,1}(z) (a sample-like, perceptual estimate), values between trace the
    distortion-perception trade-off. ``sigma`` is in the units of the training data.

    Args:
        lookahead: in [0, 1].
        sigma: noise std (float, or given per call); ``None`` requires ``noise_estimator``.
        noise_estimator: ``Callable[[Tensor (B, C, *spatial)], Tensor (B,)]`` used when no sigma.
    """

    def __init__(
        self,
        lookahead: float = 0.0,
        sigma: float | None = None,
        noise_estimator: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        if not 0.0 <= lookahead <= 1.0:
            raise ValueError(f"lookahead must be in [0, 1], got {lookahead}.")
        if sigma is not None and not sigma >= 0:
            raise ValueError(f"sigma must be >= 0, got {sigma}.")
        self.lookahead, self.sigma, self.noise_estimator = float(lookahead), sigma, noise_estimator

    def _sigma(self, y: torch.Tensor, sigma) -> torch.Tensor:
        sigma = self.sigma if sigma is None else sigma
        if sigma is None:
            if self.noise_estimator is None:
                raise ValueError("FlowMapDenoiser needs sigma (constructor or call) or a noise_estimator.")
            sigma = self.noise_estimator(y)
        sigma = torch.as_tensor(sigma, dtype=y.dtype, device=y.device).reshape(-1)
        if (sigma < 0).any():
            raise ValueError(f"sigma must be >= 0, got {sigma.tolist()}.")
        return sigma.expand(y.shape[0]) if sigma.numel() == 1 else sigma

    def __call__(self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], sigma=None, lookahead: float | None = None):  # type: ignore[override]
        """Args: inputs (B, C, *spatial) noisy images; sigma float or (B,); lookahead overrides."""
        y = plain(inputs)
        k = self.lookahead if lookahead is None else float(lookahead)
        s = 1.0 / (1.0 + self._sigma(y, sigma))
        t = s + k * (1.0 - s)
        z = expand_time(s, y) * y
        out = z + expand_time(1.0 - s, y) * network(z, s, target_time=t)
        return convert_to_dst_type(out, inputs, device=out.device)[0]

    @staticmethod
    def generate(
        network: Callable[..., torch.Tensor],
        shape: Sequence[int],
        num_steps: int = 1,
        seed: int | None = None,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """One- or few-step generation from noise: jumps X_{t_k, t_k+1} on a uniform grid from 0 to 1."""
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}.")
        z = make_noise(shape, seed=seed, device=device)
        grid = torch.linspace(0.0, 1.0, num_steps + 1, device=z.device, dtype=z.dtype)
        for a, b in zip(grid[:-1], grid[1:]):
            s, t = a.expand(z.shape[0]), b.expand(z.shape[0])
            z = z + (b - a) * network(z, s, target_time=t)
        return z
