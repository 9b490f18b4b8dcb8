"""Low-dose CT noise: Poisson-Gaussian sinogram noise, reconstructed by FBP, or its image-domain
approximation. Batches are channel-first ``(B, C, H, W)`` or ``(B, C, H, W, D)`` in HU with (H, W)
the axial plane; every axial slice is simulated independently.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from monai_flow.axial import from_axial_slices, to_axial_slices

from .ct_geometry import ParallelBeamGeometry, directional_noise_gain, parallel_beam_geometry
from .ct_scan import CTScan, check_domain, check_input_noise, check_spacing, hu_to_mu

__all__ = [
    "fbp_noise_variance",
    "low_dose_ct_noise",
    "low_dose_noise_basis",
    "predicted_ct_noise_std",
    "sinogram_noise",
    "sinogram_noise_variance",
]

_MIN_COUNTS = 1.0  # detector reading floor (photons) before the log, avoids ln(0)
_SLICE_CHUNK = 16  # slices per projection batch: bounds memory on large volumes


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
    geometry = _geometry(slices, spacing, scan)
    noise = torch.empty_like(slices)
    for start in range(0, slices.shape[0], _SLICE_CHUNK):
        part = slice(start, start + _SLICE_CHUNK)
        mu = hu_to_mu(slices[part], scan.mu_water)
        if domain == "projection":
            delta_p = sinogram_noise(geometry.project(mu), dose[part], photons[part], scan.electronic_std, input_noise,
                                     generator)
            noise[part] = geometry.fbp(delta_p) * scan.hu_per_mu
        else:
            std = _centre_noise_std(geometry, mu, dose[part], photons[part], scan.electronic_std, input_noise)
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
    geometry = _geometry(slices, spacing, scan)
    quantum = torch.empty_like(slices)
    electronic = torch.empty_like(slices) if scan.electronic_std > 0 else None
    for start in range(0, slices.shape[0], _SLICE_CHUNK):
        part = slice(start, start + _SLICE_CHUNK)
        relative = torch.exp(geometry.project(hu_to_mu(slices[part], scan.mu_water))) / _per_item(photons[part], slices[part])
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
    geometry = _geometry(slices, spacing, scan)
    full = torch.ones_like(photons)
    std = _centre_noise_std(geometry, hu_to_mu(slices, scan.mu_water), full, photons, scan.electronic_std, "none")
    return (std * scan.hu_per_mu).reshape(hu.shape[0], per_sample).mean(1).to(hu.dtype)


def fbp_noise_variance(
    geometry: ParallelBeamGeometry,
    mu: torch.Tensor,
    points: torch.Tensor,
    dose_fraction: torch.Tensor | float,
    i0: torch.Tensor | float,
    electronic_std: float,
    input_noise: str = "none",
    kernel: torch.Tensor | None = None,
    num_angles: int = 16,
) -> torch.Tensor:
    """Predicted variance ((1/mm)^2) of the FBP noise of :func:`low_dose_ct_noise` at ``points``, (N, P).

    ``mu`` (N, H, W) in 1/mm, ``points`` (P, 2) positions (y, x) in mm from the slice centre;
    ``dose_fraction``, ``i0``: floats or (N,). The sinogram variance
    (:func:`sinogram_noise_variance`) on the rays through each point at ``num_angles`` view angles,
    weighted by the per-view FBP gain (:func:`~monai_flow.physics.ct_geometry.directional_noise_gain`,
    of ``kernel`` applied to the image if given) and averaged over the angles.
    """
    p = geometry.line_integrals_through(mu, points, num_angles)  # (N, P, A)
    var_p = sinogram_noise_variance(p, dose_fraction, i0, electronic_std, input_noise)
    gain = directional_noise_gain(geometry, geometry.view_angles(num_angles), kernel).to(var_p)
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


def _geometry(slices: torch.Tensor, spacing: Sequence[float], scan: CTScan) -> ParallelBeamGeometry:
    return parallel_beam_geometry(tuple(slices.shape[-2:]), check_spacing(spacing), scan.num_views, scan.num_bins,
                                  scan.filter_name, str(slices.device))


def _centre_noise_std(geometry, mu, dose, i0, electronic_std, input_noise) -> torch.Tensor:
    """FBP noise std (1/mm) at the slice centre, (N,)."""
    centre = torch.zeros(1, 2)
    return fbp_noise_variance(geometry, mu, centre, dose, i0, electronic_std, input_noise)[:, 0].sqrt()


def _per_slice(value, batch: int, per_slice: int, like: torch.Tensor) -> torch.Tensor:
    value = torch.as_tensor(value, dtype=like.dtype, device=like.device).reshape(-1)
    if value.numel() == 1:
        value = value.expand(batch)
    if value.numel() != batch:
        raise ValueError(f"expected a scalar or one value per sample ({batch}), got {value.numel()} values.")
    return value.repeat_interleave(per_slice)


def _per_item(value: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    """A float or (N,) tensor, shaped to broadcast against ``like`` (N, ...)."""
    value = torch.as_tensor(value, dtype=like.dtype, device=like.device)
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
