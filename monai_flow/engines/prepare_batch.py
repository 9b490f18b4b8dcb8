"""Batch preparation for flow trainers: keep the whole dictionary, move tensors to the device."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from monai.engines.utils import PrepareBatch
from monai.utils import CommonKeys

__all__ = ["PrepareFlowBatch"]


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
