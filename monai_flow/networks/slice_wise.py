"""Run a 2D network on 3D volumes slice by slice (axial slices along the last axis)."""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["SliceWise"]


class SliceWise(nn.Module):
    """Wrap a 2D flow network so it takes volumes: ``net(x, t, **kwargs)`` with x (B, C, H, W, D).

    Each of the D slices (H, W) is a sample of the 2D network; times (B,) and per-sample
    conditioning tensors are repeated per slice, image-shaped conditioning (B, C', H, W, D) is
    sliced like ``x``. ``slice_batch`` slices go through the network at once (memory bound).
    2D inputs (B, C, H, W) pass straight through. Attributes such as ``null_class`` are forwarded
    from the wrapped network; ``spatial_divisor`` is per axis, ``(d, d, 1)``.

    Args:
        network: a 2D network ``network(x, t, ...)``.
        slice_batch: slices per network call.
    """

    def __init__(self, network: nn.Module, slice_batch: int = 16) -> None:
        super().__init__()
        if slice_batch < 1:
            raise ValueError(f"slice_batch must be >= 1, got {slice_batch}.")
        self.network, self.slice_batch = network, int(slice_batch)

    @property
    def spatial_divisor(self) -> tuple[int, int, int] | None:
        """(d, d, 1) for volumes: in-plane sizes must divide by the 2D network's divisor, slices need not."""
        d = getattr(self._modules["network"], "spatial_divisor", None)
        return None if d is None else (d, d, 1)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["network"], name)

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if x.ndim == 4:
            return self.network(x, *args, **kwargs)
        if x.ndim != 5:
            raise ValueError(f"SliceWise expects (B, C, H, W) or (B, C, H, W, D), got shape {tuple(x.shape)}.")
        b, d = x.shape[0], x.shape[-1]

        def to_slices(v):
            if not isinstance(v, torch.Tensor) or v.ndim == 0 or v.shape[0] != b:
                return v  # scalars and broadcast values
            if v.ndim == 5 and v.shape[-1] == d:  # image-shaped: slices become samples
                return v.permute(0, 4, 1, 2, 3).reshape(b * d, *v.shape[1:4])
            return v.repeat_interleave(d, dim=0)  # per-sample values repeat per slice

        args = [to_slices(a) for a in args]
        kwargs = {k: to_slices(v) for k, v in kwargs.items()}
        slices = to_slices(x)
        outputs = []
        for start in range(0, slices.shape[0], self.slice_batch):
            part = slice(start, start + self.slice_batch)

            def pick(v):
                return v[part] if isinstance(v, torch.Tensor) and v.ndim >= 1 and v.shape[0] == slices.shape[0] else v

            outputs.append(self.network(slices[part], *[pick(a) for a in args], **{k: pick(v) for k, v in kwargs.items()}))
        out = torch.cat(outputs)
        return out.reshape(b, d, *out.shape[1:]).permute(0, 2, 3, 4, 1)
