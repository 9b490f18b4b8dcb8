"""The degradation operators of RelativeFlow and IR-Flow: ``op(x, dt, generator=None)`` on batches.

Batches are channel-first ``(B, C, H, W)`` or ``(B, C, H, W, D)``; for CT, (H, W) is the axial
plane and D the slice axis. ``CTDegradation`` and ``MRDegradation`` are the operators
``D_dt`` of RelativeFlow (DESIGN.md 4.2): ``op(x, dt)`` returns a noisier copy of ``x`` whose
noise standard deviation is ``e^dt`` times the reference's (CoT-consistent scaling), so one
degradation step moves quality time from tau to tau - dt. The physics lives in
:mod:`monai_flow.physics`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from monai_flow.physics import (
    MU_WATER_PER_MM,
    CTScan,
    estimate_ct_noise_std,
    estimate_ct_i0,
    low_dose_ct_noise,
    noncentral_chi_noise,
)
from monai_flow.physics.ct_scan import check_domain, check_input_noise, check_spacing
from monai_flow.physics.noise_estimation import MR_NOISE_METHODS, estimate_mr_noise_std

__all__ = ["CTDegradation", "DT_MAPPINGS", "MR_DOMAINS", "MRDegradation", "NoiseBasisDegradation", "NormalizedDegradation"]

DT_MAPPINGS = ("cot", "dose")
MR_DOMAINS = ("magnitude", "second_moment")


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

    ``i0="estimate"`` sets the photon count per sample from the reference's measured noise, for
    heterogeneous references whose dose is unknown: the photons per bin at which a full-dose scan
    with this operator's geometry and electronic noise has the noise of the reference, compared
    position by position in soft tissue
    (:func:`~monai_flow.physics.noise_estimation.estimate_ct_i0`: on simulated 96 - 128 pixel bodies
    with 4 - 8 slices, 0.98 - 1.02 x the true i0 on average and within 10 %; pixel-scale anatomy
    counts as noise, so very high doses come out low).

    Header exposure (issue 9's heterogeneous references): ``op(x, dt, exposure_mas=...)`` gives each
    reference's exposure in mAs (float or (B,), e.g. read with
    :func:`monai_flow.data.ct_exposure.read_ct_exposure`); with ``reference_mas`` set, a reference has
    ``i0 * mAs / reference_mas`` photons; without it (``i0="estimate"``), the noise estimates are pooled
    over the batch as ``median(estimate / mAs)`` and distributed by the exposures.

    Native resolution: with ``spacing=None`` each call must give the references' pixel spacing,
    ``op(x, dt, spacing=...)`` ((2,) for the batch, or (B, 2) per sample, e.g. from batch keys written by
    :class:`~monai_flow.transforms.PixelSpacingd` through ``degradation_keys={"spacing": "spacing"}``).

    Args:
        spacing: pixel spacing (dy, dx) of the axial plane in mm, or None (given per call).
        i0: photons per bin and view of the references' (full-dose) scans, or "estimate".
        electronic_std, mu_water, num_views, num_bins, filter_name: the scan, see
            :class:`~monai_flow.physics.CTScan`.
        domain, input_noise: as :func:`~monai_flow.physics.low_dose_ct_noise`.
        geometry, source_isocentre_mm, source_detector_mm, channel_pitch_mm, detector_shape,
            detector_offset, bowtie, bowtie_radius_mm, bowtie_min, modulation, reference_mas: the
            geometry, bowtie, tube-current modulation and exposure scale, see
            :class:`~monai_flow.physics.CTScan`.
    """

    def __init__(
        self,
        spacing: Sequence[float] | None = (1.0, 1.0),
        i0: float | str = 1e5,
        electronic_std: float = 5.0,
        mu_water: float = MU_WATER_PER_MM,
        domain: str = "projection",
        num_views: int | None = None,
        num_bins: int | None = None,
        filter_name: str = "ramp",
        dt_mapping: str = "cot",
        input_noise: str = "full_dose",
        geometry: str = "parallel",
        source_isocentre_mm: float = 595.0,
        source_detector_mm: float = 1085.6,
        channel_pitch_mm: float = 1.2858,
        detector_shape: str = "arc",
        detector_offset: float = 0.25,
        bowtie: str | Sequence[float] | None = None,
        bowtie_radius_mm: float = 160.0,
        bowtie_min: float = 0.1,
        modulation: str | Sequence[float] | None = None,
        reference_mas: float | None = None,
    ) -> None:
        _check_mapping(dt_mapping)
        self.estimate_i0 = isinstance(i0, str) and i0 == "estimate"
        if isinstance(i0, str) and not self.estimate_i0:
            raise ValueError(f"i0 must be photons per bin (a number > 0) or 'estimate', got {i0!r}.")
        self.scan = CTScan(1.0 if self.estimate_i0 else i0, electronic_std, mu_water, num_views, num_bins, filter_name,
                           geometry, source_isocentre_mm, source_detector_mm, channel_pitch_mm, detector_shape,
                           detector_offset, bowtie, bowtie_radius_mm, bowtie_min, modulation, reference_mas)
        self.spacing = None if spacing is None else check_spacing(spacing)
        self.domain, self.input_noise = check_domain(domain), check_input_noise(input_noise)
        self.i0, self.dt_mapping = i0, dt_mapping

    def _spacings(self, x: torch.Tensor, spacing) -> torch.Tensor:
        """Per-sample pixel spacing (B, 2): the call's, else the constructor's."""
        if spacing is None:
            if self.spacing is None:
                raise ValueError("this CTDegradation has spacing=None: give the pixel spacing per call, op(x, dt, "
                                 "spacing=(dy, dx)) or per sample (B, 2).")
            spacing = self.spacing
        spacing = torch.as_tensor(spacing, dtype=torch.float64).reshape(-1, 2)
        if spacing.shape[0] not in (1, x.shape[0]):
            raise ValueError(f"spacing must be (dy, dx) or one pair per sample ({x.shape[0]}), got {tuple(spacing.shape)}.")
        for row in spacing:
            check_spacing(tuple(float(v) for v in row))
        return spacing.expand(x.shape[0], 2)

    def dose_fraction(self, dt: torch.Tensor) -> torch.Tensor:
        """Dose fraction ``a(dt)`` of the chosen mapping."""
        return torch.exp(-2.0 * dt) if self.dt_mapping == "cot" else torch.exp(-dt)

    def estimate_noise_std(self, x: torch.Tensor) -> torch.Tensor:
        """Per-sample noise std in HU, (B,)."""
        return estimate_ct_noise_std(x, hu_range=(-300.0, 300.0))

    def reference_i0(self, x: torch.Tensor, i0=None, exposure_mas=None, spacing=None) -> torch.Tensor | float:
        """Photons per bin of each reference, by precedence: ``i0`` given per call (float or (B,)); each
        reference's header exposure ``exposure_mas`` (float or (B,), mAs; see the class docstring); the
        constructor's ``i0``; or per sample from its measured noise (B,). ``spacing`` (dy, dx) in mm
        overrides the operator's for the noise estimate (e.g. an input of another resolution)."""
        if i0 is not None:
            return _per_sample("i0", i0, x)
        spacing = self.spacing if spacing is None else check_spacing(spacing)
        if exposure_mas is not None:
            mas = _per_sample("exposure_mas", exposure_mas, x)
            if self.scan.reference_mas is not None:
                return self.scan.photons_for_exposure(mas)
            if not self.estimate_i0:
                raise ValueError("exposure_mas needs reference_mas (the exposure at which the scan has i0 photons) or "
                                 "i0='estimate' (the exposures then distribute the pooled noise estimate).")
            estimate = estimate_ct_i0(x, spacing, self.scan).to(mas)
            valid = torch.isfinite(estimate) & (estimate > 0) & (estimate < 1e12)
            if not bool(valid.any()):
                return estimate
            return (estimate[valid] / mas[valid]).median() * mas
        if not self.estimate_i0:
            return self.scan.i0
        # like with like: the measured high-pass noise against its prediction at the same positions
        return estimate_ct_i0(x, spacing, self.scan)

    def rescan(self, clean: torch.Tensor, reference: torch.Tensor, generator: torch.Generator | None = None,
               noise_scale: float = 1.0, spacing=None, **reference_kwargs) -> torch.Tensor:
        """A new scan of the (nearly) noise-free ``clean`` (B, C, H, W[, D], HU) at the dose of ``reference``:
        the whole acquisition simulated at the reference's photons per bin (:meth:`reference_i0` of
        ``reference``, with ``reference_kwargs`` ``i0`` or ``exposure_mas`` as there) divided by
        ``noise_scale^2`` (the quantum noise std times ``noise_scale``). Used to measure how a network
        removes noise like the reference's (:func:`~monai_flow.inferers.measure_quality_time`)."""
        if not noise_scale > 0:
            raise ValueError(f"noise_scale must be > 0, got {noise_scale}.")
        if clean.shape != reference.shape:
            raise ValueError(f"clean and reference must have the same shape, got {tuple(clean.shape)} and "
                             f"{tuple(reference.shape)}.")
        spacings = self._spacings(clean, spacing)
        out = torch.empty_like(clean)
        for b in range(clean.shape[0]):
            pixel, rows = tuple(float(v) for v in spacings[b]), torch.tensor([b])
            photons = self.reference_i0(reference[rows], _select("i0", reference_kwargs.get("i0"), reference, rows),
                                        _select("exposure_mas", reference_kwargs.get("exposure_mas"), reference, rows),
                                        pixel)
            out[rows] = clean[rows] + low_dose_ct_noise(clean[rows], 1.0, pixel, self.scan, self.domain, "none",
                                                        generator, i0=photons / noise_scale**2)
        return out

    def __call__(self, x: torch.Tensor, dt, generator: torch.Generator | None = None, i0=None,
                 exposure_mas=None, spacing=None) -> torch.Tensor:
        """``x`` (B, C, H, W[, D]) in HU, ``dt`` float or (B,); ``i0`` per call overrides the constructor's
        (each reference's photon count known from its exposure, e.g. ``RelativeFlow(degradation_keys={"i0": ...})``),
        ``exposure_mas`` gives each reference's header exposure instead (:meth:`reference_i0`); ``spacing``
        (2,) or (B, 2) in mm overrides the constructor's (references at their native resolution)."""
        dt = _dt_tensor(dt, x.shape[0], x)
        spacings = self._spacings(x, spacing)
        groups = [torch.arange(x.shape[0])] if bool((spacings == spacings[0]).all()) else \
            [torch.tensor([b]) for b in range(x.shape[0])]  # samples at another resolution: one projector each
        out = torch.empty_like(x)
        for rows in groups:
            pixel = tuple(float(v) for v in spacings[rows[0]])
            part = x[rows]
            photons = self.reference_i0(part, _select("i0", i0, x, rows), _select("exposure_mas", exposure_mas, x, rows),
                                        pixel)
            noise = low_dose_ct_noise(part, self.dose_fraction(dt[rows]).clamp_min(1e-6), pixel, self.scan, self.domain,
                                      self.input_noise, generator, i0=photons)
            out[rows] = part + noise
        return out


