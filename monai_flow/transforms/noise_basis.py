"""Precomputed low-dose CT noise for training on patches: :class:`CTNoiseBasisd`.

RelativeFlow degrades each reference in the projection domain, where a lower dose depends on every
ray through the slice, but networks train on patches. This transform degrades whole axial slices
once, as ``realizations`` draws of two basis fields per slice (:func:`~monai_flow.physics.low_dose_noise_basis`),
stored next to the image under ``quantum`` / ``electronic``; crop them together with the image (e.g.
``RandSpatialCropSamplesd(keys=["image", "quantum", "electronic"], ...)``) and train with
:class:`~monai_flow.transforms.NoiseBasisDegradation`, which turns them into the exact increment of
any dose. Cache the output (``CacheDataset``): the bases are the expensive part.
"""

from __future__ import annotations

import copy
import zlib
from collections.abc import Hashable, Mapping

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

from monai_flow.axial import to_axial_slices
from monai_flow.physics import low_dose_noise_basis

from .degradation import CTDegradation

__all__ = ["CTNoiseBasisd", "CTNoiseBasisD", "CTNoiseBasisDict", "PixelSpacingd", "slice_photons"]

_MIN_TISSUE_PIXELS = 256  # soft-tissue pixels a slice needs for its noise estimate to count
_NOISELESS_I0 = 1e9  # an estimate above this means no measurable noise (a clinical scan has 1e4 - 1e6)


def slice_photons(operator: CTDegradation, hu: torch.Tensor, spacing, i0=None, exposure=None) -> tuple[torch.Tensor, str]:
    """Photons per detector bin of each axial slice of a CT volume ``hu`` (1, H, W, D) in HU, and their source.

    Rule: ``i0`` when given (float or (D,)); otherwise the noise measured slice by slice
    (:meth:`CTDegradation.reference_i0` with ``i0="estimate"``), pooled over the slices as the median of
    measured photons / exposure and distributed by ``exposure``: each slice's header exposure (mAs, or
    any relative unit such as CTDIvol); without one, every slice is assumed to have the same exposure.
    Raises ``ValueError`` when the volume has no soft tissue or no measurable noise.
    """
    slices, _ = to_axial_slices(hu[None].float())  # (D, 1, H, W)
    depth = slices.shape[0]
    if i0 is not None:
        return torch.as_tensor(i0, dtype=torch.float32).reshape(-1).expand(depth).clone(), "given"
    tissue = ((slices > -300) & (slices < 300)).flatten(1).sum(1)
    if int(tissue.max()) < _MIN_TISSUE_PIXELS:
        raise ValueError("the noise of this CT volume cannot be estimated (no soft tissue, -300..300 HU); give its "
                         "exposure (photons per detector bin, i0) explicitly.")
    source = "estimate" if exposure is None else "estimate, distributed by header exposure"
    exposure = torch.ones(depth) if exposure is None else torch.as_tensor(exposure, dtype=torch.float32).reshape(-1).expand(depth)
    estimating = copy.copy(operator)
    estimating.estimate_i0 = True
    photons = torch.as_tensor(estimating.reference_i0(slices, exposure_mas=exposure, spacing=spacing), dtype=torch.float32)
    photons = photons.reshape(-1).expand(depth)
    if not bool(torch.isfinite(photons).all()) or float(photons.max()) > _NOISELESS_I0:
        raise ValueError("the noise of this CT volume cannot be estimated (no measurable noise); give its exposure "
                         "(photons per detector bin, i0) explicitly.")
    return photons.clone(), source


