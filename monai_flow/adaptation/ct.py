"""Adapting a CT RelativeFlow network to one CT volume.

Whole axial slices are degraded in the projection domain (the noise of a lower dose depends on
every ray through the slice), then patches are cropped. Computing a projection per training
patch would cost most of the budget, so the degradation noise is precomputed once per slice as a
few realizations of two basis fields (:func:`~monai_flow.physics.low_dose_noise_basis`): the Yu
et al. increment that lowers the dose to ``a`` is exactly ``sqrt((1 - a)/a) Q + sqrt(1 - a^2)/a E``
for a quantum basis Q and an electronic basis E; with the CoT mapping ``a = e^{-2 level}`` these
coefficients are ``sqrt(e^{2 level} - 1)`` and ``sqrt(e^{4 level} - 1)``. Realizations are
recombined at random (a normalised sum of two, with random signs), so the network sees many
noise draws per slice.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch

from monai_flow.flows import DtCurriculum, RelativeFlow
from monai_flow.physics import estimate_ct_i0, low_dose_noise_basis
from monai_flow.transforms import CTDegradation

from .training import AdaptationError, VolumeAdaptation

__all__ = ["CTAdaptation", "NoiseBasisDegradation"]

_MIN_TISSUE_PIXELS = 256  # soft-tissue pixels a slice needs for its noise estimate to count
_NOISELESS_I0 = 1e9  # an estimate above this means no measurable noise (a clinical scan has 1e4 - 1e6)


class NoiseBasisDegradation:
    """``op(x, level, quantum=Q, electronic=E) = x + sqrt(e^{2 level} - 1) Q + sqrt(e^{4 level} - 1) E``:
    the CoT low-dose increment from precomputed basis fields shaped like ``x`` (B, C, *spatial)."""

    def __call__(self, x: torch.Tensor, level, generator=None, quantum=None, electronic=None) -> torch.Tensor:
        if quantum is None:
            raise ValueError("NoiseBasisDegradation needs the quantum noise basis of each sample (quantum=...).")
        level = torch.as_tensor(level, dtype=x.dtype, device=x.device).reshape(-1, *([1] * (x.ndim - 1)))
        out = x + torch.expm1(2 * level).sqrt() * quantum
        return out if electronic is None else out + torch.expm1(4 * level).sqrt() * electronic


@dataclasses.dataclass
class _Prepared:
    reference: torch.Tensor  # (D, H, W) network units
    quantum: torch.Tensor  # (K, D, H, W) network units, float16
    electronic: torch.Tensor | None
    noise: dict


class CTAdaptation(VolumeAdaptation):
    """:class:`VolumeAdaptation` for CT volumes ``(1, 1, H, W, D)`` (axial slices (H, W)) in network units.

    Args:
        operator: the :class:`~monai_flow.transforms.CTDegradation` of the bundle (scan, geometry,
            spacing are taken from it; the spacing is replaced by the input's, see ``meta``).
        scale, shift: network units to HU, ``HU = x * scale + shift`` (e.g. 1000, -1000).
        realizations: noise basis realizations per slice (memory: 2 K slices, float16).
        other arguments: :class:`VolumeAdaptation`.

    ``meta`` (optional, from the image header): ``spacing`` (dy, dx) in mm, ``i0`` (photons per
    bin of each slice, (D,)) or ``relative_exposure`` (each slice's exposure relative to the others,
    e.g. its mAs under tube-current modulation, (D,)). Rule: absolute photons per slice come from
    ``i0`` when given; otherwise from the measured noise (:meth:`CTDegradation.reference_i0`),
    pooled over slices as the median of measured / relative exposure and distributed by
    ``relative_exposure`` (uniform when the header has none).
    """

    def __init__(self, operator: CTDegradation, scale: float = 1000.0, shift: float = -1000.0,
                 patch_size: Sequence[int] = (96, 96), realizations: int = 6, **kwargs) -> None:
        super().__init__(patch_size=patch_size, **kwargs)
        if len(self.patch_size) != 2:
            raise ValueError(f"CT adaptation trains a slice network: patch_size must be (H, W), got {self.patch_size}.")
        if realizations < 1:
            raise ValueError(f"realizations must be >= 1, got {realizations}.")
        self.operator, self.scale, self.shift, self.realizations = operator, float(scale), float(shift), int(realizations)

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "scan": repr(self.operator.scan), "units": (self.scale, self.shift),
                "realizations": self.realizations}

    def objective(self) -> RelativeFlow:
        return RelativeFlow(NoiseBasisDegradation(), DtCurriculum(self.dt_range, factor=1.0, dt_min_floor=self.dt_range[0],
                                                                  dt_max_cap=self.dt_range[1]),
                            degradation_keys={"quantum": "quantum", "electronic": "electronic"})

    def photons(self, hu: torch.Tensor, spacing, meta: Mapping[str, Any]) -> tuple[torch.Tensor, str]:
        """Photons per bin of each slice (D,) and where they came from."""
        depth = hu.shape[-1]
        if meta.get("i0") is not None:
            i0 = torch.as_tensor(meta["i0"], dtype=torch.float64).reshape(-1).expand(depth).clone()
            return i0, "header"
        relative = meta.get("relative_exposure")
        relative = torch.ones(depth, dtype=torch.float64) if relative is None else \
            torch.as_tensor(relative, dtype=torch.float64).reshape(-1).expand(depth)
        slices = hu.permute(4, 0, 1, 2, 3)[:, 0]  # (D, 1, H, W): one sample per slice
        tissue = ((slices > -300) & (slices < 300)).flatten(1).sum(1)
        estimate = estimate_ct_i0(slices, spacing, self.operator.scan).double().reshape(-1)
        valid = torch.isfinite(estimate) & (estimate > 0) & (estimate < _NOISELESS_I0) & (tissue >= _MIN_TISSUE_PIXELS)
        if int(valid.sum()) == 0:
            reason = "no soft tissue (-300..300 HU)" if int(tissue.max()) < _MIN_TISSUE_PIXELS else "no measurable noise"
            raise AdaptationError(f"the noise of this CT volume cannot be estimated ({reason}); give its exposure "
                                  "(photons per detector bin, i0) explicitly.")
        scale = (estimate[valid] / relative[valid]).median()
        source = "estimate" if meta.get("relative_exposure") is None else "estimate, distributed by header exposure"
        return scale * relative, source

    def prepare(self, volume: torch.Tensor, meta: Mapping[str, Any] | None = None) -> _Prepared:
        meta = dict(meta or {})
        if volume.ndim != 5 or volume.shape[1] != 1:
            raise AdaptationError(f"CT adaptation takes a volume (1, 1, H, W, D), got shape {tuple(volume.shape)}.")
        spacing = tuple(float(s) for s in meta.get("spacing", self.operator.spacing))
        hu = volume * self.scale + self.shift
        if float(hu.amin()) > -500 or float(hu.amax()) < -200:
            raise AdaptationError(f"this does not look like CT in HU (values {float(hu.amin()):.0f}..{float(hu.amax()):.0f} "
                                  "after the bundle's scaling): no air or no tissue; is it an MR image?")
        self.check_size(volume.shape[2:4])
        i0, source = self.photons(hu, spacing, meta)
        slices = hu[0, 0].permute(2, 0, 1)  # (D, H, W)
        generator = torch.Generator().manual_seed(self.seed + 1)
        quantum, electronic = [], []
        for _ in range(self.realizations):
            q, e = low_dose_noise_basis(slices[:, None], spacing, self.operator.scan, i0.float(), generator=generator)
            quantum.append((q[:, 0] / self.scale).half())
            electronic.append(None if e is None else (e[:, 0] / self.scale).half())
        noise = {"i0_per_slice": [round(float(v), 1) for v in i0], "i0_source": source, "spacing_mm": list(spacing)}
        return _Prepared(volume[0, 0].permute(2, 0, 1).contiguous(), torch.stack(quantum),
                         None if electronic[0] is None else torch.stack(electronic), noise)

    def batches(self, prepared: _Prepared, generator: torch.Generator) -> Iterator[dict[str, torch.Tensor]]:
        k, d, h, w = prepared.quantum.shape
        ph, pw = self.patch_size
        while True:
            slice_ = torch.randint(d, (self.batch_size,), generator=generator)
            top = torch.randint(h - ph + 1, (self.batch_size,), generator=generator)
            left = torch.randint(w - pw + 1, (self.batch_size,), generator=generator)
            flips = torch.rand(self.batch_size, 2, generator=generator) < 0.5

            def crop(field: torch.Tensor, i: int) -> torch.Tensor:
                patch = field[..., top[i]: top[i] + ph, left[i]: left[i] + pw].float()
                return patch.flip([d for d, f in zip((-2, -1), flips[i]) if f]) if flips[i].any() else patch

            def basis(fields: torch.Tensor | None, i: int) -> torch.Tensor | None:
                if fields is None:
                    return None
                pick = torch.randint(k, (2,), generator=generator)
                signs = torch.where(torch.rand(2, generator=generator) < 0.5, -1.0, 1.0)
                if k > 1 and pick[0] != pick[1]:  # a normalised sum of two independent draws is a draw
                    field = (signs[0] * fields[pick[0], slice_[i]].float() + signs[1] * fields[pick[1], slice_[i]].float())
                    field = field / math.sqrt(2.0)
                else:
                    field = signs[0] * fields[pick[0], slice_[i]].float()
                return crop(field, i)

            batch = {"image": torch.stack([crop(prepared.reference[slice_[i]], i) for i in range(self.batch_size)])[:, None],
                     "quantum": torch.stack([basis(prepared.quantum, i) for i in range(self.batch_size)])[:, None]}
            if prepared.electronic is not None:
                batch["electronic"] = torch.stack([basis(prepared.electronic, i) for i in range(self.batch_size)])[:, None]
            else:
                batch["electronic"] = torch.zeros_like(batch["quantum"])
            yield batch
