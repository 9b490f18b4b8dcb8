"""MOTFM: conditional optimal-transport flow matching with class / mask conditioning."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from monai_flow.checkpoints import unwrap_network

from .base import FlowObjective
from .coupling import ot_permutation
from .paths import CondOTProbPath
from .time import TimeSampler, get_time_sampler

__all__ = ["ConditionalFlowMatching"]


class ConditionalFlowMatching(FlowObjective):
    """Conditional flow matching on the OT path (MOTFM). Time: t in [0, 1], t = 0 noise, t = 1 data.

    x0 ~ N(0, I), x1 = ``batch[image_key]`` (B, C, *spatial), t ~ ``time_sampling``,
    x_t = (1 - (1 - sigma_min) t) x0 + t x1, u = x1 - (1 - sigma_min) x0,
    loss = mean((v(x_t, t, class_labels, mask, condition) - u)^2).

    Batch keys: ``image_key`` (required), ``label_key`` (class labels, (B,) or (B, 1) integers),
    ``mask_key`` (mask conditioning, (B, M, *spatial)), ``condition_key`` (any extra conditioning
    passed through as ``condition=``, never dropped). Missing keys mean "no such conditioning";
    only the conditioning present in the batch is passed to the network.

    Classifier-free guidance: with probability ``p_uncond`` a sample's class label and mask are
    both dropped to null: the label becomes the null class index (``null_class``, else the
    network's ``null_class`` attribute) and the mask becomes zeros, which is how
    ``class_labels=None`` / ``mask=None`` are represented inside the network.

    Args:
        sigma_min: path width at t = 1, in [0, 1).
        time_sampling: ``"uniform"``, ``"logit_normal"`` or a :class:`TimeSampler`.
        time_loc, time_scale: logit-normal location and scale (median time sigmoid(time_loc)).
        p_uncond: per-sample probability of dropping the conditioning, in [0, 1].
        null_class: label index meaning "no class"; ``None`` reads ``network.null_class``.
        ot_coupling: pair noise and images by exact minibatch OT (within each class if labels exist).
        image_key, label_key, mask_key, condition_key: batch keys.
        seed: optional seed making the loss deterministic.
    """

    def __init__(
        self,
        sigma_min: float = 0.0,
        time_sampling: str | TimeSampler = "uniform",
        time_loc: float = 0.0,
        time_scale: float = 1.0,
        p_uncond: float = 0.0,
        null_class: int | None = None,
        ot_coupling: bool = False,
        image_key: str = "image",
        label_key: str = "label",
        mask_key: str = "mask",
        condition_key: str = "condition",
        seed: int | None = None,
    ) -> None:
        super().__init__(image_key=image_key, seed=seed)
        if not 0.0 <= p_uncond <= 1.0:
            raise ValueError(f"p_uncond must be in [0, 1], got {p_uncond}.")
        self.path = CondOTProbPath(sigma_min)
        self.time_sampler = get_time_sampler(time_sampling, time_loc, time_scale)
        self.p_uncond = float(p_uncond)
        self.null_class = null_class
        self.ot_coupling = bool(ot_coupling)
        self.label_key, self.mask_key, self.condition_key = label_key, mask_key, condition_key

    @property
    def sigma_min(self) -> float:
        return self.path.sigma_min

    def sample_time(self, batch_size: int, device=None, dtype=torch.float32, generator=None) -> torch.Tensor:
        """Per-sample times (B,) in [0, 1]."""
        return self.time_sampler(batch_size, device=device, dtype=dtype, generator=generator)

    def sample_path(self, x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x_t, u_t)`` on the conditional OT path; x0, x1 (B, C, *spatial), t (B,)."""
        return self.path.sample(x0, x1, t)

    def couple(self, x0: torch.Tensor, x1: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Reorder noise ``x0`` to its exact OT pairing with ``x1`` (within each label group)."""
        return x0[ot_permutation(x0, x1, groups=labels)]

    def resolve_null_class(self, network: torch.nn.Module | None) -> int:
        """The null label index: ``null_class`` if set, else ``network.null_class``."""
        null = self.null_class if self.null_class is not None else getattr(unwrap_network(network), "null_class", None)
        if null is None:
            raise ValueError(
                "p_uncond > 0 with class labels needs a null class index: set null_class or use a network "
                "with a `null_class` attribute, got neither."
            )
        return int(null)

    def drop_conditions(
        self,
        labels: torch.Tensor | None,
        mask: torch.Tensor | None,
        null_class: int | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor]:
        """Drop labels and masks to null with probability ``p_uncond`` per sample.

        Returns ``(labels, mask, dropped)`` with ``dropped`` a boolean (B,) tensor.
        """
        ref = labels if labels is not None else mask
        if ref is None:
            raise ValueError("drop_conditions needs labels or mask, got neither.")
        b = ref.shape[0]
        dropped = torch.rand(b, device=ref.device, generator=generator) < self.p_uncond
        if labels is not None:
            if null_class is None:
                raise ValueError("drop_conditions with labels needs null_class, got None.")
            labels = torch.where(dropped, torch.full_like(labels, null_class), labels)
        if mask is not None:
            keep = (~dropped).to(mask.dtype).reshape(-1, *([1] * (mask.ndim - 1)))
            mask = mask * keep
        return labels, mask, dropped

    def _labels(self, batch: dict[str, Any], batch_size: int, device: torch.device) -> torch.Tensor | None:
        labels = batch.get(self.label_key)
        if labels is None:
            return None
        labels = torch.as_tensor(labels, device=device)
        if labels.numel() != batch_size or labels.is_floating_point() and not torch.all(labels == labels.round()):
            raise ValueError(
                f"batch['{self.label_key}'] must hold {batch_size} integer class labels, "
                f"got shape {tuple(labels.shape)}."
            )
        return labels.reshape(batch_size).long()

    def loss(
        self,
        network: torch.nn.Module,
        batch: Mapping[str, Any] | torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Flow-matching MSE of ``network`` on ``batch`` (see class docstring for keys)."""
        batch = self.unpack(batch)
        x1 = batch[self.image_key]
        b, device = x1.shape[0], x1.device
        gen = self._resolve_generator(generator, device)
        labels = self._labels(batch, b, device)
        mask = batch.get(self.mask_key)
        condition = batch.get(self.condition_key)

        x0 = torch.randn(x1.shape, device=device, dtype=x1.dtype, generator=gen)
        if self.ot_coupling:
            x0 = self.couple(x0, x1, labels)
        t = self.sample_time(b, device=device, dtype=x1.dtype, generator=gen)
        x_t, u_t = self.sample_path(x0, x1, t)

        if self.p_uncond > 0 and (labels is not None or mask is not None):
            null = self.resolve_null_class(network) if labels is not None else None
            labels, mask, _ = self.drop_conditions(labels, mask, null, generator=gen)

        kwargs = {"class_labels": labels, "mask": mask, "condition": condition}
        v = network(x_t, t, **{k: val for k, val in kwargs.items() if val is not None})
        if v.shape != u_t.shape:
            raise ValueError(f"network output must have the image shape {tuple(u_t.shape)}, got {tuple(v.shape)}.")
        return F.mse_loss(v.float(), u_t.float())