class CTNoiseBasisd(MapTransform):
    """Add the low-dose noise bases of each CT volume under ``quantum_key`` / ``electronic_key``.

    Deterministic (the noise draws are seeded by ``seed`` and the volume's content), so that
    ``CacheDataset`` caches its output: the bases are computed once per volume, not per epoch; the
    degradation mixes the K realizations with random signs at every use.

    Input: a channel-first volume (1, H, W, D) (or a slice (1, H, W)) in network units
    ``x = (HU - shift) / scale``; the pixel spacing comes from its MetaTensor affine (else the
    operator's). Output keys: (K, H, W, D) float16 fields in the same units, K = ``realizations``.

    Args:
        keys: the image key (one).
        operator: the :class:`CTDegradation` whose scan (views, filter, electronic noise, geometry) is simulated.
        scale, shift: network units to HU.
        realizations: K independent draws per slice.
        i0_key: optional data key holding each volume's photons per bin (float or per slice).
        exposure_key: optional data key holding the slices' header exposure (mAs or relative), see
            :func:`slice_photons`; the measured photons and their source are stored under ``"i0"`` /
            ``"i0_source"`` keys of the output.
        quantum_key, electronic_key: output keys.
        seed: seed of the noise draws (combined with a checksum of each volume).
    """

    def __init__(self, keys: KeysCollection, operator: CTDegradation, scale: float = 1.0, shift: float = 0.0,
                 realizations: int = 2, i0_key: str | None = None, exposure_key: str | None = None,
                 quantum_key: str = "quantum", electronic_key: str = "electronic", seed: int = 0,
                 allow_missing_keys: bool = False) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ValueError(f"CTNoiseBasisd takes one image key, got {self.keys}.")
        if realizations < 1:
            raise ValueError(f"realizations must be >= 1, got {realizations}.")
        self.operator, self.scale, self.shift, self.realizations = operator, float(scale), float(shift), int(realizations)
        self.i0_key, self.exposure_key = i0_key, exposure_key
        self.quantum_key, self.electronic_key, self.seed = quantum_key, electronic_key, int(seed)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            image = d[key]
            volume = torch.as_tensor(image.as_tensor() if isinstance(image, MetaTensor) else image).float()
            flat = volume.ndim == 3
            volume = volume[..., None] if flat else volume
            if volume.ndim != 4 or volume.shape[0] != 1:
                raise ValueError(f"CTNoiseBasisd expects a single-channel slice or volume (1, H, W[, D]), got "
                                 f"{tuple(volume.shape)} under '{key}'.")
            spacing = self.operator.spacing
            if isinstance(image, MetaTensor):
                spacing = tuple(float(s) for s in image.pixdim[:2])
            hu = volume * self.scale + self.shift
            photons, source = slice_photons(self.operator, hu, spacing, d.get(self.i0_key) if self.i0_key else None,
                                            d.get(self.exposure_key) if self.exposure_key else None)
            slices = hu[0].permute(2, 0, 1)[:, None]  # (D, 1, H, W)
            checksum = zlib.crc32(volume[..., :: max(1, volume.shape[-1] // 4)].numpy().tobytes())
            generator = torch.Generator().manual_seed((self.seed * 1_000_003 + checksum) % 2**63)
            quantum, electronic = [], []
            for _ in range(self.realizations):
                q, e = low_dose_noise_basis(slices, spacing, self.operator.scan, photons, generator=generator)
                quantum.append(q[:, 0].permute(1, 2, 0) / self.scale)
                electronic.append(torch.zeros_like(quantum[-1]) if e is None else e[:, 0].permute(1, 2, 0) / self.scale)
            fields = {self.quantum_key: torch.stack(quantum), self.electronic_key: torch.stack(electronic)}
            for name, value in fields.items():
                value = (value[..., 0] if flat else value).half()
                d[name] = MetaTensor(value, meta=image.meta) if isinstance(image, MetaTensor) else value
            d["i0"], d["i0_source"] = photons, source
        return d


CTNoiseBasisD = CTNoiseBasisDict = CTNoiseBasisd


class PixelSpacingd(MapTransform):
    """Record the in-plane pixel spacing (mm) of an image under ``spacing_key``, as a float32 (2,) tensor:
    operators that need the spacing per sample (``CTDegradation(spacing=None)``) read it from the batch
    through ``degradation_keys={"spacing": "spacing"}`` after collation ((B, 2)). The image must be a
    MetaTensor; its first two spatial axes are the axial plane."""

    def __init__(self, keys: KeysCollection, spacing_key: str = "spacing", allow_missing_keys: bool = False) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ValueError(f"PixelSpacingd takes one image key, got {self.keys}.")
        self.spacing_key = spacing_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            if not isinstance(d[key], MetaTensor):
                raise ValueError(f"PixelSpacingd needs a MetaTensor under '{key}' (its affine holds the spacing), "
                                 f"got {type(d[key]).__name__}.")
            d[self.spacing_key] = torch.as_tensor(d[key].pixdim[:2], dtype=torch.float32)
        return d
