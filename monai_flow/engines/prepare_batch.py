"""Batch preparation for flow trainers: keep the whole dictionary, move tensors to the device."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from monai.engines.utils import PrepareBatch
from monai.utils import CommonKeys

__all__ = ["PrepareDegradedBatch", "PrepareFlowBatch"]


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
    The degradation draws from a generator seeded once, so every validation sees the same noise.

    Args:
        degradation: ``op(x, level, generator=None)``.
        level: degradation level (e.g. dt) applied to every sample.
        image_key: batch key of the reference.
        seed: seed of the degradation noise.
    """

    def __init__(self, degradation, level: float, image_key: str = CommonKeys.IMAGE, seed: int = 0) -> None:
        if not callable(degradation):
            raise ValueError(f"degradation must be callable op(x, level, generator=None), got {type(degradation).__name__}.")
        self.degradation, self.level, self.image_key, self.seed = degradation, float(level), image_key, int(seed)
        self._generators: dict[torch.device, torch.Generator] = {}

    def __call__(self, batchdata, device=None, non_blocking=False, **kwargs):
        if self.image_key not in batchdata:
            raise ValueError(f"batch has no '{self.image_key}', got keys {sorted(map(str, batchdata))}.")
        x = torch.as_tensor(batchdata[self.image_key]).to(device=device, non_blocking=non_blocking, **kwargs).float()
        gen = self._generators.setdefault(x.device, torch.Generator(device=x.device).manual_seed(self.seed))
        with torch.no_grad():
            y = self.degradation(x, torch.full((x.shape[0],), self.level, device=x.device), generator=gen)
        return y, x