def _select(name: str, value, x: torch.Tensor, rows: torch.Tensor):
    """The entries ``rows`` of a per-sample value (B,) (checked by :func:`_per_sample`); None passes through."""
    if value is None:
        return None
    value = _per_sample(name, value, x)
    return value[rows.to(value.device)]


def _per_sample(name: str, value, x: torch.Tensor) -> torch.Tensor:
    """A positive float or one per sample, as (B,) float32 on ``x``'s device."""
    value = torch.as_tensor(value, dtype=torch.float32, device=x.device).reshape(-1)
    if value.numel() not in (1, x.shape[0]) or not bool(torch.isfinite(value).all() and (value > 0).all()):
        unit = "photons per bin" if name == "i0" else "mAs"
        raise ValueError(f"{name} must be > 0 {unit}, a float or one per sample ({x.shape[0]}), got {value.tolist()}.")
    return value.expand(x.shape[0])


class MRDegradation:
    """RelativeFlow degradation operator for magnitude MR: ``op(x, dt, generator=None)``.

    Adds Rician (``num_coils=1``) or noncentral-chi noise of per-part std ``s`` to the (already
    noisy) magnitude reference. Since ``E[M^2] = x^2 + 2 L s^2``, the reference's noise power
    ``2 L s_ref^2`` grows to ``2 L (s_ref^2 + s^2)``:

    - ``dt_mapping="cot"`` (default): ``s^2 = s_ref^2 (e^{2 dt} - 1)``, the noise std becomes
      ``e^dt`` times the reference's (CoT-consistent).
    - ``dt_mapping="dose"``: ``s^2 = s_ref^2 (e^{dt} - 1)``, i.e. the signal-to-noise ratio of an
      acquisition with ``e^{-dt}`` times the averages (std grows by ``e^{dt/2}``).

    **Domain.** Rician noise is not zero-mean: where the signal is low the magnitude is biased up,
    and more so the noisier it is, so in the magnitude domain (``domain="magnitude"``, default) a
    degradation step's increment ``y - x`` has a positive mean in dark tissue and a velocity target
    built from it points at a biased image. ``domain="second_moment"`` works on
    ``w = M^2 - 2 L s^2`` instead (:meth:`to_domain`), an unbiased estimate of the squared signal
    ``A^2`` at every SNR: the operator maps ``w`` back to the magnitude with the reference's ``s``,
    adds the noise, and returns ``w_y = M_y^2 - 2 L (s_ref^2 + s^2)``, so ``E[w_y | w] = w`` exactly:
    zero-mean increments, as RelativeFlow's target ``(x - y) / (e^dt - 1)`` assumes. Its noise std
    is ``2 A s`` (heteroscedastic, CoT-scaled by ``e^dt`` wherever ``A >~ s``). The network then
    learns and denoises ``w``; :meth:`from_domain` returns the magnitude ``sqrt(max(w, 0))``, and
    :class:`monai_flow.inferers.DomainInferer` wraps an inferer to do both conversions. This domain
    needs each reference's ``s`` (``reference_std`` in the constructor or per call).

    Args:
        reference_std: the references' noise ``s_ref`` in image units, or ``None`` to estimate
            it per sample (magnitude domain only) with ``noise_estimator``. A ``reference_std``
            given per call (float or (B,)) takes precedence, e.g. a whole-volume estimate for
            patches without background (``RelativeFlow(reference_std_key=...)``).
        num_coils: L, receive coils combined by sum of squares.
        noise_estimator: method of :func:`~monai_flow.physics.estimate_mr_noise_std`: ``"auto"``
            (default: the background fit when there is a background consistent with the
            high-frequency estimate, else the high-frequency estimate), ``"background"`` (air
            only, the former behaviour) or ``"wavelet"``.
        domain: ``"magnitude"`` or ``"second_moment"`` (see above).
    """

    def __init__(
        self,
        reference_std: float | None = None,
        num_coils: int = 1,
        dt_mapping: str = "cot",
        noise_estimator: str = "auto",
        domain: str = "magnitude",
    ) -> None:
        _check_mapping(dt_mapping)
        if reference_std is not None and not 0 <= reference_std < float("inf"):  # also refuses NaN
            raise ValueError(f"reference_std must be finite and >= 0, or None, got {reference_std}.")
        if int(num_coils) != num_coils or num_coils < 1:
            raise ValueError(f"num_coils must be an integer >= 1, got {num_coils}.")
        if noise_estimator not in MR_NOISE_METHODS:
            raise ValueError(f"noise_estimator must be one of {MR_NOISE_METHODS}, got {noise_estimator!r}.")
        if domain not in MR_DOMAINS:
            raise ValueError(f"domain must be one of {MR_DOMAINS}, got {domain!r}.")
        self.reference_std, self.num_coils, self.dt_mapping = reference_std, int(num_coils), dt_mapping
        self.noise_estimator, self.domain = noise_estimator, domain

    def estimate_noise_std(self, x: torch.Tensor) -> torch.Tensor:
        """Per-sample noise ``s`` (B,) of magnitude images, by ``noise_estimator``
        (:func:`~monai_flow.physics.estimate_mr_noise_std`)."""
        return estimate_mr_noise_std(x, num_coils=self.num_coils, method=self.noise_estimator)

    def _reference_std(self, x: torch.Tensor, batch: int, reference_std=None) -> torch.Tensor:
        reference_std = self.reference_std if reference_std is None else reference_std
        if reference_std is None:
            if self.domain != "magnitude":
                raise ValueError("domain='second_moment' needs reference_std (constructor or per call): "
                                 "the noise of w = M^2 - 2 L s^2 cannot be estimated from w.")
            return self.estimate_noise_std(x).float()
        s_ref = torch.as_tensor(reference_std, dtype=torch.float32, device=x.device).reshape(-1)
        if s_ref.numel() not in (1, batch) or bool((s_ref < 0).any()):
            raise ValueError(f"reference_std must be >= 0, a float or one per sample ({batch}), got {s_ref.tolist()}.")
        return s_ref.expand(batch)

    def added_std(self, x: torch.Tensor, dt: torch.Tensor, reference_std=None) -> torch.Tensor:
        """Std ``s`` (B,) of the noise one step of ``dt`` adds; ``reference_std`` overrides ``s_ref``."""
        s_ref = self._reference_std(x, dt.numel(), reference_std)
        growth = torch.expm1(2.0 * dt) if self.dt_mapping == "cot" else torch.expm1(dt)
        return s_ref.to(dt) * growth.sqrt()

    def to_domain(self, magnitude: torch.Tensor, std) -> torch.Tensor:
        """Magnitude ``M`` (B, C, ...) with noise ``std`` (float or (B,)) to the operator's domain:
        ``M`` itself, or ``w = M^2 - 2 L s^2`` (``"second_moment"``)."""
        if self.domain == "magnitude":
            return magnitude
        s = self._reference_std(magnitude, magnitude.shape[0], std).to(magnitude)
        return magnitude.square() - 2 * self.num_coils * s.reshape(-1, *([1] * (magnitude.ndim - 1))).square()

    def from_domain(self, x: torch.Tensor) -> torch.Tensor:
        """Back to a magnitude: identity, or ``sqrt(max(w, 0))`` (``"second_moment"``)."""
        return x if self.domain == "magnitude" else x.clamp_min(0).sqrt()

    def __call__(self, x: torch.Tensor, dt, generator: torch.Generator | None = None, reference_std=None) -> torch.Tensor:
        dt = _dt_tensor(dt, x.shape[0], x)
        added = self.added_std(x, dt, reference_std).to(x.dtype)
        if self.domain == "magnitude":
            return noncentral_chi_noise(x, added, self.num_coils, generator)
        s_ref = self._reference_std(x, x.shape[0], reference_std).to(x)
        power = 2 * self.num_coils * s_ref.reshape(-1, *([1] * (x.ndim - 1))).square()
        magnitude = (x + power).clamp_min(0).sqrt()  # the reference's noisy magnitude, exactly
        noisier = noncentral_chi_noise(magnitude, added, self.num_coils, generator)
        extra = 2 * self.num_coils * added.reshape(-1, *([1] * (x.ndim - 1))).square()
        return noisier.square() - power - extra


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

    def rescan(self, clean: torch.Tensor, reference: torch.Tensor, generator: torch.Generator | None = None,
               **kwargs) -> torch.Tensor:
        """The operator's ``rescan`` (a new scan of ``clean`` with the noise of ``reference``'s), in the
        normalised units."""
        return (self.operator.rescan(clean * self.scale + self.shift, reference * self.scale + self.shift,
                                     generator=generator, **kwargs) - self.shift) / self.scale

    def estimate_noise_std(self, x: torch.Tensor) -> torch.Tensor:
        """The operator's per-sample noise estimate, in the normalised units of ``x`` (B,)."""
        return self.operator.estimate_noise_std(x * self.scale + self.shift) / abs(self.scale)


