"""Adapting an MR RelativeFlow network to one magnitude MR volume: 3D patches, Rician /
noncentral-chi degradation at the volume's own noise level (estimated on the whole volume, so
that patches without background still know it). The noise is white, so degrading each patch is
the same in distribution as degrading the volume and cropping."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch

from monai_flow.flows import DtCurriculum, RelativeFlow
from monai_flow.transforms import MRDegradation

from .training import AdaptationError, VolumeAdaptation

__all__ = ["MRAdaptation"]


@dataclasses.dataclass
class _Prepared:
    volume: torch.Tensor  # (C, X, Y, Z) network units
    noise: dict
    patch: tuple[int, ...]  # the training patch, fitted to the volume


class MRAdaptation(VolumeAdaptation):
    """:class:`VolumeAdaptation` for magnitude MR volumes ``(1, C, X, Y, Z)``.

    Args:
        operator: the bundle's :class:`~monai_flow.transforms.MRDegradation` (coils, mapping).
        patch_size: 3D training patch. Along an axis where the volume is thinner (e.g. a stack of 32
            thick slices) the patch shrinks to the largest multiple of ``patch_multiple`` that fits;
            a volume thinner than ``patch_multiple`` is refused.
        patch_multiple: what the network's down-sampling needs patch sides to divide by (16).
        other arguments: :class:`VolumeAdaptation`.

    ``meta`` (optional): ``noise_std``, the volume's noise std ``s`` in network units when known;
    otherwise ``operator.estimate_noise_std`` of the whole volume.
    """

    def __init__(self, operator: MRDegradation, patch_size: Sequence[int] = (48, 48, 48), patch_multiple: int = 16,
                 **kwargs) -> None:
        super().__init__(patch_size=patch_size, **kwargs)
        self.patch_multiple = int(patch_multiple)
        if len(self.patch_size) != 3:
            raise ValueError(f"MR adaptation trains a 3D network: patch_size must be (X, Y, Z), got {self.patch_size}.")
        self.operator = operator

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "num_coils": self.operator.num_coils, "dt_mapping": self.operator.dt_mapping}

    def objective(self) -> RelativeFlow:
        curriculum = DtCurriculum(self.dt_range, factor=1.0, dt_min_floor=self.dt_range[0], dt_max_cap=self.dt_range[1])
        return RelativeFlow(self.operator, curriculum, degradation_keys={"reference_std": "reference_std"})

    def prepare(self, volume: torch.Tensor, meta: Mapping[str, Any] | None = None) -> _Prepared:
        meta = dict(meta or {})
        if volume.ndim != 5:
            raise AdaptationError(f"MR adaptation takes a volume (1, C, X, Y, Z), got shape {tuple(volume.shape)}.")
        low, high = float(volume.amin()), float(volume.amax())
        if low < -0.05 * max(abs(high), 1e-12):
            raise AdaptationError(f"this does not look like a magnitude MR image: it has negative values ({low:.3g} "
                                  f"against a maximum of {high:.3g}); is it CT in HU?")
        spatial = tuple(volume.shape[2:])
        patch = tuple(p if s >= p else s // self.patch_multiple * self.patch_multiple for s, p in zip(spatial, self.patch_size))
        if min(patch) < self.patch_multiple:
            raise AdaptationError(f"input of size {spatial} is too small to adapt on: every side needs at least "
                                  f"{self.patch_multiple} voxels (training patches {self.patch_size}).")
        if meta.get("noise_std") is not None:
            std, source = float(meta["noise_std"]), "given"
        else:
            std, source = float(self.operator.estimate_noise_std(volume).reshape(-1)[0]), "estimate"
        if not (std > 0 and torch.isfinite(torch.tensor(std))):
            raise AdaptationError(f"the noise of this MR volume cannot be estimated (got {std}); give noise_std.")
        return _Prepared(volume[0], {"noise_std": std, "noise_source": source, "patch": list(patch)}, patch)

    def batches(self, prepared: _Prepared, generator: torch.Generator) -> Iterator[dict[str, torch.Tensor]]:
        volume = prepared.volume
        shape = volume.shape[1:]
        while True:
            patches = []
            for _ in range(self.batch_size):
                corner = [int(torch.randint(s - p + 1, (1,), generator=generator)) for s, p in zip(shape, prepared.patch)]
                patch = volume[(slice(None), *(slice(c, c + p) for c, p in zip(corner, prepared.patch)))]
                flips = [d + 1 for d in range(3) if bool(torch.rand(1, generator=generator) < 0.5)]
                patches.append(patch.flip(flips) if flips else patch)
            yield {"image": torch.stack(patches), "reference_std": torch.full((self.batch_size,), prepared.noise["noise_std"])}
