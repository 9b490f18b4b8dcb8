"""Degradation models on batches, shared by the MONAI transforms and the RelativeFlow operators.

Batches are channel-first ``(B, C, H, W)`` or ``(B, C, H, W, D)``; for CT, (H, W) is the axial
plane and D the slice axis. ``CTDegradation`` and ``MRDegradation`` are the operators
``D_dt`` of RelativeFlow (DESIGN.md 4.2): ``op(x, dt)`` returns a noisier copy of ``x`` whose
noise standard deviation is ``e^dt`` times the reference's (CoT-consistent scaling), so one
degradation step moves quality time from tau to tau - dt.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .ct_physics import (
    MU_WATER_PER_MM,
    cached_geometry,
    fbp_noise_gain,
    hu_to_mu,
    sinogram_noise,
    sinogram_noise_variance,
)
from .mr_physics import noncentral_chi_noise
from .noise_estimation import estimate_ct_noise_std, estimate_rician_noise_std

__all__ = ["NormalizedDegradation", "low_dose_ct_noise", "predicted_ct_noise_std", "CTDegradation", "MRDegradation", "DT_MAPPINGS", "CT_DOMAINS"]

CT_DOMAINS = ("projection", "image")
DT_MAPPINGS = ("cot", "dose")
_SLICE_CHUNK = 16  # slices per projection batch: bounds memory on large volumes


def low_dose_ct_noise(
    hu: torch.Tensor,
    dose_fraction: torch.Tensor | float,
    spacing: Sequence[float],
    i0: torch.Tensor | float = 1e5,
    electronic_std: float = 5.0,
    mu_water: float = MU_WATER_PER_MM,
    domain: str = "projection",
    num_views: int = 720,
    num_bins: int | None = None,
    filter_name: str = "ramp",
    input_noise: str = "full_dose",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Noise (HU) that turns the CT batch ``hu`` into a scan at ``dose_fraction`` of the dose.

    ``domain="projection"``: HU -> mu with the pixel ``spacing`` (dy, dx) in mm, parallel-beam
    line integrals of every axial slice, Poisson-Gaussian sinogram noise
    (:func:`~monai_flow.transforms.ct_physics.sinogram_noise`), and ramp-filtered FBP of the
    noise alone: the image itself never passes through the projector, so it is not blurred.
    ``domain="image"``: stationary Gaussian noise with a ramp-shaped noise power spectrum and
    the variance the projection model predicts at the slice centre (fast; docs/transforms.md).

    Args:
        hu: (B, C, H, W) or (B, C, H, W, D) in HU.
        dose_fraction, i0: floats or (B,) tensors (one value per sample).

    Returns:
        noise of the shape, dtype and device of ``hu``.
    """
    if domain not in CT_DOMAINS:
        raise ValueError(f"domain must be one of {CT_DOMAINS}, got {domain!r}.")
    slices, restore = _to_slices(hu.float())
    per_slice = slices.shape[0] // hu.shape[0]
    dose, i0 = (_per_slice(v, hu.shape[0], per_slice, slices) for v in (dose_fraction, i0))
    geometry = cached_geometry(
        tuple(slices.shape[-2:]), tuple(float(s) for s in spacing), num_views, num_bins, filter_name, str(hu.device)
    )
    scale = 1000.0 / mu_water  # d(HU) / d(mu)
    noise = torch.empty_like(slices)
    for start in range(0, slices.shape[0], _SLICE_CHUNK):
        part = slice(start, start + _SLICE_CHUNK)
        mu = hu_to_mu(slices[part], mu_water)
        if domain == "projection":
            delta_p = sinogram_noise(geometry.project(mu), dose[part], i0[part], electronic_std, input_noise, generator)
            noise[part] = geometry.fbp(delta_p) * scale
        else:
            std = _centre_noise_std(geometry, mu, dose[part], i0[part], electronic_std, input_noise) * scale
            noise[part] = _ramp_textured_noise(mu.shape, geometry, generator) * std[:, None, None]
    return restore(noise).to(hu.dtype)


