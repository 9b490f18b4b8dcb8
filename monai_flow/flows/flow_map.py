"""Flow maps (MeanFlow-style): one network for any jump of the generation flow.

Time: t in [0, 1], t = 0 noise e, t = 1 data x, z_t = t x + (1 - t) e (conditional velocity
v = x - e). The flow-map network ``u(z, s, t)`` is the average velocity from s to t, so
``X_{s,t}(z) = z + (t - s) u(z, s, t)`` and ``u(z, t, t) = v(z, t)``. Moving the start along
the flow gives the MeanFlow identity ``u(z_s, s, t) = v(z_s, s) + (t - s) d/ds u(z_s, s, t)``
with ``d/ds = d_s + v . grad_z``.

Network convention: ``network(z, s, target_time=t)`` with s, t float tensors (B,)
(:class:`monai_flow.networks.VelocityUNet` with ``flow_map=True``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from .base import FlowObjective
from .paths import expand_time
from .time import TimeSampler, get_time_sampler

__all__ = ["FlowMap", "meanflow_target"]


def meanflow_target(
    u_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    z: torch.Tensor,
    s: torch.Tensor,
    t: torch.Tensor,
    v: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(u(z, s, t), v + (t - s) d/ds u)`` using one forward-mode ``torch.func.jvp``.

    The tangents are (v, 1, 0) on (z, s, t): the derivative of u along the flow, holding t.
    For the exact flow map and the exact marginal velocity v the two outputs are equal.
    """
    # forward-mode AD has no rule for the fused (flash / memory-efficient) attention kernels: use the math one
    with sdpa_kernel([SDPBackend.MATH]):
        u, du_ds = torch.func.jvp(u_fn, (z, s, t), (v, torch.ones_like(s), torch.zeros_like(t)))
    return u, v + expand_time(t - s, z) * du_ds


class FlowMap(FlowObjective):
    """MeanFlow objective for a flow-map network ``u(z, s, t)``.

    At our CPU budget (a few hundred iterations) this objective does not train an image flow map that
    denoises (issue 14); :class:`~monai_flow.flows.flow_map_distillation.FlowMapDistillation` with a
    :class:`~monai_flow.flows.flow_map_distillation.DenoiserFlowMap` network does (see docs/restoration.md).

    For each sample: e ~ N(0, I), x = ``batch[image_key]``, two times from ``time_sampling``
    ordered s <= t; on a ``diagonal_fraction`` of the batch s = t (plain flow matching,
    target v = x - e); on the rest the target is the stop-gradient MeanFlow identity
    ``v + (t - s) d/ds u`` (:func:`meanflow_target`). Loss: MSE of u(z_s, s, t) to the target.

    Args:
        diagonal_fraction: share of samples with s = t, in [0, 1].
        time_sampling: "uniform", "logit_normal" or a :class:`TimeSampler` for both times.
        time_loc, time_scale: logit-normal parameters.
    """

    def __init__(
        self,
        diagonal_fraction: float = 0.75,
        time_sampling: str | TimeSampler = "uniform",
        time_loc: float = 0.0,
        time_scale: float = 1.0,
        image_key: str = "image",
        seed: int | None = None,
    ) -> None:
        super().__init__(image_key=image_key, seed=seed)
        if not 0.0 <= diagonal_fraction <= 1.0:
            raise ValueError(f"diagonal_fraction must be in [0, 1], got {diagonal_fraction}.")
        self.diagonal_fraction = float(diagonal_fraction)
        self.time_sampler = get_time_sampler(time_sampling, time_loc, time_scale)

    def sample_times(self, batch_size: int, device, dtype, generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(s, t), each (B,), with s <= t and s == t on about ``diagonal_fraction`` of the samples."""
        a = self.time_sampler(batch_size, device=device, dtype=dtype, generator=generator)
        b = self.time_sampler(batch_size, device=device, dtype=dtype, generator=generator)
        s, t = torch.minimum(a, b), torch.maximum(a, b)
        diagonal = torch.rand(batch_size, device=device, generator=generator) < self.diagonal_fraction
        return torch.where(diagonal, t, s), t

    def loss(self, network, batch, generator=None) -> torch.Tensor:
        x = self.unpack(batch)[self.image_key]
        gen = self._resolve_generator(generator, x.device)
        e = torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=gen)
        s, t = self.sample_times(x.shape[0], x.device, x.dtype, gen)
        z = expand_time(s, x) * x + (1.0 - expand_time(s, x)) * e
        v = x - e

        def u_fn(z_, s_, t_):
            return network(z_, s_, target_time=t_)

        off = s < t
        u = u_fn(z, s, t)
        target = v.clone()
        if off.any():
            with torch.no_grad():  # stop-gradient target; forward-mode AD still runs
                _, identity = meanflow_target(u_fn, z[off], s[off], t[off], v[off])
            target[off] = identity
        return F.mse_loss(u.float(), target.float())
