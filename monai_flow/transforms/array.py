"""Array transforms: CT low-dose and MR Rician/noncentral-chi degradation.

Channel-first input ``(C, H, W)`` or ``(C, H, W, D)`` (for CT, (H, W) is the axial plane),
as numpy array, torch tensor or MetaTensor; the output has the input's container type and
metadata, with a floating dtype. All randomness comes from ``self.R`` (seeded by
``set_random_state`` and MONAI's DataLoader workers) through a torch.Generator seeded from it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.config import NdarrayOrTensor
from monai.data import MetaTensor
from monai.data.meta_obj import get_track_meta
from monai.transforms import Randomizable, RandomizableTransform, Transform
from monai.utils import TransformBackends, convert_to_dst_type, convert_to_tensor

from monai_flow.physics import MU_WATER_PER_MM, RELATIVE_TO, CTScan, low_dose_ct_noise, noncentral_chi_noise, resolve_noise_std
from monai_flow.physics.ct_scan import check_domain, check_input_noise, check_spacing

# CT defaults: CTScan's, the one place they are validated (tests check the transforms repeat them)
_SCAN = CTScan()

__all__ = ["LowDoseCTNoise", "RandLowDoseCTNoise", "RicianMRNoise", "RandRicianMRNoise"]

def _check_range(name: str, value, low: float, high: float, low_open: bool = True) -> tuple[float, float]:
    """Validate a scalar or (min, max) parameter against (low, high]; return it as a range."""
    lo, hi = (value, value) if np.isscalar(value) else tuple(value)
    for v in (lo, hi):
        if not np.isfinite(v) or (v <= low if low_open else v < low) or v > high:
            bound = f"({low}, {high}]" if low_open else f"[{low}, {high}]"
            raise ValueError(f"{name} must lie in {bound}, got {value}.")
    if lo > hi:
        raise ValueError(f"{name} range must be (min, max) with min <= max, got {value}.")
    return float(lo), float(hi)


def _as_batch(img: NdarrayOrTensor) -> torch.Tensor:
    """Validate a channel-first 2D/3D image and return it as a float (1, C, *spatial) tensor."""
    t = convert_to_tensor(img, track_meta=False)
    if t.ndim not in (3, 4):
        raise ValueError(
            f"expected a channel-first 2D (C, H, W) or 3D (C, H, W, D) image, got shape {tuple(t.shape)}."
        )
    t = t if t.is_floating_point() else t.float()
    if not torch.isfinite(t).all():
        raise ValueError("image contains NaN or Inf values; degradation needs finite intensities.")
    return t[None]


def _wrap(noisy: torch.Tensor, img: NdarrayOrTensor) -> NdarrayOrTensor:
    """Return ``noisy`` (1, C, ...) with the type and metadata of ``img``."""
    out = noisy[0]
    if isinstance(img, MetaTensor) and get_track_meta():
        out = MetaTensor(out, meta=img.meta, applied_operations=img.applied_operations)
    return convert_to_dst_type(out, img, dtype=out.dtype)[0]


def _generator(seed: int, device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(int(seed))


class _SeededNoise(Randomizable, Transform):
    """A noise transform with fixed parameters; each call draws a fresh seed from ``self.R``."""

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def randomize(self, data=None) -> None:
        self._seed = self.R.randint(2**31)

    def _seed_for(self, seed: int | None, randomize: bool) -> int:
        if seed is not None:
            return seed
        if randomize or not hasattr(self, "_seed"):
            self.randomize()
        return self._seed


class LowDoseCTNoise(_SeededNoise):
    """Simulate a lower-dose CT scan of a CT image in Hounsfield units.

    ``domain="projection"``: HU -> attenuation with the pixel spacing (mm), line integrals of each
    axial slice (parallel or fan beam), Poisson-Gaussian noise in the sinogram (with the bowtie's
    and the tube-current modulation's photons per ray) and FBP of the noise alone, added to the
    input. ``domain="image"``: stationary noise with a ramp-shaped spectrum and the variance the
    projection model gives at the slice centre. Physics, units, defaults and limits:
    docs/transforms.md.

    Args:
        dose_fraction: a in (0, 1], the simulated dose relative to the input's.
        i0: full-dose incident photons per detector bin (channel) and view, at the central channel
            without bowtie (1e5..1e6 typical).
        electronic_std: electronic noise std in counts per bin (3..10 typical); dose independent.
        mu_water: attenuation of water in 1/mm (0.0192 at about 70 keV).
        domain: "projection" or "image".
        num_views: views over 180 degrees (parallel, default 720) or 360 degrees (fan, default 1152).
        num_bins: detector bins (parallel, default: the diagonal) or channels (fan, default 736).
        filter_name: FBP filter, "ramp", "shepp-logan" or "hann" (sets the noise texture).
        input_noise: "full_dose" (the input is a real full-dose scan: add only the extra noise of
            the lower dose, Yu et al. 2012) or "none" (the input is noise-free, e.g. a phantom:
            simulate the whole Poisson-Gaussian acquisition at ``dose_fraction * i0``).
        spacing: in-plane pixel spacing (mm) along the first two spatial axes; ``None`` reads it
            from the MetaTensor affine (required then).
        geometry: "parallel" (default: fastest; see docs/transforms.md) or "fan".
        source_isocentre_mm, source_detector_mm, channel_pitch_mm, detector_shape, detector_offset:
            the fan beam (source to rotation centre and to detector in mm, channel pitch at the
            detector in mm, "arc" or "flat" detector, channel offset), see
            :class:`~monai_flow.physics.CTScan`; defaults: Siemens SOMATOM Definition AS.
        bowtie: None, "cylinder" or per-channel relative fluxes; bowtie_radius_mm, bowtie_min: the
            "cylinder" shape (water cylinder radius in mm, edge transmission).
        modulation: None, "auto" (angular, from each slice's attenuation) or per-view relative
            tube currents.
        reference_mas: exposure (mAs) at which the scan has ``i0`` photons: an input whose header
            records an exposure then has ``i0 * mAs / reference_mas`` photons per bin.
        target_mas: simulate this exposure (mAs) instead of ``dose_fraction``: the dose fraction is
            ``target_mas`` over the input's exposure, read from its metadata
            (:func:`monai_flow.data.ct_exposure.exposure_from_meta`), else ``reference_mas``.
    """

    def __init__(
        self,
        dose_fraction: float = 0.25,
        i0: float = _SCAN.i0,
        electronic_std: float = _SCAN.electronic_std,
        mu_water: float = MU_WATER_PER_MM,
        domain: str = "projection",
        num_views: int | None = None,
        num_bins: int | None = None,
        filter_name: str = "ramp",
        input_noise: str = "full_dose",
        spacing: Sequence[float] | None = None,
        geometry: str = "parallel",
        source_isocentre_mm: float = _SCAN.source_isocentre_mm,
        source_detector_mm: float = _SCAN.source_detector_mm,
        channel_pitch_mm: float = _SCAN.channel_pitch_mm,
        detector_shape: str = "arc",
        detector_offset: float = _SCAN.detector_offset,
        bowtie: str | Sequence[float] | None = None,
        bowtie_radius_mm: float = _SCAN.bowtie_radius_mm,
        bowtie_min: float = _SCAN.bowtie_min,
        modulation: str | Sequence[float] | None = None,
        reference_mas: float | None = None,
        target_mas: float | None = None,
    ) -> None:
        _check_range("dose_fraction", dose_fraction, 0.0, 1.0)
        self.dose_fraction = float(dose_fraction)
        self.scan = CTScan(i0, electronic_std, mu_water, num_views, num_bins, filter_name, geometry, source_isocentre_mm,
                           source_detector_mm, channel_pitch_mm, detector_shape, detector_offset, bowtie, bowtie_radius_mm,
                           bowtie_min, modulation, reference_mas)
        self.domain, self.input_noise = check_domain(domain), check_input_noise(input_noise)
        self.spacing = None if spacing is None else check_spacing(spacing)
        if target_mas is not None:
            _check_range("target_mas", target_mas, 0.0, float("inf"))
        self.target_mas = None if target_mas is None else float(target_mas)

    def _spacing(self, img: NdarrayOrTensor) -> tuple[float, float]:
        if self.spacing is not None:
            return tuple(self.spacing)
        if isinstance(img, MetaTensor):
            return tuple(float(s) for s in img.pixdim[:2])
        raise ValueError(
            "LowDoseCTNoise needs the pixel spacing in mm: pass spacing=(sy, sx) or a MetaTensor "
            f"with an affine (got {type(img).__name__})."
        )

    def exposure(self, img: NdarrayOrTensor, dose_fraction: float | None = None):
        """Dose fraction and photons per bin of ``img`` from its header (docs/transforms.md, "Dose from
        the header"): ``(a, i0)`` with ``i0`` a float or one value per axial slice (D,)."""
        from monai_flow.data.ct_exposure import exposure_from_meta

        exposure = exposure_from_meta(img.meta if isinstance(img, MetaTensor) else None)
        per_slice = None if exposure is None else exposure.exposure_mas
        i0 = self.scan.i0
        if per_slice is not None and self.scan.reference_mas is not None:
            i0 = self.scan.photons_for_exposure(torch.tensor(per_slice, dtype=torch.float64))
            i0 = float(i0[0]) if i0.numel() == 1 else i0
        if dose_fraction is not None or self.target_mas is None:
            return (self.dose_fraction if dose_fraction is None else dose_fraction), i0
        if per_slice is not None:
            input_mas, where = sum(per_slice) / len(per_slice), f"its header ({exposure.source})"
        elif self.scan.reference_mas is not None:
            input_mas, where = self.scan.reference_mas, "reference_mas (the header has no exposure)"
        else:
            raise ValueError("target_mas needs the input's exposure: its metadata has no Exposure, XRayTubeCurrent x "
                             "ExposureTime or ExposureInuAs, and reference_mas is not set; pass dose_fraction instead.")
        if self.target_mas > input_mas * (1 + 1e-9):
            raise ValueError(f"target_mas ({self.target_mas:g} mAs) exceeds the input's exposure ({input_mas:g} mAs, from "
                             f"{where}): noise can only be added, a higher dose cannot be simulated.")
        return self.target_mas / input_mas, i0

    def __call__(
        self, img: NdarrayOrTensor, dose_fraction: float | None = None, seed: int | None = None, randomize: bool = True
    ) -> NdarrayOrTensor:
        """Args: img (C, H, W[, D]) in HU; ``dose_fraction`` overrides the constructor's (and ``target_mas``)."""
        if dose_fraction is not None:
            dose_fraction = _check_range("dose_fraction", dose_fraction, 0, 1)[0]
        dose, i0 = self.exposure(img, dose_fraction)
        batch = _as_batch(img)
        if isinstance(i0, torch.Tensor):  # one photon count per axial slice (tube current along z)
            slices = batch.shape[-1] if batch.ndim == 5 else 1
            if i0.numel() != slices:
                raise ValueError(f"the header has {i0.numel()} per-slice exposures but the image has {slices} axial slices.")
            i0 = i0.reshape(1, -1).repeat_interleave(batch.shape[1], dim=1)  # slices are (D, C) ordered
        seed = self._seed_for(seed, randomize)
        noise = low_dose_ct_noise(batch, dose, self._spacing(img), self.scan, self.domain, self.input_noise,
                                  _generator(seed, batch.device), i0=i0)
        return _wrap(batch + noise, img)


class RicianMRNoise(_SeededNoise):
    """Add Rician (one coil) or noncentral-chi (``num_coils`` > 1) noise to a magnitude MR image.

    Each coil receives complex Gaussian noise of std ``s`` per part and the magnitude is the
    root sum of squares, so ``E[M^2] = A^2 + 2 L s^2`` (docs/transforms.md). Unlike
    ``monai.transforms.RicianNoise``, the level is explicit: ``s = std`` (``relative_to=
    "absolute"``), ``std * max(img)`` (``"max"``, BrainWeb's percentages) or
    ``std * percentile(img, percentile)`` (``"percentile"``).
    """

    def __init__(
        self, std: float = 0.03, relative_to: str = "max", num_coils: int = 1, percentile: float = 99.0
    ) -> None:
        if not np.isfinite(std) or std < 0:
            raise ValueError(f"std must be finite and >= 0, got {std}.")
        if relative_to not in RELATIVE_TO:
            raise ValueError(f"relative_to must be one of {RELATIVE_TO}, got {relative_to!r}.")
        if int(num_coils) != num_coils or num_coils < 1:
            raise ValueError(f"num_coils must be an integer >= 1, got {num_coils}.")
        _check_range("percentile", percentile, 0.0, 100.0)
        self.std, self.relative_to, self.num_coils, self.percentile = float(std), relative_to, int(num_coils), percentile

    def __call__(
        self, img: NdarrayOrTensor, std: float | None = None, seed: int | None = None, randomize: bool = True
    ) -> NdarrayOrTensor:
        """Args: img (C, H, W[, D]) magnitude; ``std`` overrides the constructor's."""
        if std is not None and (not np.isfinite(std) or std < 0):
            raise ValueError(f"std must be finite and >= 0, got {std}.")
        batch = _as_batch(img)
        seed = self._seed_for(seed, randomize)
        s = resolve_noise_std(batch, self.std if std is None else std, self.relative_to, self.percentile)
        noisy = noncentral_chi_noise(batch, s, self.num_coils, _generator(seed, batch.device))
        return _wrap(noisy, img)


class _RandLevel(RandomizableTransform):
    """Applies ``self.transform`` with probability ``prob`` at a level drawn from ``[low, high]``."""

    backend = _SeededNoise.backend

    def __init__(self, transform: _SeededNoise, level_range: tuple[float, float], prob: float) -> None:
        RandomizableTransform.__init__(self, prob)
        self.transform, self.level_range = transform, level_range

    def randomize(self, data=None) -> None:
        super().randomize(None)
        if self._do_transform:
            self._level = self.R.uniform(*self.level_range)
            self._seed = self.R.randint(2**31)

    level_name = "level"

    def __call__(self, img: NdarrayOrTensor, randomize: bool = True) -> NdarrayOrTensor:
        if randomize:
            self.randomize()
        if not self._do_transform:
            return _wrap(_as_batch(img), img)
        return self.transform(img, seed=self._seed, **{self.level_name: self._level})


class RandLowDoseCTNoise(_RandLevel):
    """:class:`LowDoseCTNoise` with probability ``prob`` at a dose drawn uniformly from ``dose_fraction``.

    Args:
        dose_fraction: (min, max) in (0, 1]. Other arguments as :class:`LowDoseCTNoise` (``target_mas``
            must stay ``None``: the dose is drawn).
    """

    level_name = "dose_fraction"

    def __init__(self, prob: float = 1.0, dose_fraction: Sequence[float] = (0.1, 0.5), **kwargs) -> None:
        low, high = _check_range("dose_fraction", dose_fraction, 0.0, 1.0)
        if kwargs.get("target_mas") is not None:
            raise ValueError("target_mas: the random version draws dose_fraction from its range; use LowDoseCTNoise "
                             "for a target exposure.")
        super().__init__(LowDoseCTNoise(dose_fraction=high, **kwargs), (low, high), prob)


class RandRicianMRNoise(_RandLevel):
    """:class:`RicianMRNoise` with probability ``prob`` at a level drawn uniformly from ``std``.

    Unlike ``monai.transforms.RandRicianNoise`` (which draws s ~ U(0, std) unless told
    otherwise), the range is exactly the one you pass.

    Args:
        std: (min, max) noise level, in the units chosen by ``relative_to``.
    """

    level_name = "std"

    def __init__(self, prob: float = 1.0, std: Sequence[float] = (0.01, 0.05), **kwargs) -> None:
        low, high = _check_range("std", std, 0.0, float("inf"), low_open=False)
        super().__init__(RicianMRNoise(std=high, **kwargs), (low, high), prob)