def predicted_ct_noise_std(
    hu: torch.Tensor,
    spacing: Sequence[float],
    i0: torch.Tensor | float = 1e5,
    electronic_std: float = 0.0,
    mu_water: float = MU_WATER_PER_MM,
    num_views: int = 720,
    filter_name: str = "ramp",
) -> torch.Tensor:
    """Noise std (HU) at the slice centre of a full-dose scan at ``i0``, averaged per sample (B,).

    The analytic counterpart of :func:`low_dose_ct_noise`: it is what ``domain="image"`` uses,
    and inverting it turns a measured noise level into an effective photon count.
    """
    slices, _ = _to_slices(hu.float())
    per_slice = slices.shape[0] // hu.shape[0]
    geometry = cached_geometry(tuple(slices.shape[-2:]), tuple(float(s) for s in spacing), num_views, None, filter_name, str(hu.device))
    i0 = _per_slice(i0, hu.shape[0], per_slice, slices)
    # a full-dose scan has the noise of the Yu increment at a = 1/2, (1 - a)/a = 1
    half = torch.full_like(i0, 0.5)
    std = _centre_noise_std(geometry, hu_to_mu(slices, mu_water), half, i0, electronic_std, "full_dose")
    return (std * 1000.0 / mu_water).reshape(hu.shape[0], per_slice).mean(1).to(hu.dtype)


def _centre_noise_std(geometry, mu, dose, i0, electronic_std, input_noise) -> torch.Tensor:
    """FBP noise std (1/mm) at the slice centre from the row and column through it, (N,)."""
    var_p = sinogram_noise_variance(geometry.central_line_integrals(mu), dose, i0, electronic_std, input_noise)
    return torch.sqrt(var_p.mean(-1) * fbp_noise_gain(geometry))


def _per_slice(value, batch: int, per_slice: int, like: torch.Tensor) -> torch.Tensor:
    value = torch.as_tensor(value, dtype=like.dtype, device=like.device).reshape(-1)
    if value.numel() == 1:
        value = value.expand(batch)
    if value.numel() != batch:
        raise ValueError(f"expected a scalar or one value per sample ({batch}), got {value.numel()} values.")
    return value.repeat_interleave(per_slice)


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


def _to_slices(x: torch.Tensor):
    """(B, C, H, W[, D]) -> (N, H, W) axial slices, and the inverse."""
    if x.ndim == 4:
        b, c, h, w = x.shape
        return x.reshape(b * c, h, w), lambda s: s.reshape(b, c, h, w)
    if x.ndim == 5:
        b, c, h, w, d = x.shape
        slices = x.permute(0, 1, 4, 2, 3).reshape(b * c * d, h, w)
        return slices, lambda s: s.reshape(b, c, d, h, w).permute(0, 1, 3, 4, 2)
    raise ValueError(f"expected (B, C, H, W) or (B, C, H, W, D), got shape {tuple(x.shape)}.")


def _dt_tensor(dt, batch: int, like: torch.Tensor) -> torch.Tensor:
    dt = torch.as_tensor(dt, dtype=torch.float32, device=like.device).reshape(-1)
    if dt.numel() == 1:
        dt = dt.expand(batch)
    if dt.numel() != batch:
        raise ValueError(f"dt must be a scalar or have one value per sample ({batch}), got {dt.numel()}.")
    if (dt < 0).any() or not torch.isfinite(dt).all():
        raise ValueError(f"dt must be finite and >= 0, got {dt.tolist()}.")
    return dt


def _check_mapping(dt_mapping: str) -> None:
    if dt_mapping not in DT_MAPPINGS:
        raise ValueError(f"dt_mapping must be one of {DT_MAPPINGS}, got {dt_mapping!r}.")


