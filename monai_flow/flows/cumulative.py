"""IR-Flow: paired restoration with a cumulative velocity field and multi-step consistency.

Time: t in [0, 1], t = 0 the degraded image y, t = 1 the clean image x, on the straight path
x_t = (1 - t) y + t x. Three targets share one network ``N(x_t, t)`` and one update rule:

- ``"cvf"`` (IR-Flow): N predicts the remaining displacement d = x - x_t = (1 - t)(x - y);
  a step from t to t' is ``x_t' = x_t + (t' - t) / (1 - t) * N(x_t, t)``.
- ``"rectified"``: N predicts the constant velocity x - y; ``x_t' = x_t + (t' - t) N``.
- ``"direct"``: regression baseline, trained at t = 0 only: ``x = y + N(y, 0)`` in one step
  (the ``"cvf"`` update from t = 0 to 1).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from .base import FlowObjective, degradation_kwargs
from .paths import expand_time

__all__ = ["CumulativeVelocityFlow", "restoration_step", "RESTORATION_TARGETS"]

RESTORATION_TARGETS = ("cvf", "rectified", "direct")
_MCT_GRAD = ("last", "full", "none")
_LOSS_NORMALIZATIONS = ("none", "pair")


def restoration_step(
    x: torch.Tensor, output: torch.Tensor, t0: torch.Tensor | float, t1: torch.Tensor | float, target: str = "cvf"
) -> torch.Tensor:
    """Euler update of the restoration flow from ``t0`` to ``t1`` given the network ``output`` at (x, t0).

    ``t0``, ``t1``: scalars, 0-d or (B,) tensors with t0 < 1.
    """
    h = expand_time(torch.as_tensor(t1) - torch.as_tensor(t0), x)
    if target == "rectified":
        return x + h * output
    return x + h / (1.0 - expand_time(t0, x)) * output  # cvf and direct


class CumulativeVelocityFlow(FlowObjective):
    """IR-Flow objective on (degraded, clean) pairs, with multi-step consistency (MCT).

    Pairs: ``batch[degraded_key]`` when present, else ``degradation(x, level, generator=...)`` of
    the clean ``batch[image_key]`` with one level per example drawn uniformly from
    ``level_range`` ("multilevel flows"), e.g. ``CTDegradation`` with dt levels
    (dose ``e^{-2 dt}``) or ``MRDegradation``.

    Loss: ``MSE(N(x_t, t), target) + mct_weight * MSE(x_hat_K, x)`` where x_hat_K is a K-step
    Euler rollout from y (K drawn uniformly from ``mct_steps`` per batch) with gradients through
    the last step (``mct_grad="last"``), all steps (``"full"``) or none (``"none"``: the
    published code's detached rollout, which leaves the gradient unchanged; for ablations).

    How it is trained (the method is unchanged; issue 14's measurements on ``ct_restore``):

    - ``output_scale``: the network's raw output is multiplied by it before use, here and in
      :class:`~monai_flow.inferers.RestorationInferer` (give both the same value), so the network
      predicts the displacement in units of ``output_scale``. Restoration displacements are noise
      (10 - 30 HU = 0.01 - 0.03 in HU / 1000 units): at scale 1 a network initialised for O(1)
      outputs and an optimiser stepping by ~1e-3 have to resolve values of that size, and learn
      them slowly. Set it to about the noise std of the inputs in network units.
    - ``loss_normalization="pair"``: each sample's two terms are divided by the mean square of its
      own displacement ``x - y`` (no gradient), so that every degradation level weighs the same;
      with ``"none"`` the lowest doses (largest displacements) dominate the loss.

    Args:
        degradation: ``op(x, level, generator=None)`` or None (pairs must be in the batch).
        level_range: (min, max) degradation level per example.
        target: "cvf", "rectified" or "direct" (see module docstring).
        mct_weight: weight of the consistency loss (0 disables it; ignored for "direct").
        mct_steps: (K_min, K_max) rollout lengths.
        mct_grad: "last", "full" or "none".
        image_key, degraded_key: batch keys of the clean and degraded images.
        degradation_keys: operator argument -> batch key of per-sample values passed to the
            degradation (see :func:`~monai_flow.flows.base.degradation_kwargs`).
        output_scale: multiplies the network's output (see above); > 0.
        loss_normalization: ``"none"`` or ``"pair"`` (see above).
    """

    def __init__(
        self,
        degradation: Callable[..., torch.Tensor] | None = None,
        level_range: Sequence[float] = (0.2, 1.0),
        target: str = "cvf",
        mct_weight: float = 0.3,
        mct_steps: Sequence[int] = (2, 10),
        mct_grad: str = "last",
        image_key: str = "image",
        degraded_key: str = "degraded",
        seed: int | None = None,
        degradation_keys: Mapping[str, str] | None = None,
        output_scale: float = 1.0,
        loss_normalization: str = "none",
    ) -> None:
        super().__init__(image_key=image_key, seed=seed)
        self.degradation_keys = dict(degradation_keys or {})
        if target not in RESTORATION_TARGETS:
            raise ValueError(f"target must be one of {RESTORATION_TARGETS}, got {target!r}.")
        if mct_grad not in _MCT_GRAD:
            raise ValueError(f"mct_grad must be one of {_MCT_GRAD}, got {mct_grad!r}.")
        if mct_weight < 0:
            raise ValueError(f"mct_weight must be >= 0, got {mct_weight}.")
        if len(mct_steps) != 2 or not 1 <= mct_steps[0] <= mct_steps[1]:
            raise ValueError(f"mct_steps must be (K_min, K_max) with 1 <= K_min <= K_max, got {tuple(mct_steps)}.")
        if len(level_range) != 2 or level_range[0] > level_range[1]:
            raise ValueError(f"level_range must be (min, max) with min <= max, got {tuple(level_range)}.")
        if degradation is not None and not callable(degradation):
            raise ValueError(f"degradation must be callable op(x, level, generator=None), got {type(degradation).__name__}.")
        self.degradation, self.level_range = degradation, (float(level_range[0]), float(level_range[1]))
        self.target, self.mct_weight, self.mct_steps, self.mct_grad = target, float(mct_weight), tuple(mct_steps), mct_grad
        self.degraded_key = degraded_key
        if not output_scale > 0:
            raise ValueError(f"output_scale must be > 0, got {output_scale}.")
        if loss_normalization not in _LOSS_NORMALIZATIONS:
            raise ValueError(f"loss_normalization must be one of {_LOSS_NORMALIZATIONS}, got {loss_normalization!r}.")
        self.output_scale, self.loss_normalization = float(output_scale), loss_normalization

    def pair(self, batch: Mapping[str, Any], generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(degraded y, clean x), each (B, C, *spatial)."""
        x = batch[self.image_key]
        if self.degraded_key in batch:
            y = batch[self.degraded_key]
        elif self.degradation is None:
            raise ValueError(f"batch has no '{self.degraded_key}' and no degradation was given to make it.")
        else:
            lo, hi = self.level_range
            level = lo + (hi - lo) * torch.rand(x.shape[0], device=x.device, dtype=x.dtype, generator=generator)
            with torch.no_grad():
                y = self.degradation(x, level, generator=generator, **degradation_kwargs(batch, self.degradation_keys, x))
        if y.shape != x.shape:
            raise ValueError(f"degraded and clean images must have the same shape, got {tuple(y.shape)} and {tuple(x.shape)}.")
        return y, x

    def rollout(self, network: torch.nn.Module, y: torch.Tensor, num_steps: int) -> torch.Tensor:
        """``num_steps`` uniform Euler steps from y at t = 0 to t = 1, gradients per ``mct_grad``."""
        x = y
        grid = torch.linspace(0.0, 1.0, num_steps + 1, device=y.device, dtype=y.dtype)
        for k in range(num_steps):
            tracked = self.mct_grad == "full" or (self.mct_grad == "last" and k == num_steps - 1)
            with torch.set_grad_enabled(tracked and torch.is_grad_enabled()):
                t = grid[k].expand(y.shape[0])
                x = restoration_step(x, self.output_scale * network(x, t), grid[k], grid[k + 1], self.target)
        return x

    def loss(self, network, batch, generator=None) -> torch.Tensor:
        data = self.unpack(batch)
        gen = self._resolve_generator(generator, data[self.image_key].device)
        y, x = self.pair(data, gen)
        if self.target == "direct":
            t = torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
        else:
            t = torch.rand(x.shape[0], device=x.device, dtype=x.dtype, generator=gen)
        tt = expand_time(t, x)
        x_t = (1.0 - tt) * y + tt * x
        goal = x - y if self.target == "rectified" else x - x_t
        output = network(x_t, t)
        if output.shape != x.shape:
            raise ValueError(f"network output must have the image shape {tuple(x.shape)}, got {tuple(output.shape)}.")
        if self.loss_normalization == "pair":
            weight = 1.0 / (x - y).detach().float().square().flatten(1).mean(1).clamp_min(1e-12)
        else:
            weight = torch.ones(x.shape[0], device=x.device)

        def mse(a, b):  # per-sample mean square, weighted, averaged over the batch
            return ((a.float() - b.float()).square().flatten(1).mean(1) * weight).mean()

        loss = mse(self.output_scale * output, goal)
        if self.mct_weight > 0 and self.target != "direct":
            k_min, k_max = self.mct_steps
            k = int(torch.randint(k_min, k_max + 1, (1,), generator=gen, device=gen.device if gen is not None else "cpu"))
            loss = loss + self.mct_weight * mse(self.rollout(network, y, k), x)
        return loss