class NoiseBasisDegradation:
    """The CT low-dose increment from precomputed noise bases (:func:`~monai_flow.physics.low_dose_noise_basis`):
    ``op(x, level, generator, quantum=Q, electronic=E) = x + sqrt(e^{2 level} - 1) q + sqrt(e^{4 level} - 1) e``.

    With the CoT mapping (dose fraction ``a = e^{-2 level}``) this is exactly the Yu et al. increment
    that :class:`CTDegradation` adds, at the cost of an addition: degrade whole slices once in the
    projection domain, crop patches later. ``Q`` and ``E`` are (B, K, *spatial): K independent
    realizations per sample, in the units of ``x``. Each sample gets ``q`` = one realization, or the
    normalised sum of two different ones, with random signs (all exact draws of the same Gaussian
    field), picked with ``generator``; ``E`` may be None (no electronic noise).
    """

    def _draw(self, fields: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        b, k = fields.shape[:2]
        device = fields.device
        first = torch.randint(k, (b,), generator=generator, device=generator.device if generator else "cpu").to(device)
        second = torch.randint(k, (b,), generator=generator, device=generator.device if generator else "cpu").to(device)
        signs = torch.randint(2, (b, 2), generator=generator, device=generator.device if generator else "cpu").to(device)
        signs = (2.0 * signs - 1.0).to(fields.dtype)
        rows = torch.arange(b, device=device)
        a, c = fields[rows, first], fields[rows, second]
        pair = (first != second).to(fields.dtype).reshape(-1, *([1] * (a.ndim - 1)))
        shape = (-1, *([1] * (a.ndim - 1)))
        mixed = (signs[:, 0].reshape(shape) * a + signs[:, 1].reshape(shape) * c) / 2.0**0.5
        return (pair * mixed + (1 - pair) * signs[:, 0].reshape(shape) * a)[:, None]

    def __call__(self, x: torch.Tensor, level, generator: torch.Generator | None = None, quantum=None,
                 electronic=None) -> torch.Tensor:
        if quantum is None or quantum.ndim != x.ndim or quantum.shape[0] != x.shape[0] or quantum.shape[2:] != x.shape[2:]:
            raise ValueError("NoiseBasisDegradation needs quantum=(B, K, *spatial) noise bases shaped like x "
                             f"{tuple(x.shape)} (K realizations), got {None if quantum is None else tuple(quantum.shape)}.")
        level = _dt_tensor(level, x.shape[0], x).to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
        out = x + torch.expm1(2 * level).sqrt() * self._draw(quantum.to(x.dtype), generator)
        if electronic is not None:
            out = out + torch.expm1(4 * level).sqrt() * self._draw(electronic.to(x.dtype), generator)
        return out