class CTDegradation:
    """RelativeFlow degradation operator for CT in HU: ``op(x, dt, generator=None)``.

    A step ``dt`` lowers the dose of each (already noisy) reference by a factor ``a(dt)`` with
    the Yu et al. increment, assuming the reference's noise corresponds to ``i0`` photons per bin:

    - ``dt_mapping="cot"`` (default): ``a = e^{-2 dt}``; the added variance is
      ``(e^{2 dt} - 1)`` times the reference's, so the noise std becomes ``e^{dt}`` times the
      reference's (CoT-consistent, DESIGN.md 4.2; exact without electronic noise).
    - ``dt_mapping="dose"``: ``a = e^{-dt}``, dt is the log dose reduction; the std grows by
      ``e^{dt/2}`` only, so the SVF target ``(x - y) / (e^dt - 1)`` is no longer CoT-consistent.

    ``input_noise="none"`` treats ``x`` as noise-free and simulates the whole acquisition at dose
    ``a(dt) * i0`` instead (evaluation from phantoms; ``dt_mapping="dose"`` then gives
    ``dt = -ln(dose)``).

    ``i0="estimate"`` sets the photon count per sample from the reference's measured noise
    (:func:`estimate_ct_noise_std`) through the image-domain noise prediction, for heterogeneous
    references whose dose is unknown.

    Args:
        spacing: pixel spacing (dy, dx) of the axial plane in mm.
        i0, electronic_std, mu_water, domain, num_views, num_bins, filter_name: as
            :func:`low_dose_ct_noise`.
    """

    def __init__(
        self,
        spacing: Sequence[float] = (1.0, 1.0),
        i0: float | str = 1e5,
        electronic_std: float = 5.0,
        mu_water: float = MU_WATER_PER_MM,
        domain: str = "projection",
        num_views: int = 360,
        num_bins: int | None = None,
        filter_name: str = "ramp",
        dt_mapping: str = "cot",
        input_noise: str = "full_dose",
    ) -> None:
        _check_mapping(dt_mapping)
        if input_noise not in ("full_dose", "none"):
            raise ValueError(f"input_noise must be 'full_dose' or 'none', got {input_noise!r}.")
        if domain not in CT_DOMAINS:
            raise ValueError(f"domain must be one of {CT_DOMAINS}, got {domain!r}.")
        if not (i0 == "estimate" or (isinstance(i0, (int, float)) and i0 > 0)):
            raise ValueError(f"i0 must be a positive photon count or 'estimate', got {i0!r}.")
        if len(spacing) != 2 or not all(0 < s < float("inf") for s in spacing):
            raise ValueError(f"spacing must be two positive in-plane values in mm, got {spacing}.")
        if not 0 <= electronic_std < float("inf"):
            raise ValueError(f"electronic_std must be finite and >= 0 counts, got {electronic_std}.")
        if not 0 < mu_water < float("inf"):
            raise ValueError(f"mu_water must be > 0 (1/mm), got {mu_water}.")
        self.spacing = tuple(float(s) for s in spacing)
        self.i0, self.electronic_std, self.mu_water = i0, float(electronic_std), float(mu_water)
        self.domain, self.num_views, self.num_bins, self.filter_name = domain, num_views, num_bins, filter_name
        self.dt_mapping, self.input_noise = dt_mapping, input_noise

    def dose_fraction(self, dt: torch.Tensor) -> torch.Tensor:
        """Dose fraction ``a(dt)`` of the chosen mapping."""
        return torch.exp(-2.0 * dt) if self.dt_mapping == "cot" else torch.exp(-dt)

    def estimate_noise_std(self, x: torch.Tensor) -> torch.Tensor:
        """Per-sample noise std in HU, (B,)."""
        return estimate_ct_noise_std(x, hu_range=(-300.0, 300.0))

    def reference_i0(self, x: torch.Tensor, i0=None) -> torch.Tensor | float:
        """Photons per bin of each reference: ``i0`` given per call (float or (B,)), the
        constructor's ``i0``, or per sample from its measured noise (B,)."""
        if i0 is not None:
            i0 = torch.as_tensor(i0, dtype=torch.float32, device=x.device).reshape(-1)
            if i0.numel() not in (1, x.shape[0]) or not bool(torch.isfinite(i0).all() and (i0 > 0).all()):
                raise ValueError(f"i0 must be > 0 photons per bin, a float or one per sample ({x.shape[0]}), got {i0.tolist()}.")
            return i0.expand(x.shape[0])
        if self.i0 != "estimate":
            return self.i0
        # the predicted std scales like i0^{-1/2} without electronic noise
        at_one = predicted_ct_noise_std(x, self.spacing, 1.0, 0.0, self.mu_water, self.num_views, self.filter_name)
        return (at_one / self.estimate_noise_std(x).clamp_min(1e-3)).square()

    def __call__(self, x: torch.Tensor, dt, generator: torch.Generator | None = None, i0=None) -> torch.Tensor:
        """``x`` (B, C, H, W[, D]) in HU, ``dt`` float or (B,); ``i0`` per call overrides the constructor's
        (each reference's photon count known from its exposure, e.g. ``RelativeFlow(degradation_keys={"i0": ...})``)."""
        dt = _dt_tensor(dt, x.shape[0], x)
        noise = low_dose_ct_noise(
            x, self.dose_fraction(dt).clamp_min(1e-6), self.spacing, self.reference_i0(x, i0), self.electronic_std,
            self.mu_water, self.domain, self.num_views, self.num_bins, self.filter_name, self.input_noise, generator,
        )
        return x + noise


