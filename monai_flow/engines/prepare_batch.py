"""Batch preparation for flow trainers: keep the whole dictionary, move tensors to the device."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from monai.data import MetaTensor
from monai.engines.utils import PrepareBatch
from monai.utils import CommonKeys

from monai_flow.flows.base import degradation_kwargs

__all__ = ["PrepareDegradedBatch", "PrepareFlowBatch", "PrepareGenerationBatch"]


class PrepareFlowBatch(PrepareBatch):
    """Return the batch as a dict with every tensor moved to ``device`` (other values kept).

    Flow objectives draw their own inputs and targets, so they need the whole batch (``image``,
    ``label``, ``mask``, ...) rather than the ``(inputs, targets)`` pair of ``default_prepare_batch``.
    A bare tensor becomes ``{image_key: tensor}``.

    Args:
        keys: keys to keep; ``None`` keeps all.
        image_key: key for a bare-tensor batch.
    """

    def __init__(self, keys: Sequence[str] | None = None, image_key: str = CommonKeys.IMAGE) -> None:
        self.keys = None if keys is None else tuple(keys)
        self.image_key = image_key

    def __call__(
        self,
        batchdata: Mapping[str, Any] | torch.Tensor,
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> dict[str, Any]:
        if isinstance(batchdata, torch.Tensor):
            batchdata = {self.image_key: batchdata}
        if not isinstance(batchdata, Mapping):
            raise ValueError(f"batchdata must be a dict or a tensor, got {type(batchdata).__name__}.")
        if self.keys is not None:
            missing = [k for k in self.keys if k not in batchdata]
            if missing:
                raise ValueError(f"batchdata is missing keys {missing}, got keys {sorted(map(str, batchdata))}.")
        keys = self.keys if self.keys is not None else tuple(batchdata)
        return {
            k: batchdata[k].to(device=device, non_blocking=non_blocking, **kwargs)
            if isinstance(batchdata[k], torch.Tensor)
            else batchdata[k]
            for k in keys
        }


class PrepareDegradedBatch(PrepareBatch):
    """``(degradation(x, level), x)`` pairs for validating a denoiser with a ``SupervisedEvaluator``.

    ``x = batch[image_key]`` is a reference (possibly itself noisy, as in RelativeFlow training:
    the score then measures how well one further degradation is undone, without clean targets).
    Attached to the evaluator (``prepare_batch.attach(evaluator)``), the noise generator is
    reseeded at every run, so every validation sees the same noise and scores are comparable.

    Args:
        degradation: ``op(x, level, generator=None, **kwargs)``.
        level: degradation level (e.g. dt) applied to every sample.
        degradation_keys: operator argument -> batch key of per-sample values passed to the degradation
            (e.g. ``{"spacing": "spacing"}``, see :func:`~monai_flow.flows.base.degradation_kwargs`).
        image_key: batch key of the reference.
        seed: seed of the degradation noise.
    """

    def __init__(self, degradation, level: float, image_key: str = CommonKeys.IMAGE, seed: int = 0,
                 degradation_keys: Mapping[str, str] | None = None) -> None:
        if not callable(degradation):
            raise ValueError(f"degradation must be callable op(x, level, generator=None), got {type(degradation).__name__}.")
        self.degradation, self.level, self.image_key, self.seed = degradation, float(level), image_key, int(seed)
        self.degradation_keys = dict(degradation_keys or {})
        self._generators: dict[torch.device, torch.Generator] = {}

    def reset(self, engine=None) -> None:
        """Restart the noise stream from ``seed``."""
        self._generators = {}

    def attach(self, engine) -> None:
        """Reset the noise stream at every ``engine.run()`` (``Events.STARTED``)."""
        from ignite.engine import Events

        engine.add_event_handler(Events.STARTED, self.reset)

    def __call__(self, batchdata, device=None, non_blocking=False, **kwargs):
        if self.image_key not in batchdata:
            raise ValueError(f"batch has no '{self.image_key}', got keys {sorted(map(str, batchdata))}.")
        x = torch.as_tensor(batchdata[self.image_key]).to(device=device, non_blocking=non_blocking, **kwargs).float()
        gen = self._generators.setdefault(x.device, torch.Generator(device=x.device).manual_seed(self.seed))
        with torch.no_grad():
            kwargs = degradation_kwargs(batchdata, self.degradation_keys, x)
            y = self.degradation(x, torch.full((x.shape[0],), self.level, device=x.device), generator=gen, **kwargs)
        return y, x


class PrepareGenerationBatch(PrepareBatch):
    """``(noise, target, (), {"class_labels": ..., "mask": ...})`` for generating with a
    ``SupervisedEvaluator`` whose inferer is a :class:`monai_flow.inferers.FlowInferer`.

    The initial noise (B, ``out_channels``, *spatial) takes its spatial shape from
    ``batch[mask_key]`` (or ``batch[image_key]`` without a mask) and is a ``MetaTensor`` carrying
    that tensor's metadata, so the generated ``pred`` keeps the mask's affine and source name
    (``SaveImaged`` writes it on the mask's grid). Noise is drawn on the CPU from a generator
    seeded with ``seed`` (the same stream on every device, as :func:`monai_flow.inferers.make_noise`);
    :meth:`reset` reseeds it, and attaching the object to an engine (e.g. listing it in
    ``val_handlers``) resets it whenever the engine starts, so every validation run sees the same noise.

    The evaluator's ``label`` output (targets) is ``batch[target_key]`` (default the class label,
    so post-transforms see the same ``label`` as the batch; e.g. ``"mask"`` to score mask
    adherence); ``None`` when the batch has no such key.

    Args:
        seed: noise seed.
        out_channels: channels of the generated image.
        mask_key, label_key, image_key: batch keys; a missing mask or label is not passed on.
        target_key: batch key returned as the evaluator target.
    """

    def __init__(
        self,
        seed: int = 0,
        out_channels: int = 1,
        mask_key: str = "mask",
        label_key: str = "label",
        image_key: str = CommonKeys.IMAGE,
        target_key: str | None = "label",
    ) -> None:
        self.seed, self.out_channels = int(seed), int(out_channels)
        self.mask_key, self.label_key, self.image_key, self.target_key = mask_key, label_key, image_key, target_key
        self.reset()

    def reset(self, *_: Any) -> None:
        """Reseed the noise generator (also an ignite event handler)."""
        self.generator = torch.Generator().manual_seed(self.seed)

    def attach(self, engine) -> None:
        """Reset the noise stream at every ``engine.run()`` (``Events.STARTED``)."""
        from ignite.engine import Events

        engine.add_event_handler(Events.STARTED, self.reset)

    def __call__(self, batchdata, device=None, non_blocking=False, **kwargs):
        if not isinstance(batchdata, Mapping):
            raise ValueError(f"batchdata must be a dict, got {type(batchdata).__name__}.")
        ref_key = self.mask_key if self.mask_key in batchdata else self.image_key
        if ref_key not in batchdata:
            raise ValueError(
                f"batch needs '{self.mask_key}' or '{self.image_key}' to size the noise, got keys {sorted(map(str, batchdata))}."
            )
        ref = batchdata[ref_key]
        if not isinstance(ref, torch.Tensor) or ref.ndim < 3:
            raise ValueError(f"batch['{ref_key}'] must be a tensor (B, C, *spatial), got {getattr(ref, 'shape', type(ref))}.")
        noise = torch.randn((ref.shape[0], self.out_channels, *ref.shape[2:]), generator=self.generator)
        noise = noise.to(device=device, non_blocking=non_blocking, **kwargs)
        if isinstance(ref, MetaTensor):
            noise = MetaTensor(noise, meta=ref.meta, applied_operations=ref.applied_operations)
            noise.is_batch = ref.is_batch
        cond: dict[str, torch.Tensor] = {}
        if self.mask_key in batchdata:
            cond["mask"] = torch.as_tensor(batchdata[self.mask_key]).to(device=device, non_blocking=non_blocking, **kwargs).float()
        if self.label_key in batchdata:
            labels = torch.as_tensor(batchdata[self.label_key]).to(device=device, non_blocking=non_blocking)
            cond["class_labels"] = labels.reshape(ref.shape[0]).long()
        target = batchdata.get(self.target_key) if self.target_key is not None else None
        if isinstance(target, torch.Tensor):
            target = target.to(device=device, non_blocking=non_blocking, **kwargs)
        return noise, target, (), cond
