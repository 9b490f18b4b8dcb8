"""Adapting a CT RelativeFlow network to one CT volume.

Whole axial slices are degraded in the projection domain (the noise of a lower dose depends on
every ray through the slice), then patches are cropped: :class:`~monai_flow.transforms.CTNoiseBasisd`
computes a few realizations of the noise bases of every slice once, and
:class:`~monai_flow.transforms.NoiseBasisDegradation` turns them into the exact increment of any dose
for each patch — the bundles' training does the same.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from monai.data import MetaTensor

from monai_flow.flows import DtCurriculum, RelativeFlow
from monai_flow.physics import CT_FILTERS, estimate_ct_filter
from monai_flow.transforms import CTDegradation, CTNoiseBasisd, NoiseBasisDegradation

from .training import AdaptationError, VolumeAdaptation

__all__ = ["CTAdaptation"]


@dataclasses.dataclass
class _Prepared:
    reference: torch.Tensor  # (1, H, W, D) network units
    quantum: torch.Tensor  # (K, H, W, D) network units, float16
    electronic: torch.Tensor  # (K, H, W, D)
    noise: dict


class CTAdaptation(VolumeAdaptation):
    """:class:`VolumeAdaptation` for CT volumes ``(1, 1, H, W, D)`` (axial slices (H, W)) in network units.

    Args:
        operator: a :class:`~monai_flow.transforms.CTDegradation` describing the scan (views, filter,
            electronic noise, geometry); the spacing is the input's (``meta``).
        scale, shift: network units to HU, ``HU = x * scale + shift`` (e.g. 1000, -1000).
        realizations: noise basis realizations per slice (memory: 2 K slices, float16).
        filter_name: the reconstruction kernel of the input's noise: ``"auto"`` (default) finds it from the
            input's noise texture (:func:`~monai_flow.physics.estimate_ct_filter`: ramp, Shepp-Logan or Hann),
            None keeps the operator's, or one of :data:`~monai_flow.physics.CT_FILTERS`. A sharp (ramp)
            noise model on a scan reconstructed with a smooth kernel misreads its dose and teaches the
            wrong texture (measured in docs/benchmarks.md: real slices, Hann kernel).
        other arguments: :class:`VolumeAdaptation`.

    ``meta`` (optional, from the image header): ``spacing`` (dy, dx) in mm, ``i0`` (photons per bin,
    float or per slice) or ``relative_exposure`` (each slice's exposure, e.g. its mAs under tube-current
    modulation, or CTDIvol). The rule is :func:`~monai_flow.transforms.slice_photons`: ``i0`` when given,
    else the measured noise pooled over the slices and distributed by the exposure (uniform without one).
    """

    def __init__(self, operator: CTDegradation, scale: float = 1000.0, shift: float = -1000.0,
                 patch_size: Sequence[int] = (96, 96), realizations: int = 4, filter_name: str | None = "auto",
                 **kwargs) -> None:
        super().__init__(patch_size=patch_size, **kwargs)
        if filter_name not in (None, "auto", *CT_FILTERS):
            raise ValueError(f"filter_name must be 'auto', None or one of {CT_FILTERS}, got {filter_name!r}.")
        self.filter_name = filter_name
        if len(self.patch_size) != 2:
            raise ValueError(f"CT adaptation trains a slice network: patch_size must be (H, W), got {self.patch_size}.")
        if realizations < 1:
            raise ValueError(f"realizations must be >= 1, got {realizations}.")
        self.operator, self.scale, self.shift, self.realizations = operator, float(scale), float(shift), int(realizations)

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "scan": repr(self.operator.scan), "units": (self.scale, self.shift),
                "realizations": self.realizations, "filter_name": self.filter_name}

    def objective(self) -> RelativeFlow:
        curriculum = DtCurriculum(self.dt_range, factor=1.0, dt_min_floor=self.dt_range[0], dt_max_cap=self.dt_range[1])
        return RelativeFlow(NoiseBasisDegradation(), curriculum, degradation_keys={"quantum": "quantum",
                                                                                  "electronic": "electronic"})

    def prepare(self, volume: torch.Tensor, meta: Mapping[str, Any] | None = None) -> _Prepared:
        meta = dict(meta or {})
        if volume.ndim != 5 or volume.shape[1] != 1:
            raise AdaptationError(f"CT adaptation takes a volume (1, 1, H, W, D), got shape {tuple(volume.shape)}.")
        hu_min, hu_max = float(volume.amin()) * self.scale + self.shift, float(volume.amax()) * self.scale + self.shift
        if hu_min > -500 or hu_max < -200:
            raise AdaptationError(f"this does not look like CT in HU (values {hu_min:.0f}..{hu_max:.0f} after the "
                                  "bundle's scaling): no air or no tissue; is it an MR image?")
        self.check_size(volume.shape[2:4])
        spacing = tuple(float(s) for s in meta.get("spacing", self.operator.spacing))
        image = MetaTensor(volume[0], affine=torch.diag(torch.tensor([*spacing, 1.0, 1.0], dtype=torch.float64)))
        operator, kernel = self.operator, {}
        if self.filter_name is not None:
            name = self.filter_name
            if name == "auto":
                name, disagreement = estimate_ct_filter(volume * self.scale + self.shift, spacing, self.operator.scan)
                kernel = {"filter_disagreement": {k: round(v, 3) for k, v in disagreement.items()}}
            operator = copy.copy(self.operator)
            operator.scan = dataclasses.replace(self.operator.scan, filter_name=name)
        bases = CTNoiseBasisd("image", operator, self.scale, self.shift, self.realizations, i0_key="i0",
                              exposure_key="relative_exposure", seed=self.seed)
        try:
            out = bases({"image": image, "i0": meta.get("i0"), "relative_exposure": meta.get("relative_exposure")})
        except ValueError as e:
            raise AdaptationError(str(e)) from e
        noise = {"i0_per_slice": [round(float(v), 1) for v in out["i0"]], "i0_source": out["i0_source"],
                 "spacing_mm": list(spacing), "filter": operator.scan.filter_name, **kernel}
        return _Prepared(volume[0], out["quantum"].as_tensor(), out["electronic"].as_tensor(), noise)

    def batches(self, prepared: _Prepared, generator: torch.Generator) -> Iterator[dict[str, torch.Tensor]]:
        _, h, w, d = prepared.reference.shape
        ph, pw = self.patch_size
        fields = {"image": prepared.reference, "quantum": prepared.quantum, "electronic": prepared.electronic}
        while True:
            z = torch.randint(d, (self.batch_size,), generator=generator)
            top = torch.randint(h - ph + 1, (self.batch_size,), generator=generator)
            left = torch.randint(w - pw + 1, (self.batch_size,), generator=generator)
            flips = torch.rand(self.batch_size, 2, generator=generator) < 0.5
            batch = {}
            for name, field in fields.items():
                patches = []
                for i in range(self.batch_size):
                    patch = field[:, top[i]: top[i] + ph, left[i]: left[i] + pw, z[i]].float()
                    dims = [dim for dim, flip in zip((-2, -1), flips[i]) if flip]
                    patches.append(patch.flip(dims) if dims else patch)
                batch[name] = torch.stack(patches)
            yield batch