class MRDegradation:
    """RelativeFlow degradation operator for magnitude MR: ``op(x, dt, generator=None)``.

    Adds Rician (``num_coils=1``) or noncentral-chi noise of per-part std ``s`` to the (already
    noisy) magnitude reference. Since ``E[M^2] = x^2 + 2 L s^2``, the reference's noise power
    ``2 L s_ref^2`` grows to ``2 L (s_ref^2 + s^2)``:

    - ``dt_mapping="cot"`` (default): ``s^2 = s_ref^2 (e^{2 dt} - 1)``, the noise std becomes
      ``e^dt`` times the reference's (CoT-consistent).
    - ``dt_mapping="dose"``: ``s^2 = s_ref^2 (e^{dt} - 1)``, i.e. the signal-to-noise ratio of an
      acquisition with ``e^{-dt}`` times the averages (std grows by ``e^{dt/2}``).

    Args:
        reference_std: the references' noise ``s_ref`` in image units, or ``None`` to estimate
            it per sample from the background (:func:`estimate_rician_noise_std`). A
            ``reference_std`` given per call (float or (B,)) takes precedence, e.g. a whole-volume
            estimate for patches without background (``RelativeFlow(reference_std_key=...)``).
        num_coils: L, receive coils combined by sum of squares.
    """

    def __init__(self, reference_std: float | None = None, num_coils: int = 1, dt_mapping: str = "cot") -> None:
        _check_mapping(dt_mapping)
        if reference_std is not None and not 0 <= reference_std < float("inf"):  # also refuses NaN
            raise ValueError(f"reference_std must be finite and >= 0, or None, got {reference_std}.")
        if int(num_coils) != num_coils or num_coils < 1:
            raise ValueError(f"num_coils must be an integer >= 1, got {num_coils}.")
        self.reference_std, self.num_coils, self.dt_mapping = reference_std, int(num_coils), dt_mapping

    def estimate_noise_std(self, x: torch.Tensor) -> torch.Tensor:
        """Per-sample noise ``s`` from the background, (B,)."""
        return estimate_rician_noise_std(x, num_coils=self.num_coils)

    def added_std(self, x: torch.Tensor, dt: torch.Tensor, reference_std=None) -> torch.Tensor:
        """Std ``s`` (B,) of the noise one step of ``dt`` adds; ``reference_std`` overrides ``s_ref``."""
        reference_std = self.reference_std if reference_std is None else reference_std
        if reference_std is None:
            s_ref = self.estimate_noise_std(x)
        else:
            s_ref = torch.as_tensor(reference_std, dtype=dt.dtype, device=dt.device).reshape(-1)
            if s_ref.numel() not in (1, dt.numel()) or bool((s_ref < 0).any()):
                raise ValueError(f"reference_std must be >= 0, a float or one per sample ({dt.numel()}), got {s_ref.tolist()}.")
            s_ref = s_ref.expand_as(dt)
        growth = torch.expm1(2.0 * dt) if self.dt_mapping == "cot" else torch.expm1(dt)
        return s_ref.to(dt) * growth.sqrt()

    def __call__(self, x: torch.Tensor, dt, generator: torch.Generator | None = None, reference_std=None) -> torch.Tensor:
        dt = _dt_tensor(dt, x.shape[0], x)
        return noncentral_chi_noise(x, self.added_std(x, dt, reference_std).to(x.dtype), self.num_coils, generator)


class NormalizedDegradation:
    """Apply a degradation operator defined in physical units to network-normalised images.

    ``op(x, dt)`` becomes ``(operator(x * scale + shift, dt) - shift) / scale``, e.g. a CT
    operator in HU on images stored as ``HU / 1000`` (``scale=1000``). Other attributes
    are those of ``operator``; ``estimate_noise_std`` works in the normalised units.
    """

    def __init__(self, operator, scale: float = 1.0, shift: float = 0.0) -> None:
        if not callable(operator):
            raise ValueError(f"operator must be callable op(x, dt, generator=None), got {type(operator).__name__}.")
        if scale == 0:
            raise ValueError("scale must be non-zero.")
        self.operator, self.scale, self.shift = operator, float(scale), float(shift)

    def __getattr__(self, name: str):
        return getattr(self.__dict__["operator"], name)

    def __call__(self, x: torch.Tensor, dt, generator: torch.Generator | None = None, **kwargs) -> torch.Tensor:
        """``kwargs`` (e.g. per-sample ``i0``) are passed to the operator unchanged."""
        return (self.operator(x * self.scale + self.shift, dt, generator=generator, **kwargs) - self.shift) / self.scale

    def estimate_noise_std(self, x: torch.Tensor) -> torch.Tensor:
        """The operator's per-sample noise estimate, in the normalised units of ``x`` (B,)."""
        return self.operator.estimate_noise_std(x * self.scale + self.shift) / abs(self.scale)
