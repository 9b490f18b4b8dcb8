"""Average an inferer's output over mirror images of its input (geometric self-ensemble)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import torch
from monai.utils import convert_to_dst_type

from monai_flow.inferers.base import WrappingInferer, plain

__all__ = ["FlipEnsembleInferer"]


class FlipEnsembleInferer(WrappingInferer):
    """``FlipEnsembleInferer(inferer, spatial_axes)(inputs, network)``: the mean over every subset ``S`` of
    ``spatial_axes`` of ``flip_S(inferer(flip_S(inputs), network))``: ``2^len(spatial_axes)`` runs.

    A denoiser's errors that do not follow the image when it is mirrored (what the network learned
    from a finite sample, the sliding window's seams) partly cancel in the mean, while anything
    mirror-equivariant (the image, the noise estimate of an ``auto`` schedule) is unchanged. It costs
    one inference per flip; the noise itself is not averaged away (every run sees the same input).

    Args:
        inferer: any inferer ``inferer(x, network, *args, **kwargs)`` returning the shape of ``x``.
        spatial_axes: spatial axes to mirror (0 = the first axis after the channel), e.g. ``(0, 1)``
            for the in-plane axes of a slice-wise CT network. Empty: the inferer alone.
    """

    def __init__(self, inferer: Callable[..., torch.Tensor], spatial_axes: Sequence[int] = (0, 1)) -> None:
        super().__init__()
        axes = tuple(int(a) for a in spatial_axes)
        if len(set(axes)) != len(axes) or any(a < 0 for a in axes):
            raise ValueError(f"spatial_axes must be distinct non-negative axes, got {tuple(spatial_axes)}.")
        self.inferer, self.spatial_axes = inferer, axes

    def __call__(self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args, **kwargs) -> torch.Tensor:  # type: ignore[override]
        """Args: inputs (B, C, *spatial). Returns the mean output, same shape and type as ``inputs``."""
        x = plain(inputs)
        if any(a >= x.ndim - 2 for a in self.spatial_axes):
            raise ValueError(f"spatial_axes {self.spatial_axes} do not fit an input with {x.ndim - 2} spatial axes "
                             f"(shape {tuple(x.shape)}).")
        total, count = None, 0
        for k in range(len(self.spatial_axes) + 1):
            for subset in itertools.combinations(self.spatial_axes, k):
                dims = [a + 2 for a in subset]
                out = plain(self.inferer(x.flip(dims) if dims else x, network, *args, **kwargs))
                out = out.flip(dims) if dims else out
                total = out.float() if total is None else total + out.float()
                count += 1
        mean = (total / count).to(x.dtype)
        return convert_to_dst_type(mean, inputs, device=mean.device)[0]
