"""Dictionary versions of :mod:`monai_flow.transforms.array` (``...d``, aliases ``...D``, ``...Dict``).

The random versions draw one level per call, shared by all ``keys``, and an independent noise
realisation per key (two keys holding the same image give two independent degradations).

Every constructor spells out the parameters of its array transform, with the same defaults
(``tests/test_dictionary_transforms.py`` checks this against the array signatures), and hands the
array transform it builds to a shared base: :class:`_SeededNoised` (fixed level) or
:class:`_RandLeveld` (random level). The parameters after ``keys`` (``keys, prob`` for the random
versions) are keyword-only, so new ones can be added anywhere without changing the meaning of
existing calls.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, Randomizable, RandomizableTransform

# MU_WATER_PER_MM through .array: it is the array default we mirror, wherever array.py imports it from.
from .array import _SCAN, MU_WATER_PER_MM, LowDoseCTNoise, RandLowDoseCTNoise, RandRicianMRNoise, RicianMRNoise

__all__ = [
    "LowDoseCTNoised", "LowDoseCTNoiseD", "LowDoseCTNoiseDict",
    "RandLowDoseCTNoised", "RandLowDoseCTNoiseD", "RandLowDoseCTNoiseDict",
    "RicianMRNoised", "RicianMRNoiseD", "RicianMRNoiseDict",
    "RandRicianMRNoised", "RandRicianMRNoiseD", "RandRicianMRNoiseDict",
]


class _SeededNoised(Randomizable, MapTransform):
    """Applies a fixed-level noise transform to each key with its own seed from ``self.R``.

    Args:
        keys: keys of the corresponding items to be transformed.
        transform: the array transform (:class:`LowDoseCTNoise` or :class:`RicianMRNoise`),
            called as ``transform(img, seed=...)``.
        allow_missing_keys: don't raise exception if key is missing.
    """

    def __init__(
        self, keys: KeysCollection, transform: LowDoseCTNoise | RicianMRNoise, allow_missing_keys: bool = False
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.transform = transform
        self.backend = self.transform.backend

    def randomize(self, data=None) -> None:
        self._seeds = [self.R.randint(2**31) for _ in self.keys]

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        self.randomize()
        for key, seed in self.key_iterator(d, self._seeds):
            d[key] = self.transform(d[key], seed=seed)
        return d


class _RandLeveld(RandomizableTransform, MapTransform):
    """Applies a random-level noise transform: one level per call, one seed per key.

    Args:
        keys: keys of the corresponding items to be transformed.
        rand: the array transform (:class:`RandLowDoseCTNoise` or :class:`RandRicianMRNoise`),
            built with ``prob=1.0``; its ``level_range`` and ``transform`` are used, its own
            random state is not.
        prob: probability of applying the noise (to all keys or none).
        allow_missing_keys: don't raise exception if key is missing.
    """

    def __init__(
        self,
        keys: KeysCollection,
        rand: RandLowDoseCTNoise | RandRicianMRNoise,
        prob: float = 1.0,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.rand = rand
        self.backend = self.rand.backend

    def randomize(self, data=None) -> None:
        super().randomize(None)
        self._level = self.R.uniform(*self.rand.level_range)
        self._seeds = [self.R.randint(2**31) for _ in self.keys]

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        self.randomize()
        if not self._do_transform:
            return d
        for key, seed in self.key_iterator(d, self._seeds):
            d[key] = self.rand.transform(d[key], seed=seed, **{self.rand.level_name: self._level})
        return d


class LowDoseCTNoised(_SeededNoised):
    """
    Dictionary-based version :py:class:`monai_flow.transforms.LowDoseCTNoise`.
    Simulate a lower-dose CT scan of CT images in Hounsfield units, channel-first ``(C, H, W)``
    or ``(C, H, W, D)`` with (H, W) the axial plane. Every key gets its own noise realisation
    (its own seed drawn from ``self.R``, so ``set_random_state`` makes the output repeatable):
    two keys holding the same image give two independent low-dose scans of it.
    Physics and limits: docs/transforms.md.

    Args:
        keys: keys of the corresponding items to be transformed.
            See also: :py:class:`monai.transforms.compose.MapTransform`
        dose_fraction: simulated dose relative to the input's, in (0, 1]; the incident photon
            count becomes ``dose_fraction * i0`` per detector bin and view.
        i0: full-dose incident photons per detector bin (channel) and view, at the central channel
            without bowtie and at the nominal tube current (1e5..1e6 typical).
        electronic_std: standard deviation of the electronic (read-out) noise, in counts per
            detector bin and view (3..10 typical); it does not scale with the dose.
        mu_water: linear attenuation coefficient of water in 1/mm, which converts HU to
            attenuation (0.0192 1/mm: water at about 70 keV).
        domain: ``"projection"``: HU -> attenuation with the pixel ``spacing``, line integrals of
            each axial slice in the chosen ``geometry``, Poisson-Gaussian noise in the sinogram and
            filtered back-projection of the noise alone, added to the input. ``"image"``: stationary
            Gaussian noise with a ramp-shaped spectrum and the variance the projection model
            gives at the slice centre (faster, no streaks).
        num_views: number of projection views over 180 degrees (parallel; ``None``: 720) or 360
            degrees (fan; ``None``: 1152); also sets the noise level of ``domain="image"``.
        num_bins: number of detector bins per view (parallel; ``None``: enough to cover the slice
            diagonal) or of detector channels (fan; ``None``: 736).
        filter_name: filtered back-projection filter, ``"ramp"``, ``"shepp-logan"`` or ``"hann"``;
            it sets the noise texture.
        input_noise: ``"full_dose"``: the input is a real full-dose scan, add only the extra
            noise of the lower dose (Yu et al. 2012); ``"none"``: the input is noise-free (e.g. a
            phantom), simulate the whole Poisson-Gaussian acquisition at ``dose_fraction * i0``
            photons per detector bin and view.
        spacing: in-plane pixel spacing in mm along the first two spatial axes, ``(sy, sx)``;
            ``None``: read it from each item's MetaTensor affine (required then).
        geometry: ``"parallel"`` (default; fastest, see docs/transforms.md for why it stays the
            default) or ``"fan"``: third-generation fan beam over 360 degrees, whose parameters follow.
        source_isocentre_mm: fan: distance from the X-ray source to the rotation centre, in mm.
        source_detector_mm: fan: distance from the source to the detector, in mm; larger than
            ``source_isocentre_mm``.
        channel_pitch_mm: fan: detector channel pitch measured at the detector, in mm.
        detector_shape: fan: ``"arc"`` (equiangular, centred on the source, as clinical scanners)
            or ``"flat"`` (equispaced, as ASTRA's and ODL's fan beam).
        detector_offset: fan: shift of the channel grid in channels (0.25: the quarter-detector
            offset of third-generation scanners).
        bowtie: relative incident flux per detector channel (bin): ``None`` (flat), ``"cylinder"``
            (a filter that evens out the path through a water cylinder) or a sequence of
            ``num_bins`` values.
        bowtie_radius_mm: radius in mm of the water cylinder the ``"cylinder"`` bowtie compensates.
        bowtie_min: lowest relative transmission of the ``"cylinder"`` bowtie, in (0, 1].
        modulation: relative tube current per view: ``None`` (constant), ``"auto"`` (angular
            modulation from each slice's attenuation, mean 1) or a sequence of ``num_views`` values.
        reference_mas: exposure in mAs at which the scan has ``i0`` photons; an input whose header
            records an exposure then has ``i0 * mAs / reference_mas`` photons per bin.
        target_mas: simulate this exposure in mAs instead of ``dose_fraction``: the dose fraction
            is ``target_mas`` over the item's exposure from its metadata (DICOM header), else over
            ``reference_mas``.
        allow_missing_keys: don't raise exception if key is missing.
    """

    backend = LowDoseCTNoise.backend

    def __init__(
        self,
        keys: KeysCollection,
        *,
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
        allow_missing_keys: bool = False,
    ) -> None:
        transform = LowDoseCTNoise(
            dose_fraction=dose_fraction,
            i0=i0,
            electronic_std=electronic_std,
            mu_water=mu_water,
            domain=domain,
            num_views=num_views,
            num_bins=num_bins,
            filter_name=filter_name,
            input_noise=input_noise,
            spacing=spacing,
            geometry=geometry,
            source_isocentre_mm=source_isocentre_mm,
            source_detector_mm=source_detector_mm,
            channel_pitch_mm=channel_pitch_mm,
            detector_shape=detector_shape,
            detector_offset=detector_offset,
            bowtie=bowtie,
            bowtie_radius_mm=bowtie_radius_mm,
            bowtie_min=bowtie_min,
            modulation=modulation,
            reference_mas=reference_mas,
            target_mas=target_mas,
        )
        super().__init__(keys, transform, allow_missing_keys)


class RandLowDoseCTNoised(_RandLeveld):
    """
    Dictionary-based version :py:class:`monai_flow.transforms.RandLowDoseCTNoise`.
    With probability ``prob``, simulate a lower-dose CT scan (see :py:class:`LowDoseCTNoised`) at
    a dose fraction drawn uniformly from ``dose_fraction``. One dose fraction is drawn per call
    and shared by all keys; every key gets its own noise realisation (two keys holding the same
    image give two independent scans at the same dose). All draws come from ``self.R``.

    Args:
        keys: keys of the corresponding items to be transformed.
            See also: :py:class:`monai.transforms.compose.MapTransform`
        prob: probability of degrading the dictionary (all keys or none).
        dose_fraction: (min, max) range of the simulated dose relative to the input's, within
            (0, 1]; the incident photon count becomes ``dose_fraction * i0`` per detector bin
            and view.
        i0: full-dose incident photons per detector bin (channel) and view, at the central channel
            without bowtie and at the nominal tube current (1e5..1e6 typical).
        electronic_std: standard deviation of the electronic (read-out) noise, in counts per
            detector bin and view (3..10 typical); it does not scale with the dose.
        mu_water: linear attenuation coefficient of water in 1/mm, which converts HU to
            attenuation (0.0192 1/mm: water at about 70 keV).
        domain: ``"projection"``: HU -> attenuation with the pixel ``spacing``, line integrals of
            each axial slice in the chosen ``geometry``, Poisson-Gaussian noise in the sinogram and
            filtered back-projection of the noise alone, added to the input. ``"image"``: stationary
            Gaussian noise with a ramp-shaped spectrum and the variance the projection model
            gives at the slice centre (faster, no streaks).
        num_views: number of projection views over 180 degrees (parallel; ``None``: 720) or 360
            degrees (fan; ``None``: 1152); also sets the noise level of ``domain="image"``.
        num_bins: number of detector bins per view (parallel; ``None``: enough to cover the slice
            diagonal) or of detector channels (fan; ``None``: 736).
        filter_name: filtered back-projection filter, ``"ramp"``, ``"shepp-logan"`` or ``"hann"``;
            it sets the noise texture.
        input_noise: ``"full_dose"``: the input is a real full-dose scan, add only the extra
            noise of the lower dose (Yu et al. 2012); ``"none"``: the input is noise-free (e.g. a
            phantom), simulate the whole Poisson-Gaussian acquisition at ``dose_fraction * i0``
            photons per detector bin and view.
        spacing: in-plane pixel spacing in mm along the first two spatial axes, ``(sy, sx)``;
            ``None``: read it from each item's MetaTensor affine (required then).
        geometry: ``"parallel"`` (default; fastest, see docs/transforms.md for why it stays the
            default) or ``"fan"``: third-generation fan beam over 360 degrees, whose parameters follow.
        source_isocentre_mm: fan: distance from the X-ray source to the rotation centre, in mm.
        source_detector_mm: fan: distance from the source to the detector, in mm; larger than
            ``source_isocentre_mm``.
        channel_pitch_mm: fan: detector channel pitch measured at the detector, in mm.
        detector_shape: fan: ``"arc"`` (equiangular, centred on the source, as clinical scanners)
            or ``"flat"`` (equispaced, as ASTRA's and ODL's fan beam).
        detector_offset: fan: shift of the channel grid in channels (0.25: the quarter-detector
            offset of third-generation scanners).
        bowtie: relative incident flux per detector channel (bin): ``None`` (flat), ``"cylinder"``
            (a filter that evens out the path through a water cylinder) or a sequence of
            ``num_bins`` values.
        bowtie_radius_mm: radius in mm of the water cylinder the ``"cylinder"`` bowtie compensates.
        bowtie_min: lowest relative transmission of the ``"cylinder"`` bowtie, in (0, 1].
        modulation: relative tube current per view: ``None`` (constant), ``"auto"`` (angular
            modulation from each slice's attenuation, mean 1) or a sequence of ``num_views`` values.
        reference_mas: exposure in mAs at which the scan has ``i0`` photons; an input whose header
            records an exposure then has ``i0 * mAs / reference_mas`` photons per bin.
        target_mas: must stay ``None`` (the random version draws the dose fraction).
        allow_missing_keys: don't raise exception if key is missing.
    """

    backend = RandLowDoseCTNoise.backend

    def __init__(
        self,
        keys: KeysCollection,
        prob: float = 1.0,
        *,
        dose_fraction: Sequence[float] = (0.1, 0.5),
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
        allow_missing_keys: bool = False,
    ) -> None:
        rand = RandLowDoseCTNoise(
            prob=1.0,
            dose_fraction=dose_fraction,
            i0=i0,
            electronic_std=electronic_std,
            mu_water=mu_water,
            domain=domain,
            num_views=num_views,
            num_bins=num_bins,
            filter_name=filter_name,
            input_noise=input_noise,
            spacing=spacing,
            geometry=geometry,
            source_isocentre_mm=source_isocentre_mm,
            source_detector_mm=source_detector_mm,
            channel_pitch_mm=channel_pitch_mm,
            detector_shape=detector_shape,
            detector_offset=detector_offset,
            bowtie=bowtie,
            bowtie_radius_mm=bowtie_radius_mm,
            bowtie_min=bowtie_min,
            modulation=modulation,
            reference_mas=reference_mas,
            target_mas=target_mas,
        )
        super().__init__(keys, rand, prob, allow_missing_keys)


class RicianMRNoised(_SeededNoised):
    """
    Dictionary-based version :py:class:`monai_flow.transforms.RicianMRNoise`.
    Add Rician (one coil) or noncentral-chi (``num_coils`` > 1) noise to magnitude MR images,
    channel-first ``(C, H, W)`` or ``(C, H, W, D)``: each coil receives complex Gaussian noise of
    standard deviation ``s`` per real and imaginary part and the magnitude is the root sum of
    squares. Every key gets its own noise realisation (its own seed drawn from ``self.R``, so
    ``set_random_state`` makes the output repeatable). Unlike ``monai.transforms.RicianNoised``,
    the level is explicit. Physics and limits: docs/transforms.md.

    Args:
        keys: keys of the corresponding items to be transformed.
            See also: :py:class:`monai.transforms.compose.MapTransform`
        std: noise level ``>= 0``, in the units chosen by ``relative_to``.
        relative_to: ``"absolute"``: ``s = std`` in image intensity units; ``"max"``: ``std`` is a
            fraction of the maximum of each image (BrainWeb's "3%" is ``std=0.03``);
            ``"percentile"``: ``std`` is a fraction of each image's ``percentile``-th intensity
            (robust to a few bright voxels).
        num_coils: number of receiver coils ``L >= 1`` combined by root sum of squares
            (1: Rician; more: noncentral chi with ``2 L`` degrees of freedom).
        percentile: percentile in (0, 100] of the intensities that ``std`` is relative to when
            ``relative_to="percentile"`` (ignored otherwise).
        allow_missing_keys: don't raise exception if key is missing.
    """

    backend = RicianMRNoise.backend

    def __init__(
        self,
        keys: KeysCollection,
        *,
        std: float = 0.03,
        relative_to: str = "max",
        num_coils: int = 1,
        percentile: float = 99.0,
        allow_missing_keys: bool = False,
    ) -> None:
        transform = RicianMRNoise(std=std, relative_to=relative_to, num_coils=num_coils, percentile=percentile)
        super().__init__(keys, transform, allow_missing_keys)


class RandRicianMRNoised(_RandLeveld):
    """
    Dictionary-based version :py:class:`monai_flow.transforms.RandRicianMRNoise`.
    With probability ``prob``, add Rician or noncentral-chi noise (see :py:class:`RicianMRNoised`)
    at a level drawn uniformly from ``std``. One level is drawn per call and shared by all keys;
    every key gets its own noise realisation. All draws come from ``self.R``. Unlike
    ``monai.transforms.RandRicianNoised`` (which draws the level from (0, std) unless told
    otherwise), the range is exactly the one passed.

    Args:
        keys: keys of the corresponding items to be transformed.
            See also: :py:class:`monai.transforms.compose.MapTransform`
        prob: probability of adding noise to the dictionary (all keys or none).
        std: (min, max) range of the noise level, ``0 <= min <= max``, in the units chosen by
            ``relative_to``.
        relative_to: ``"absolute"``: ``s = std`` in image intensity units; ``"max"``: ``std`` is a
            fraction of the maximum of each image (BrainWeb's "3%" is ``std=0.03``);
            ``"percentile"``: ``std`` is a fraction of each image's ``percentile``-th intensity
            (robust to a few bright voxels).
        num_coils: number of receiver coils ``L >= 1`` combined by root sum of squares
            (1: Rician; more: noncentral chi with ``2 L`` degrees of freedom).
        percentile: percentile in (0, 100] of the intensities that ``std`` is relative to when
            ``relative_to="percentile"`` (ignored otherwise).
        allow_missing_keys: don't raise exception if key is missing.
    """

    backend = RandRicianMRNoise.backend

    def __init__(
        self,
        keys: KeysCollection,
        prob: float = 1.0,
        *,
        std: Sequence[float] = (0.01, 0.05),
        relative_to: str = "max",
        num_coils: int = 1,
        percentile: float = 99.0,
        allow_missing_keys: bool = False,
    ) -> None:
        rand = RandRicianMRNoise(prob=1.0, std=std, relative_to=relative_to, num_coils=num_coils, percentile=percentile)
        super().__init__(keys, rand, prob, allow_missing_keys)


LowDoseCTNoiseD = LowDoseCTNoiseDict = LowDoseCTNoised
RandLowDoseCTNoiseD = RandLowDoseCTNoiseDict = RandLowDoseCTNoised
RicianMRNoiseD = RicianMRNoiseDict = RicianMRNoised
RandRicianMRNoiseD = RandRicianMRNoiseDict = RandRicianMRNoised
