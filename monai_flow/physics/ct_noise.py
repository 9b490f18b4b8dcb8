"""Low-dose CT noise: Poisson-Gaussian sinogram noise, reconstructed by FBP, or its image-domain
approximation. Batches are channel-first ``(B, C, H, W)`` or ``(B, C, H, W, D)`` in HU with (H, W)
the axial plane; every axial slice is simulated independently.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from monai_flow.axial import from_axial_slices, to_axial_slices

from .ct_geometry import ParallelBeamGeometry, parallel_beam_geometry
from .ct_scan import CTScan, check_domain, check_input_noise, check_spacing, hu_to_mu
from .fan_beam import FanBeamGeometry, fan_beam_geometry

__all__ = [
    "bowtie_profile",
    "check_fan_coverage",
    "fbp_noise_variance",
    "incident_flux",
    "ray_flux",
    "scan_geometry",
    "low_dose_ct_noise",
    "low_dose_noise_basis",
    "predicted_ct_noise_std",
    "sinogram_noise",
    "sinogram_noise_variance",
]

_MIN_COUNTS = 1.0  # detector reading floor (photons) before the log, avoids ln(0)
_SLICE_CHUNK = 16  # slices per projection batch: bounds memory on large volumes
_OBJECT_HU = -500.0  # what the fan must cover: pixels denser than half water (air noise and lungs' edges aside)

Geometry = ParallelBeamGeometry | FanBeamGeometry


def scan_geometry(shape: Sequence[int], spacing: Sequence[float], scan: CTScan, device="cpu") -> Geometry:
    """The (cached) parallel- or fan-beam geometry of ``scan`` for (H, W) slices of pixel ``spacing`` (mm)."""
    shape, spacing, device = (int(shape[0]), int(shape[1])), check_spacing(spacing), str(device)
    if scan.geometry == "fan":
        return fan_beam_geometry(shape, spacing, scan.num_views, scan.num_bins, scan.source_isocentre_mm,
                                 scan.source_detector_mm, scan.channel_pitch_mm, scan.detector_shape, scan.detector_offset,
                                 scan.filter_name, device)
    return parallel_beam_geometry(shape, spacing, scan.num_views, scan.num_bins, scan.filter_name, device)


def check_fan_coverage(hu: torch.Tensor, spacing: Sequence[float], scan: CTScan) -> None:
    """ValueError if a fan-beam ``scan`` does not cover the object in the (N, H, W) slices ``hu`` (HU): every
    pixel denser than -500 HU must lie inside the field of view (:attr:`CTScan.field_of_view_mm`)."""
    fov = scan.field_of_view_mm
    if fov is None:
        return
    dy, dx = check_spacing(spacing)
    h, w = hu.shape[-2:]
    y = (torch.arange(h, device=hu.device, dtype=torch.float32) - (h - 1) / 2) * dy
    x = (torch.arange(w, device=hu.device, dtype=torch.float32) - (w - 1) / 2) * dx
    radius = torch.sqrt(y[:, None] ** 2 + x[None, :] ** 2)
    inside = (hu.reshape(-1, h, w) > _OBJECT_HU).any(0)
    extent = float(radius[inside].max()) if bool(inside.any()) else 0.0
    if extent > fov + 0.5 * math.hypot(dy, dx):
        raise ValueError(f"num_bins / channel_pitch_mm: the fan ({scan.num_bins} channels of {scan.channel_pitch_mm:g} mm at "
                         f"source_detector_mm={scan.source_detector_mm:g}) covers a field of view of radius {fov:.1f} mm "
                         f"but the object extends {extent:.1f} mm from the rotation centre; use more or wider channels.")


def bowtie_profile(geometry: Geometry, scan: CTScan) -> torch.Tensor:
    """Relative incident flux per detector bin / channel (L,), float64: 1 without bowtie; ``"cylinder"``:
    ``max(bowtie_min, exp(-mu_water (2 r - chord_r(s))))``, the transmission of a filter that evens out the
    path through a water cylinder of radius r = ``bowtie_radius_mm`` for the rays at distance s from the
    rotation centre (1 at the centre); or the given per-channel values."""
    if scan.bowtie is None:
        return torch.ones(geometry.num_bins, dtype=torch.float64)
    if isinstance(scan.bowtie, tuple):
        if len(scan.bowtie) != geometry.num_bins:
            raise ValueError(f"bowtie has {len(scan.bowtie)} values but the detector has {geometry.num_bins} bins.")
        return torch.tensor(scan.bowtie, dtype=torch.float64)
    if isinstance(geometry, FanBeamGeometry):
        s = geometry.s
    else:
        s = (torch.arange(geometry.num_bins, dtype=torch.float64) - (geometry.num_bins - 1) / 2) * geometry.bin_spacing
    r = scan.bowtie_radius_mm
    chord = 2 * torch.sqrt((r * r - s * s).clamp_min(0))
    return torch.exp(-scan.mu_water * (2 * r - chord)).clamp_min(scan.bowtie_min)


def _view_modulation(scan: CTScan, sinogram: torch.Tensor | None, num_views: int) -> torch.Tensor | None:
    """Relative tube current per view, (N, V) or (1, V), or None (constant). ``"auto"``: proportional to
    ``exp(max_channels p / 2)`` (square root of the view's largest attenuation), mean 1 per slice."""
    if scan.modulation is None:
        return None
    if isinstance(scan.modulation, tuple):
        return torch.tensor(scan.modulation, dtype=torch.float64)[None]
    current = torch.exp(0.5 * sinogram.double().amax(-1))
    return current / current.mean(-1, keepdim=True)


def incident_flux(geometry: Geometry, scan: CTScan, sinogram: torch.Tensor | None = None) -> torch.Tensor | None:
    """Relative incident flux per ray (N or 1, V, L): bowtie times tube-current modulation; None when both
    are constant. ``sinogram`` (N, V, L) is needed for ``modulation="auto"``."""
    if scan.bowtie is None and scan.modulation is None:
        return None
    device = sinogram.device if sinogram is not None else torch.device("cpu")
    flux = bowtie_profile(geometry, scan).to(device)[None, None, :]
    modulation = _view_modulation(scan, sinogram, geometry.num_views)
    if modulation is not None:
        flux = flux * modulation.to(device)[:, :, None]
    return flux


def ray_flux(geometry: Geometry, scan: CTScan | None, mu: torch.Tensor, points: torch.Tensor,
             num_angles: int) -> torch.Tensor | None:
    """Relative incident flux (N or 1, P, A) of the rays through ``points`` at ``num_angles`` angles
    (those of :meth:`line_integrals_through`): the bowtie at each ray's channel times the modulation at
    its view, both interpolated linearly; None when constant. ``mu`` (N, H, W) for ``"auto"``."""
    if scan is None or (scan.bowtie is None and scan.modulation is None):
        return None
    channels = geometry.ray_channels(points, num_angles)  # (P, A) fractional
    flux = _interpolate(bowtie_profile(geometry, scan), channels, periodic=False)[None]
    sinogram = geometry.project(mu.to(torch.float32)) if scan.modulation == "auto" else None
    modulation = _view_modulation(scan, sinogram, geometry.num_views)
    if modulation is not None:
        modulation = modulation.cpu()
        turn = 2 * math.pi if isinstance(geometry, FanBeamGeometry) else math.pi
        views = geometry.view_angles(num_angles) / turn * geometry.num_views  # (A,) fractional view index
        flux = flux * torch.stack([_interpolate(m, views, periodic=True) for m in modulation])[:, None, :]
    return flux.to(mu.device, mu.dtype)


def _interpolate(values: torch.Tensor, position: torch.Tensor, periodic: bool) -> torch.Tensor:
    """Linear interpolation of ``values`` (L,) at fractional indices ``position`` (clamped or periodic)."""
    n = values.shape[0]
    position = torch.as_tensor(position, dtype=torch.float64)
    position = torch.remainder(position, n) if periodic else position.clamp(0, n - 1)
    lo = position.floor().long().clamp_max(n - 1)
    hi = torch.remainder(lo + 1, n) if periodic else (lo + 1).clamp_max(n - 1)
    frac = position - lo
    return values[lo] * (1 - frac) + values[hi] * frac


def sinogram_noise_variance(
    p: torch.Tensor,
    dose_fraction: torch.Tensor | float,
    i0: torch.Tensor | float,
    electronic_std: float,
    input_noise: str = "full_dose",
) -> torch.Tensor:
    """Variance of the noise :func:`sinogram_noise` adds to line integrals ``p`` (N, ...).

    ``dose_fraction`` and ``i0`` are floats or (N,) tensors.
    """
    a = _per_item(dose_fraction, p)
    e_p = torch.exp(p) / _per_item(i0, p)
    if input_noise == "full_dose":  # Yu et al. 2012 increment
        return (1.0 - a) / a * e_p * (1.0 + (1.0 + a) / a * electronic_std**2 * e_p)
    if input_noise == "none":  # delta method on -ln(counts)
        return e_p / a * (1.0 + electronic_std**2 * e_p / a)
    raise ValueError(f"input_noise must be 'full_dose' or 'none', got {input_noise!r}.")


def sinogram_noise(
    sinogram: torch.Tensor,
    dose_fraction: torch.Tensor | float,
    i0: torch.Tensor | float,
    electronic_std: float,
    input_noise: str = "full_dose",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Noise to add to line integrals ``sinogram`` (N, V, L) for dose ``dose_fraction`` (N,).

    ``input_noise="full_dose"``: the sinogram is a full-dose acquisition at ``i0`` photons per bin,
    already noisy; return the Gaussian increment that lowers its dose to ``a * i0`` (Yu et al.
    2012), of variance ``(1 - a)/a * e^p/i0 * (1 + (1 + a)/a * s_e^2 e^p / i0)``.

    ``input_noise="none"``: the sinogram is noise-free; simulate the whole acquisition,
    counts ``Poisson(a i0 e^-p) + N(0, s_e^2)``, ``p_hat = -ln(max(I, 1) / (a i0))``, return
    ``p_hat - p``.
    """
    if input_noise == "full_dose":
        var = sinogram_noise_variance(sinogram, dose_fraction, i0, electronic_std, input_noise)
        return torch.sqrt(var) * _randn_like(sinogram, generator)
    if input_noise == "none":
        incident = _per_item(dose_fraction, sinogram) * _per_item(i0, sinogram)
        counts = torch.poisson((incident * torch.exp(-sinogram)).double(), generator=generator)
        counts = counts.to(sinogram.dtype) + electronic_std * _randn_like(sinogram, generator)
        return -torch.log(counts.clamp_min(_MIN_COUNTS) / incident) - sinogram
    raise ValueError(f"input_noise must be 'full_dose' or 'none', got {input_noise!r}.")


def low_dose_ct_noise(
    hu: torch.Tensor,
    dose_fraction: torch.Tensor | float,
    spacing: Sequence[float],
    scan: CTScan = CTScan(),
    domain: str = "projection",
    input_noise: str = "full_dose",
    generator: torch.Generator | None = None,
    i0: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """Noise (HU) that turns the CT batch ``hu`` into a scan at ``dose_fraction`` of the dose.

    ``domain="projection"``: HU -> mu with the pixel ``spacing`` (dy, dx) in mm, parallel-beam
    line integrals of every axial slice, Poisson-Gaussian sinogram noise (:func:`sinogram_noise`),
    and ramp-filtered FBP of the noise alone: the image itself never passes through the projector,
    so it is not blurred. ``domain="image"``: stationary Gaussian noise with a ramp-shaped noise
    power spectrum and the variance the projection model predicts at the slice centre (fast;
    docs/transforms.md).

    Args:
        hu: (B, C, H, W) or (B, C, H, W, D) in HU.
        dose_fraction: a in (0, 1], a float or one per sample (B,).
        spacing: in-plane pixel spacing (dy, dx) in mm.
        scan: the full-dose acquisition (photons, electronic noise, views, filter).
        domain: "projection" or "image".
        input_noise: "full_dose" (``hu`` is a real scan at ``scan.i0``: add the Yu et al. increment)
            or "none" (``hu`` is noise-free: simulate the whole acquisition at ``a * i0``).
        i0: photons per bin of each sample (float or (B,)), overriding ``scan.i0``.

    Returns:
        noise of the shape, dtype and device of ``hu``.
    """
    check_domain(domain)
    check_input_noise(input_noise)
    slices, per_sample = _slices(hu)
    dose, photons = (_per_slice(v, hu.shape[0], per_sample, slices) for v in (dose_fraction, scan.i0 if i0 is None else i0))
    check_fan_coverage(slices, spacing, scan)
    geometry = scan_geometry(slices.shape[-2:], spacing, scan, slices.device)
    noise = torch.empty_like(slices)
    for start in range(0, slices.shape[0], _SLICE_CHUNK):
        part = slice(start, start + _SLICE_CHUNK)
        mu = hu_to_mu(slices[part], scan.mu_water)
        if domain == "projection":
            sinogram = geometry.project(mu)
            incident = _ray_photons(photons[part], incident_flux(geometry, scan, sinogram), sinogram)
            delta_p = sinogram_noise(sinogram, dose[part], incident, scan.electronic_std, input_noise, generator)
            noise[part] = geometry.fbp(delta_p) * scan.hu_per_mu
        else:
            std = _centre_noise_std(geometry, mu, dose[part], photons[part], scan, input_noise)
            noise[part] = _ramp_textured_noise(mu.shape, geometry, generator) * (std * scan.hu_per_mu)[:, None, None]
    return _unslice(noise, hu).to(hu.dtype)


def low_dose_noise_basis(
    hu: torch.Tensor,
    spacing: Sequence[float],
    scan: CTScan = CTScan(),
    i0: torch.Tensor | float | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Two independent noise fields ``(Q, E)`` in HU, shaped like ``hu``, from which the dose-lowering
    noise of :func:`low_dose_ct_noise` (``input_noise="full_dose"``, projection domain) at ANY dose
    fraction a is exact in distribution: ``sqrt((1 - a)/a) Q + sqrt(1 - a^2)/a E``.

    The Yu et al. increment's variance per ray, ``(1 - a)/a e^p/i0 + (1 - a^2)/a^2 s_e^2 e^{2p}/i0^2``,
    splits into a quantum and an electronic part, each a fixed per-ray variance times a dose factor:
    ``Q = FBP(sqrt(e^p / i0) z1)``, ``E = FBP(s_e e^p / i0 z2)`` with independent standard normal z per
    bin. Reusing a few (Q, E) draws for many doses saves a projection per degradation (e.g. when
    training on patches of whole-slice degradations). ``E`` is None without electronic noise.

    Args:
        hu: (B, C, H, W) or (B, C, H, W, D) in HU; spacing: (dy, dx) in mm; scan: the acquisition;
        i0: photons per bin per sample (float or (B,)), overriding ``scan.i0``.
    """
    slices, per_sample = _slices(hu)
    photons = _per_slice(scan.i0 if i0 is None else i0, hu.shape[0], per_sample, slices)
    check_fan_coverage(slices, spacing, scan)
    geometry = scan_geometry(slices.shape[-2:], spacing, scan, slices.device)
    quantum = torch.empty_like(slices)
    electronic = torch.empty_like(slices) if scan.electronic_std > 0 else None
    for start in range(0, slices.shape[0], _SLICE_CHUNK):
        part = slice(start, start + _SLICE_CHUNK)
        sinogram = geometry.project(hu_to_mu(slices[part], scan.mu_water))
        relative = torch.exp(sinogram) / _ray_photons(photons[part], incident_flux(geometry, scan, sinogram), sinogram)
        quantum[part] = geometry.fbp(relative.sqrt() * _randn_like(relative, generator)) * scan.hu_per_mu
        if electronic is not None:
            field = scan.electronic_std * relative * _randn_like(relative, generator)
            electronic[part] = geometry.fbp(field) * scan.hu_per_mu
    return _unslice(quantum, hu).to(hu.dtype), None if electronic is None else _unslice(electronic, hu).to(hu.dtype)


def predicted_ct_noise_std(
    hu: torch.Tensor,
    spacing: Sequence[float],
    scan: CTScan = CTScan(electronic_std=0.0),
    i0: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """Noise std (HU) at the slice centre of a full-dose scan at ``i0``, averaged per sample (B,).

    The analytic counterpart of :func:`low_dose_ct_noise` with ``input_noise="none"`` and
    ``dose_fraction=1`` (what ``domain="image"`` uses there): the sinogram variance of a whole
    acquisition at ``i0``, ``e^p / i0 (1 + s_e^2 e^p / i0)`` (delta method on -ln(counts)), through
    the FBP noise gain along the rays through the centre. (It used to take the Yu et al. increment
    at a = 1/2, right for the quantum term but three times the electronic one.)
    """
    slices, per_sample = _slices(hu)
    photons = _per_slice(scan.i0 if i0 is None else i0, hu.shape[0], per_sample, slices)
    check_fan_coverage(slices, spacing, scan)
    geometry = scan_geometry(slices.shape[-2:], spacing, scan, slices.device)
    full = torch.ones_like(photons)
    std = _centre_noise_std(geometry, hu_to_mu(slices, scan.mu_water), full, photons, scan, "none")
    return (std * scan.hu_per_mu).reshape(hu.shape[0], per_sample).mean(1).to(hu.dtype)


def fbp_noise_variance(
    geometry: Geometry,
    mu: torch.Tensor,
    points: torch.Tensor,
    dose_fraction: torch.Tensor | float,
    i0: torch.Tensor | float,
    electronic_std: float,
    input_noise: str = "none",
    kernel: torch.Tensor | None = None,
    num_angles: int = 16,
    scan: CTScan | None = None,
) -> torch.Tensor:
    """Predicted variance ((1/mm)^2) of the FBP noise of :func:`low_dose_ct_noise` at ``points``, (N, P).

    ``mu`` (N, H, W) in 1/mm, ``points`` (P, 2) positions (y, x) in mm from the slice centre;
    ``dose_fraction``, ``i0``: floats or (N,). The sinogram variance
    (:func:`sinogram_noise_variance`) on the rays through each point at ``num_angles`` view angles
    (parallel: over 180 degrees; fan: source angles over 360 degrees, each with the fan ray through
    the point), weighted by the per-ray FBP gain (``geometry.noise_gain``: the per-view gain
    :func:`~monai_flow.physics.ct_geometry.directional_noise_gain` of ``kernel`` applied to the image
    if given, times the local ray spacing for the fan) and averaged over the angles. ``scan`` brings
    the bowtie and tube-current modulation (the photons of each ray).
    """
    p = geometry.line_integrals_through(mu, points, num_angles)  # (N, P, A)
    photons = _per_item(i0, p)
    flux = ray_flux(geometry, scan, mu, points, num_angles)
    if flux is not None:
        photons = photons * flux
    var_p = sinogram_noise_variance(p, dose_fraction, photons, electronic_std, input_noise)
    gain = geometry.noise_gain(points, num_angles, kernel).to(var_p)
    return (var_p * gain).mean(-1)


def _slices(hu: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Axial slices (N, H, W) of a batch and the number of slices per sample."""
    slices, _ = to_axial_slices(hu.float())
    slices = slices.reshape(-1, *slices.shape[-2:])
    return slices, slices.shape[0] // hu.shape[0]


def _unslice(slices: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`_slices` for a batch shaped like ``like``."""
    depth = like.shape[-1] if like.ndim == 5 else None
    return from_axial_slices(slices.reshape(-1, like.shape[1], *slices.shape[-2:]), depth)


def _centre_noise_std(geometry, mu, dose, i0, scan, input_noise) -> torch.Tensor:
    """FBP noise std (1/mm) at the slice centre, (N,)."""
    centre = torch.zeros(1, 2)
    return fbp_noise_variance(geometry, mu, centre, dose, i0, scan.electronic_std, input_noise, scan=scan)[:, 0].sqrt()


def _ray_photons(photons: torch.Tensor, flux: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """Photons per ray (N, V, L) from photons per slice (N,) and the relative flux (or (N, 1, 1))."""
    photons = photons.reshape(-1, 1, 1).to(like.dtype)
    return photons if flux is None else photons * flux.to(like.device, like.dtype)


def _per_slice(value, batch: int, per_slice: int, like: torch.Tensor) -> torch.Tensor:
    """A scalar, one value per sample (B,) or one per axial slice of each sample (B, S) -> (B S,)."""
    value = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    if value.ndim == 2 and tuple(value.shape) == (batch, per_slice):
        return value.reshape(-1)
    value = value.reshape(-1)
    if value.numel() == 1:
        value = value.expand(batch)
    if value.numel() != batch:
        raise ValueError(f"expected a scalar, one value per sample ({batch}) or one per slice ({batch}, {per_slice}), "
                         f"got {value.numel()} values.")
    return value.repeat_interleave(per_slice)


def _per_item(value: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    """A float or (N,) tensor, shaped to broadcast against ``like`` (N, ...)."""
    value = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    if value.ndim == like.ndim:  # already one value per ray (or broadcastable to it)
        return value
    return value.reshape(-1, *([1] * (like.ndim - 1))) if value.ndim else value


def _randn_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)


def _ramp_textured_noise(shape, geometry, generator) -> torch.Tensor:
    """Unit-variance Gaussian noise (N, H, W) whose power spectrum follows the FBP filter."""
    n, h, w = shape
    white = torch.randn(shape, generator=generator, device=geometry.device)
    ky = torch.fft.fftfreq(h, d=geometry.spacing[0], device=geometry.device)
    kx = torch.fft.fftfreq(w, d=geometry.spacing[1], device=geometry.device)
    radius = torch.sqrt(ky[:, None] ** 2 + kx[None, :] ** 2)
    nyquist = 0.5 / geometry.bin_spacing
    frac = (radius / nyquist).clamp(max=1.0)
    window = {"ramp": torch.ones_like(frac), "shepp-logan": torch.sinc(frac / 2), "hann": 0.5 * (1 + torch.cos(math.pi * frac))}
    amplitude = torch.sqrt(radius) * window[geometry.filter_name] * (radius <= nyquist)
    amplitude = amplitude / amplitude.square().mean().sqrt()  # unit variance in expectation
    return torch.fft.ifft2(torch.fft.fft2(white) * amplitude).real
