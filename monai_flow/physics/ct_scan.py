"""CT units and acquisition parameters, validated in one place.

Units: attenuation ``mu`` in 1/mm, Hounsfield units (HU), line integrals dimensionless, photon
counts per detector bin and view, pixel spacing and geometry distances in mm, angles in radians,
exposure in mAs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = [
    "BOWTIE_SHAPES",
    "CT_DOMAINS",
    "CT_FILTERS",
    "CT_GEOMETRIES",
    "DETECTOR_SHAPES",
    "MODULATIONS",
    "INPUT_NOISE",
    "MU_WATER_PER_MM",
    "CTScan",
    "check_domain",
    "check_input_noise",
    "check_spacing",
    "hu_to_mu",
    "mu_to_hu",
]

#: Linear attenuation coefficient of water at about 70 keV effective energy, in 1/mm.
MU_WATER_PER_MM = 0.0192
CT_FILTERS = ("ramp", "shepp-logan", "hann")
CT_GEOMETRIES = ("parallel", "fan")
DETECTOR_SHAPES = ("arc", "flat")
BOWTIE_SHAPES = ("cylinder",)
MODULATIONS = ("auto",)
PARALLEL_VIEWS = 720  # default views over 180 degrees
FAN_VIEWS = 1152  # default views per rotation: Siemens SOMATOM Definition AS, no flying focal spot
FAN_CHANNELS = 736  # default channels, same scanner
CT_DOMAINS = ("projection", "image")
INPUT_NOISE = ("full_dose", "none")


def hu_to_mu(hu: torch.Tensor, mu_water: float = MU_WATER_PER_MM) -> torch.Tensor:
    """Hounsfield units to linear attenuation (1/mm), clipped at 0 (nothing attenuates < air)."""
    return (mu_water * (1.0 + hu / 1000.0)).clamp_min(0.0)


def mu_to_hu(mu: torch.Tensor, mu_water: float = MU_WATER_PER_MM) -> torch.Tensor:
    """Linear attenuation (1/mm) to Hounsfield units."""
    return 1000.0 * (mu / mu_water - 1.0)


def _positive(name: str, value, unit: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ValueError(f"{name} must be a finite number > 0 ({unit}), got {value!r}.")
    return float(value)


def check_spacing(spacing: Sequence[float]) -> tuple[float, float]:
    """In-plane pixel spacing ``(dy, dx)`` in mm, both finite and > 0."""
    values = tuple(spacing) if isinstance(spacing, Sequence) else ()
    if len(values) != 2 or not all(isinstance(s, (int, float)) and 0 < s < math.inf for s in values):
        raise ValueError(f"spacing must be two positive in-plane values (dy, dx) in mm, got {spacing!r}.")
    return float(values[0]), float(values[1])


def check_slice_geometry(shape: Sequence[int], spacing: Sequence[float], num_views: int,
                         filter_name: str) -> tuple[tuple[int, int], tuple[float, float]]:
    """What every projector checks: slice ``shape`` (H, W) both >= 2, ``spacing`` (:func:`check_spacing`),
    ``num_views`` >= 1 and a known FBP ``filter_name``. Returns (shape, spacing) as ints and floats."""
    if len(shape) != 2 or min(shape) < 2:
        raise ValueError(f"shape must be (H, W) with both >= 2, got {tuple(shape)}.")
    if num_views < 1:
        raise ValueError(f"num_views must be >= 1, got {num_views}.")
    if filter_name not in CT_FILTERS:
        raise ValueError(f"filter_name must be one of {CT_FILTERS}, got {filter_name!r}.")
    return (int(shape[0]), int(shape[1])), check_spacing(spacing)


def check_domain(domain: str) -> str:
    if domain not in CT_DOMAINS:
        raise ValueError(f"domain must be one of {CT_DOMAINS}, got {domain!r}.")
    return domain


def check_input_noise(input_noise: str) -> str:
    if input_noise not in INPUT_NOISE:
        raise ValueError(f"input_noise must be one of {INPUT_NOISE}, got {input_noise!r}.")
    return input_noise


def _finite(name: str, value, unit: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number ({unit}), got {value!r}.")
    return float(value)


def _profile(name: str, value, length: int | None, what: str) -> tuple[float, ...]:
    """A per-channel or per-view profile of relative flux: finite values > 0, ``length`` of them."""
    try:
        values = tuple(float(v) for v in (value.detach().cpu().reshape(-1).tolist() if hasattr(value, "detach")
                                          else list(value)))
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a sequence of relative fluxes ({what}), got {value!r}.") from None
    if not values or not all(math.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"{name} must hold finite relative fluxes > 0 ({what}), got {value!r}.")
    if length is None:
        raise ValueError(f"{name} given as an array needs the number of {what.split()[-1]} fixed: pass "
                         f"{'num_bins' if 'channel' in what or 'bin' in what else 'num_views'} too.")
    if len(values) != length:
        raise ValueError(f"{name} has {len(values)} values but the scan has {length} {what}.")
    return values


@dataclass(frozen=True)
class CTScan:
    """Acquisition parameters of a (full-dose) CT scan: validated here, once, for every caller.

    Args:
        i0: incident photons per detector bin (channel) and view at full dose, at the central channel
            without bowtie and at the nominal tube current (1e5..1e6 typical).
        electronic_std: electronic (readout) noise std in counts per bin; dose independent (3..10).
        mu_water: attenuation of water in 1/mm (0.0192 at about 70 keV).
        num_views: views per scan: over 180 degrees for ``geometry="parallel"`` (default 720), over
            360 degrees for ``"fan"`` (default 1152, a Siemens SOMATOM Definition AS rotation
            without flying focal spot).
        num_bins: parallel: detector bins (``None``: cover the slice diagonal, bins of the pixel
            size); fan: detector channels (``None``: 736).
        filter_name: FBP filter, "ramp" (Ram-Lak), "shepp-logan" or "hann" (sets the noise texture).
        geometry: "parallel" or "fan" (third-generation fan beam, full 360 degree scan).
        source_isocentre_mm: fan: source to rotation centre distance, mm (595).
        source_detector_mm: fan: source to detector distance, mm (1085.6); > source_isocentre_mm.
        channel_pitch_mm: fan: detector channel pitch measured at the detector, mm (1.2858: with
            736 channels a 49.9 degree fan, 500 mm field of view).
        detector_shape: fan: "arc" (equiangular, centred on the source: clinical) or "flat"
            (equispaced, as ASTRA's and ODL's fan beam).
        detector_offset: fan: shift of the channel grid, in channels (0.25: the quarter-detector
            offset of third-generation scanners, which interleaves opposite views).
        bowtie: per-channel (per-bin) relative incident flux: ``None`` (flat), ``"cylinder"`` (a
            filter that evens out the path through a water cylinder of ``bowtie_radius_mm``, with a
            transmission of at least ``bowtie_min`` relative to the centre) or a sequence of
            ``num_bins`` relative fluxes.
        bowtie_radius_mm: radius of the water cylinder the "cylinder" bowtie compensates, mm (160).
        bowtie_min: lowest relative transmission of the "cylinder" bowtie, at the edge (0.1).
        modulation: per-view relative tube current (angular modulation): ``None`` (constant), a
            sequence of ``num_views`` values, or ``"auto"`` (from each slice's projection, current
            proportional to the square root of the view's attenuation, Gies et al. 1999, scaled to
            a mean of 1 over the scan: the same mAs as without modulation).
        reference_mas: the exposure (mAs) at which a scan has ``i0`` photons; with it, an exposure
            read from a header gives ``i0 * mAs / reference_mas`` photons (``None``: exposures are only
            compared with each other, e.g. a target exposure against the input's).
    """

    i0: float = 1e5
    electronic_std: float = 5.0
    mu_water: float = MU_WATER_PER_MM
    num_views: int | None = None
    num_bins: int | None = None
    filter_name: str = "ramp"
    geometry: str = "parallel"
    source_isocentre_mm: float = 595.0
    source_detector_mm: float = 1085.6
    channel_pitch_mm: float = 1.2858
    detector_shape: str = "arc"
    detector_offset: float = 0.25
    bowtie: str | tuple[float, ...] | None = None
    bowtie_radius_mm: float = 160.0
    bowtie_min: float = 0.1
    modulation: str | tuple[float, ...] | None = None
    reference_mas: float | None = None

    def __post_init__(self) -> None:
        _positive("i0", self.i0, "photons per bin and view")
        _positive("mu_water", self.mu_water, "1/mm")
        e = self.electronic_std
        if isinstance(e, bool) or not isinstance(e, (int, float)) or not 0 <= e < math.inf:
            raise ValueError(f"electronic_std must be finite and >= 0 counts, got {e!r}.")
        if self.geometry not in CT_GEOMETRIES:
            raise ValueError(f"geometry must be one of {CT_GEOMETRIES}, got {self.geometry!r}.")
        fan = self.geometry == "fan"
        for name in ("num_views", "num_bins"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")
        if self.filter_name not in CT_FILTERS:
            raise ValueError(f"filter_name must be one of {CT_FILTERS}, got {self.filter_name!r}.")
        views = int(self.num_views) if self.num_views is not None else (FAN_VIEWS if fan else PARALLEL_VIEWS)
        bins = int(self.num_bins) if self.num_bins is not None else (FAN_CHANNELS if fan else None)
        radius = _positive("source_isocentre_mm", self.source_isocentre_mm, "mm")
        distance = _positive("source_detector_mm", self.source_detector_mm, "mm")
        pitch = _positive("channel_pitch_mm", self.channel_pitch_mm, "mm at the detector")
        if self.detector_shape not in DETECTOR_SHAPES:
            raise ValueError(f"detector_shape must be one of {DETECTOR_SHAPES}, got {self.detector_shape!r}.")
        offset = _finite("detector_offset", self.detector_offset, "channels")
        if fan:
            if distance <= radius:
                raise ValueError(f"source_detector_mm ({distance:g} mm) must exceed source_isocentre_mm ({radius:g} mm): "
                                 "the detector would lie inside the source circle, between the source and the "
                                 "rotation centre.")
            if bins < 2:
                raise ValueError(f"num_bins must be at least 2 channels for a fan beam, got {bins}.")
            if abs(offset) >= bins / 4:
                raise ValueError(f"detector_offset must be less than a quarter of the channels in size, got {offset:g}.")
            if self.detector_shape == "arc" and (bins / 2 + abs(offset)) * pitch / distance >= math.pi / 2:
                raise ValueError(f"channel_pitch_mm: {bins} channels of {pitch:g} mm on an arc of radius {distance:g} mm "
                                 "span a fan of 180 degrees or more.")
        # bowtie: a shape with its parameters, or one relative flux per bin/channel
        _positive("bowtie_radius_mm", self.bowtie_radius_mm, "mm")
        bmin = _positive("bowtie_min", self.bowtie_min, "relative transmission")
        if bmin > 1:
            raise ValueError(f"bowtie_min must lie in (0, 1] (relative transmission at the edge), got {bmin:g}.")
        bowtie = self.bowtie
        if bowtie is not None and not (isinstance(bowtie, str) and bowtie in BOWTIE_SHAPES):
            if isinstance(bowtie, str):
                raise ValueError(f"bowtie must be None, one of {BOWTIE_SHAPES} or a sequence of relative fluxes, got {bowtie!r}.")
            bowtie = _profile("bowtie", bowtie, bins, "detector channels" if fan else "detector bins")
        modulation = self.modulation
        if modulation is not None and not (isinstance(modulation, str) and modulation in MODULATIONS):
            if isinstance(modulation, str):
                raise ValueError(f"modulation must be None, one of {MODULATIONS} or a sequence of relative tube "
                                 f"currents, got {modulation!r}.")
            modulation = _profile("modulation", modulation, views, "views")
        if self.reference_mas is not None:
            _positive("reference_mas", self.reference_mas, "mAs")
        for name, value in (("i0", float(self.i0)), ("electronic_std", float(e)), ("mu_water", float(self.mu_water)),
                            ("num_views", views), ("num_bins", bins), ("source_isocentre_mm", radius),
                            ("source_detector_mm", distance), ("channel_pitch_mm", pitch), ("detector_offset", offset),
                            ("bowtie", bowtie), ("bowtie_radius_mm", float(self.bowtie_radius_mm)), ("bowtie_min", bmin),
                            ("modulation", modulation),
                            ("reference_mas", None if self.reference_mas is None else float(self.reference_mas))):
            object.__setattr__(self, name, value)

    @property
    def hu_per_mu(self) -> float:
        """d(HU) / d(mu): converts attenuation (1/mm) differences to HU."""
        return 1000.0 / self.mu_water

    @property
    def fan_angle(self) -> float:
        """Fan beam: angle (radians) between the outer edges of the outermost channels."""
        k = self.num_bins / 2 + abs(self.detector_offset)
        half = k * self.channel_pitch_mm / self.source_detector_mm
        return 2 * (half if self.detector_shape == "arc" else math.atan(half))

    @property
    def field_of_view_mm(self) -> float | None:
        """Fan beam: radius (mm) of the circle about the rotation centre that every view covers;
        ``None`` for parallel beam (the detector covers the slice)."""
        if self.geometry != "fan":
            return None
        k = self.num_bins / 2 - abs(self.detector_offset)
        half = k * self.channel_pitch_mm / self.source_detector_mm
        return self.source_isocentre_mm * math.sin(half if self.detector_shape == "arc" else math.atan(half))

    def photons_for_exposure(self, exposure_mas):
        """Photons per bin ``i0 * mAs / reference_mas`` for an exposure in mAs (float or tensor)."""
        if self.reference_mas is None:
            raise ValueError("reference_mas is not set: an exposure in mAs cannot be turned into photons per bin; "
                             "set reference_mas (the exposure at which the scan has i0 photons).")
        return exposure_mas * (self.i0 / self.reference_mas)
