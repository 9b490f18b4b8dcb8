"""RelativeFlow: learning a denoising flow from noisy references only (CoT relative flow)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F

from .base import FlowObjective, degradation_kwargs
from .curriculum import DtCurriculum
from .paths import expand_time

__all__ = ["QUALITY_TIMES", "RelativeFlow", "relative_velocity_target", "relative_euler_step"]

QUALITY_TIMES = ("calibrated", "paper")


def relative_velocity_target(x: torch.Tensor, y: torch.Tensor, dt: torch.Tensor | float) -> torch.Tensor:
    """Simulation-based velocity u = (x - y) / (e^dt - 1) from a degraded y = D_dt(x) back to x.

    x, y: (B, C, *spatial); dt: (B,) or scalar, > 0. Quality time tau: y sits at tau - dt, x at tau.
    """
    return (x - y) / torch.expm1(expand_time(dt, x))


def relative_euler_step(y: torch.Tensor, velocity: torch.Tensor, dt: torch.Tensor | float) -> torch.Tensor:
    """Euler denoising update y + (e^dt - 1) * velocity, moving quality time tau to tau + dt."""
    return y + torch.expm1(expand_time(dt, y)) * velocity


class RelativeFlow(FlowObjective):
    """RelativeFlow training objective. Time: quality time tau >= 0, larger is cleaner.

    For a noisy reference x = ``batch[image_key]`` (B, C, *spatial): a step dt ~ U[dt_min, dt_max]
    per sample from ``curriculum``; y = degradation(x, dt / 2) (``quality_time="calibrated"``) or
    degradation(x, dt) (``"paper"``), with the operator's CoT scaling (noise std times e^{dt/2},
    resp. e^{dt}); u = (x - y) / (e^dt - 1); loss = mean((network(y, dt) - u)^2). The network sees
    only y and dt (B,). Inference: x <- x + (e^dt - 1) network(x, dt).

    Why dt / 2 (docs/flows.md, "Calibrated quality time"): the L2-optimal network is
    ``(E[x | y] - y) / (e^dt - 1)``, so an Euler step of size dt returns the posterior mean of the
    reference, E[x | y], not a sample at the reference's level. Where the noise is removable, E[x | y]
    keeps the fraction ``s_ref^2 / s_y^2`` of y's noise. Trained on y degraded by dt / 2 (noise
    variance ``s_ref^2 e^dt``), one step therefore divides the noise std by e^dt, at any input level:
    the step moves quality time by exactly dt, as the inferer and ``dt_schedule="auto"`` assume.
    The paper's correspondence (degrade by dt) divides it by e^{2dt}: twice the intended step.

    Args:
        degradation: callable ``op(x, dt, generator=None) -> y`` on batched tensors, dt (B,),
            e.g. ``monai_flow.transforms.CTDegradation`` / ``MRDegradation``.
        curriculum: the dt range schedule; default ``DtCurriculum()`` ([0.2, 0.2] widening by 0.9).
            Advance it per epoch with ``monai_flow.engines.CurriculumHandler``.
        image_key: batch key of the noisy reference.
        seed: optional seed making the loss deterministic.
        reference_std_key: optional batch key holding each reference's noise std (B,) in image
            units, passed to the degradation as ``reference_std=`` (``MRDegradation`` accepts it).
            Use it when training crops may lack the background a per-crop noise estimate needs
            (3D MR patches): estimate the noise on the whole volume before cropping.
            Shorthand for ``degradation_keys={"reference_std": key}``.
        degradation_keys: operator argument -> batch key of per-sample values (B,) passed to the
            degradation, e.g. ``{"i0": "photons"}``: each CT reference's photon count, known
            from its exposure, instead of a noise estimate (see :func:`degradation_kwargs`).
        quality_time: ``"calibrated"`` (default: a step of dt removes noise by e^dt) or ``"paper"``
            (the RelativeFlow paper's degradation by dt; its steps remove about twice as much).
    """

    def __init__(
        self,
        degradation: Callable[..., torch.Tensor],
        curriculum: DtCurriculum | None = None,
        image_key: str = "image",
        seed: int | None = None,
        reference_std_key: str | None = None,
        degradation_keys: Mapping[str, str] | None = None,
        quality_time: str = "calibrated",
    ) -> None:
        super().__init__(image_key=image_key, seed=seed)
        if quality_time not in QUALITY_TIMES:
            raise ValueError(f"quality_time must be one of {QUALITY_TIMES}, got {quality_time!r}.")
        self.quality_time = quality_time
        self.reference_std_key = reference_std_key
        self.degradation_keys = dict(degradation_keys or {})
        if reference_std_key is not None:
            self.degradation_keys["reference_std"] = reference_std_key
        if not callable(degradation):
            raise ValueError(
                f"degradation must be callable op(x, dt, generator=None), got {type(degradation).__name__}."
            )
        self.degradation = degradation
        self.curriculum = DtCurriculum() if curriculum is None else curriculum

    def sample_dt(self, batch_size: int, device=None, dtype=torch.float32, generator=None) -> torch.Tensor:
        """Per-sample step sizes (B,) from the curriculum's current range."""
        return self.curriculum.sample(batch_size, device=device, dtype=dtype, generator=generator)

    def degradation_level(self, dt: torch.Tensor) -> torch.Tensor:
        """The operator level that trains a step of quality time ``dt``: dt / 2 (calibrated) or dt (paper)."""
        return dt / 2 if self.quality_time == "calibrated" else dt

    def training_pair(
        self, x: torch.Tensor, dt: torch.Tensor, generator: torch.Generator | None = None, **degradation_kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(y, u)``: the network input y (x degraded for a step of ``dt``) and the velocity target u."""
        with torch.no_grad():
            y = self.degradation(x, self.degradation_level(dt), generator=generator, **degradation_kwargs)
        if y.shape != x.shape:
            raise ValueError(f"degradation must keep the image shape {tuple(x.shape)}, got {tuple(y.shape)}.")
        return y, relative_velocity_target(x, y, dt)

    def loss(
        self,
        network: torch.nn.Module,
        batch: Mapping[str, Any] | torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Simulation-based velocity MSE of ``network(y, dt)`` against (x - y) / (e^dt - 1)."""
        data = self.unpack(batch)
        x = data[self.image_key]
        gen = self._resolve_generator(generator, x.device)
        dt = self.sample_dt(x.shape[0], device=x.device, dtype=x.dtype, generator=gen)
        y, u = self.training_pair(x, dt, gen, **degradation_kwargs(data, self.degradation_keys, x))
        v = network(y, dt)
        if v.shape != u.shape:
            raise ValueError(f"network output must have the image shape {tuple(u.shape)}, got {tuple(v.shape)}.")
        return F.mse_loss(v.float(), u.float())

    def state_dict(self) -> dict[str, Any]:
        return {"curriculum": self.curriculum.state_dict()}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        if "curriculum" not in state_dict:
            raise ValueError(f"state_dict must have key 'curriculum', got keys {sorted(state_dict)}.")
        self.curriculum.load_state_dict(state_dict["curriculum"])
