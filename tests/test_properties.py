"""Property-based tests (hypothesis) of the transforms' and schedules' contracts.

Each property is what the docstrings promise for every valid input: shapes, dtypes and containers
are kept, magnitudes stay >= 0, a full dose adds nothing, the noise level scales with the image (MR),
invalid parameters raise ValueError, and one RelativeFlow degradation step of dt multiplies the
reference's noise std by e^dt. That last one is statistical and measured against the physics, not
the operators' own formulas: the CT reference is a simulated Poisson acquisition at the operator's
i0, the MR reference has a known s_ref; its examples are derandomized and its tolerances about five
standard errors. Sizes are small and the example counts low so that the file runs in well under 30 s.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from monai_flow.inferers import relative_dt_schedule
from monai_flow.physics import CTScan, low_dose_ct_noise, noncentral_chi_noise
from monai_flow.transforms import (
    CTDegradation,
    LowDoseCTNoise,
    MRDegradation,
    RandLowDoseCTNoise,
    RandRicianMRNoise,
    RandRicianMRNoised,
    RicianMRNoise,
)

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])  # CT projections
# statistical properties: a fixed example sequence, so a pass or a failure reproduces
STATISTICAL = settings(max_examples=8, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])

pytestmark = pytest.mark.usefixtures("single_thread")


@st.composite
def images(draw, sizes=(4, 6, 8, 12, 16), depth=True, low=0.0, high=1.0, dtypes=(torch.float32, torch.float64)):
    """A channel-first 2D (C, H, W) or 3D (C, H, W, D) image with random values in [low, high]."""
    c = draw(st.integers(1, 3))
    spatial = [draw(st.sampled_from(sizes)), draw(st.sampled_from(sizes))]
    if depth and draw(st.booleans()):
        spatial.append(draw(st.integers(1, 3)))
    dtype = draw(st.sampled_from(dtypes))
    seed = draw(st.integers(0, 2**16))
    g = torch.Generator().manual_seed(seed)
    return (low + (high - low) * torch.rand(c, *spatial, generator=g, dtype=torch.float64)).to(dtype)


# ---------------------------------------------------------------------------------------------
# MR
# ---------------------------------------------------------------------------------------------
ANY_DTYPE = (torch.float32, torch.float64, torch.float16, torch.int16)


def expected_dtype(data):
    """Float inputs keep their dtype, integer ones become float32 (the transforms' contract)."""
    dtype = torch.as_tensor(data).dtype
    return dtype if dtype.is_floating_point else torch.float32


@FAST
@given(img=images(high=100.0, dtypes=ANY_DTYPE), std=st.floats(0.0, 0.3), coils=st.integers(1, 4),
       relative_to=st.sampled_from(["absolute", "max", "percentile"]), seed=st.integers(0, 2**31 - 1), as_numpy=st.booleans())
def test_rician_keeps_shape_dtype_container_and_is_a_magnitude(img, std, coils, relative_to, seed, as_numpy):
    data = img.numpy() if as_numpy else img
    for t in (RicianMRNoise(std=std, relative_to=relative_to, num_coils=coils),
              RandRicianMRNoise(std=(0.0, std), relative_to=relative_to, num_coils=coils)):
        out = t.set_random_state(seed)(data)
        assert type(out) is type(data) and out.shape == data.shape
        out = torch.as_tensor(out)
        assert out.dtype == expected_dtype(data)
        assert torch.isfinite(out).all() and (out >= 0).all()
    d = RandRicianMRNoised(["a", "b"], std=(0.0, std), num_coils=coils).set_random_state(seed)({"a": data, "b": data})
    assert d["a"].shape == data.shape and torch.as_tensor(d["b"]).dtype == expected_dtype(data)


@FAST
@given(img=images(dtypes=(torch.float64,)), std=st.floats(0.001, 0.3), k=st.floats(0.01, 100.0), coils=st.integers(1, 4),
       seed=st.integers(0, 2**31 - 1))
def test_rician_noise_level_scales_with_the_image(img, std, k, coils, seed):
    """Same draws: scaling the image (and an absolute std) by k scales the output by k."""
    absolute = RicianMRNoise(std=std, relative_to="absolute", num_coils=coils)
    torch.testing.assert_close(absolute(img * k, std=std * k, seed=seed), k * absolute(img, seed=seed), rtol=1e-9, atol=1e-12)
    for relative_to in ("max", "percentile"):  # relative levels follow the image's scale by themselves
        t = RicianMRNoise(std=std, relative_to=relative_to, num_coils=coils)
        torch.testing.assert_close(t(img * k, seed=seed), k * t(img, seed=seed), rtol=1e-9, atol=1e-12)


@FAST
@given(img=images(), coils=st.integers(1, 4))
def test_rician_zero_std_is_the_identity_on_magnitudes(img, coils):
    out = RicianMRNoise(std=0.0, num_coils=coils)(img)
    torch.testing.assert_close(out, img, rtol=1e-6, atol=1e-7)


@FAST
@given(std=st.floats(0.01, 10.0), coils=st.integers(1, 4), seed=st.integers(0, 2**31 - 1))
def test_rician_background_noise_power_is_2_L_s2(std, coils, seed):
    """On a zero image (background) E[M^2] = 2 L s^2; 64x64 pixels keep the estimate within 10 %."""
    out = RicianMRNoise(std=std, relative_to="absolute", num_coils=coils)(torch.zeros(1, 64, 64, dtype=torch.float64), seed=seed)
    assert float(out.square().mean()) == pytest.approx(2 * coils * std**2, rel=0.1)


# ---------------------------------------------------------------------------------------------
# CT
# ---------------------------------------------------------------------------------------------
CT_KW = dict(spacing=(1.0, 1.0), num_views=24)


# the fan beam as a scanner (default distances and channels) with few views; the bowtie and the
# modulation change the photons per ray, never the shapes or the finiteness
GEOMETRY = st.sampled_from([{}, {"geometry": "fan"}, {"geometry": "fan", "bowtie": "cylinder", "modulation": "auto"},
                            {"geometry": "fan", "detector_shape": "flat"}, {"bowtie": "cylinder", "modulation": "auto"}])


@SLOW
@given(img=images(sizes=(8, 16), low=-1000.0, high=1500.0, dtypes=ANY_DTYPE), dose=st.floats(0.02, 1.0), domain=st.sampled_from(["projection", "image"]),
       input_noise=st.sampled_from(["full_dose", "none"]), electronic=st.floats(0.0, 10.0), seed=st.integers(0, 2**31 - 1),
       geometry=GEOMETRY)
def test_low_dose_ct_keeps_shape_and_dtype_and_stays_finite(img, dose, domain, input_noise, electronic, seed, geometry):
    for t in (LowDoseCTNoise(dose_fraction=dose, domain=domain, input_noise=input_noise, electronic_std=electronic, **CT_KW, **geometry),
              RandLowDoseCTNoise(dose_fraction=(dose / 2, dose), domain=domain, input_noise=input_noise, **CT_KW, **geometry)):
        out = t.set_random_state(seed)(img)
        assert out.shape == img.shape and out.dtype == expected_dtype(img) and torch.isfinite(out).all()


@SLOW
@given(img=images(sizes=(8, 16), low=-1000.0, high=1500.0), domain=st.sampled_from(["projection", "image"]),
       electronic=st.floats(0.0, 10.0), seed=st.integers(0, 2**31 - 1), geometry=GEOMETRY)
def test_full_dose_of_a_full_dose_scan_adds_nothing(img, domain, electronic, seed, geometry):
    out = LowDoseCTNoise(dose_fraction=1.0, domain=domain, electronic_std=electronic, input_noise="full_dose", **CT_KW,
                         **geometry)(img, seed=seed)
    torch.testing.assert_close(out, img, rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# invalid parameters
# ---------------------------------------------------------------------------------------------
bad_dose = st.one_of(st.floats(max_value=0.0), st.floats(min_value=1.0, exclude_min=True), st.just(float("nan")))
bad_std = st.one_of(st.floats(max_value=0.0, exclude_max=True), st.just(float("nan")), st.just(float("inf")))


bad_coils = st.one_of(st.integers(max_value=0), st.floats(1.01, 3.99).filter(lambda c: c != int(c)))


@FAST
@given(dose=bad_dose, std=bad_std, coils=bad_coils)
def test_invalid_parameters_raise_value_error(dose, std, coils):
    img = torch.zeros(1, 8, 8)
    for make in (lambda: LowDoseCTNoise(dose_fraction=dose), lambda: RandLowDoseCTNoise(dose_fraction=(dose, 1.0)),
                 lambda: RandLowDoseCTNoise(dose_fraction=(0.5, 0.4)), lambda: LowDoseCTNoise(**CT_KW)(img, dose_fraction=dose),
                 lambda: LowDoseCTNoise(electronic_std=-abs(std) if math.isfinite(std) else -1.0), lambda: LowDoseCTNoise(i0=0.0),
                 lambda: RicianMRNoise(std=std), lambda: RandRicianMRNoise(std=(std, 1.0)), lambda: RandRicianMRNoise(std=(0.2, 0.1)),
                 lambda: RicianMRNoise()(img, std=std), lambda: RicianMRNoise(num_coils=coils),
                 lambda: MRDegradation(reference_std=-1.0), lambda: CTDegradation(i0=-1.0),
                 lambda: MRDegradation(reference_std=0.1)(img[None], torch.tensor([-0.1])),
                 lambda: CTDegradation(**CT_KW)(img[None] - 1000.0, float("nan")),
                 # NaN and non-integer values that once slipped through (NaN noise, silently truncated coils)
                 lambda: LowDoseCTNoise(electronic_std=float("nan")), lambda: LowDoseCTNoise(spacing=(float("nan"), 1.0)),
                 lambda: MRDegradation(reference_std=std), lambda: MRDegradation(num_coils=coils),
                 lambda: CTDegradation(electronic_std=-1.0), lambda: CTDegradation(spacing=(0.0, 1.0)),
                 lambda: CTDegradation(mu_water=0.0),
                 # impossible fan beams and flux profiles (tests/test_fan_beam.py checks the names in the messages)
                 lambda: LowDoseCTNoise(geometry="fan", source_detector_mm=100.0), lambda: LowDoseCTNoise(geometry="fan", bowtie=[1.0]),
                 lambda: CTDegradation(geometry="fan", modulation=[1.0, 2.0]), lambda: LowDoseCTNoise(target_mas=-abs(std) - 1),
                 lambda: RandLowDoseCTNoise(target_mas=50.0), lambda: CTDegradation(i0="guess")):
        with pytest.raises(ValueError):
            make()


# ---------------------------------------------------------------------------------------------
# RelativeFlow degradation operators: one step of dt multiplies the reference's noise std by e^dt
# ---------------------------------------------------------------------------------------------
def _disk(n: int, radius: float) -> torch.Tensor:
    y, x = torch.meshgrid(torch.arange(n) - (n - 1) / 2, torch.arange(n) - (n - 1) / 2, indexing="ij")
    return torch.where(x**2 + y**2 < radius**2, 0.0, -1000.0)


@STATISTICAL
@given(dt=st.floats(0.05, 1.0), domain=st.sampled_from(["projection", "image"]), i0=st.sampled_from([2e4, 1e5, 5e5]),
       seed=st.integers(0, 2**16), geometry=st.sampled_from(["parallel", "fan"]))
def test_ct_degradation_adds_e2dt_minus_1_times_the_reference_variance(dt, domain, i0, seed, geometry):
    """The reference is a whole Poisson acquisition at the operator's i0 (``input_noise="none"``, dose 1) of a
    150 mm water disk, in the operator's domain and geometry (parallel or fan beam); ``op(reference, dt)`` must add noise of variance
    (e^{2 dt} - 1) times the reference's (std times e^dt), measured in the central 48 x 48 mm over 16 slices.
    Without electronic noise the CoT mapping is exact. A wrong per-bin variance, FBP gain or dose mapping
    fails this (the former test compared two draws of the operator with its own formula)."""
    spacing, n = (3.0, 3.0), 64
    water = _disk(n, 25.0)[None, None].repeat(16, 1, 1, 1)
    scan = CTScan(i0=i0, electronic_std=0.0, num_views=90, geometry=geometry)
    reference = water + low_dose_ct_noise(water, 1.0, spacing, scan, domain, "none", torch.Generator().manual_seed(seed))
    op = CTDegradation(spacing=spacing, i0=i0, electronic_std=0.0, num_views=90, domain=domain, geometry=geometry)
    y = op(reference, dt, generator=torch.Generator().manual_seed(seed + 1))
    assert y.shape == reference.shape and y.dtype == reference.dtype
    core = slice(n // 2 - 8, n // 2 + 8)
    ratio = float((y - reference)[..., core, core].var() / (reference - water)[..., core, core].var())
    # 16 x 256 pixels per variance: ~2.5 % each (FBP noise is nearly white pixel to pixel), 3.5 % on the
    # ratio over 60 draws
    assert ratio / math.expm1(2 * dt) == pytest.approx(1.0, abs=0.15)


@STATISTICAL
@given(dt=st.floats(0.05, 1.0), s_ref=st.floats(0.5, 5.0), coils=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_mr_degradation_noise_std_grows_by_e_dt(dt, s_ref, coils, seed):
    """Magnitude references with a known s_ref: far from zero (A = 100 s_ref, M ~ A + N(0, s^2)) the std of
    ``op(x, dt)`` over s_ref is e^dt; in the background (A = 0) E[M^2] = 2 L s^2 grows to 2 L s_ref^2 e^{2 dt}."""
    shape = (1, 1, 64, 64, 4)
    bright = noncentral_chi_noise(torch.full(shape, 100 * s_ref, dtype=torch.float64), s_ref, coils, torch.Generator().manual_seed(seed))
    background = noncentral_chi_noise(torch.zeros(shape, dtype=torch.float64), s_ref, coils, torch.Generator().manual_seed(seed + 1))
    x = torch.cat([bright, background])
    y = MRDegradation(reference_std=s_ref, num_coils=coils)(x, dt, generator=torch.Generator().manual_seed(seed + 2))
    assert y.shape == x.shape and y.dtype == x.dtype and (y >= 0).all()
    # 16384 pixels: the std to 0.6 %, the background mean of M^2 to 1 / sqrt(L N) <= 0.8 % (0.55 % over 60 draws)
    assert float(y[0].std() / s_ref) == pytest.approx(math.exp(dt), rel=0.03)
    assert float(y[1].square().mean() / (2 * coils * s_ref**2)) == pytest.approx(math.exp(2 * dt), rel=0.03)


# ---------------------------------------------------------------------------------------------
# relative_dt_schedule
# ---------------------------------------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(gap=st.floats(-1.0, 5.0), max_dt=st.floats(0.01, 1.0), frac=st.floats(0.01, 1.0))
def test_relative_dt_schedule_sums_to_the_gap_in_coarse_to_fine_steps(gap, max_dt, frac):
    min_dt = max_dt * frac
    # within max_steps=64 (truncation is a separate, warned case): about log2(max_dt / min_dt) + 1 doubling
    # steps from min_dt up to max_dt, then gap / max_dt steps of max_dt (gap / max_dt < 60 alone let
    # gap=0.59375, max_dt=0.01, frac=1/64 through, which needs 65)
    assume(gap / max_dt + math.log2(1 / frac) + 3 <= 64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        steps = relative_dt_schedule(gap, max_dt, min_dt)
    if gap <= 0:
        assert steps == []
        return
    assert math.isclose(sum(steps), gap, rel_tol=1e-9, abs_tol=1e-12)
    assert all(0 < s <= max_dt * (1 + 1e-12) for s in steps)
    assert steps == sorted(steps, reverse=True)  # coarse to fine
    assert steps[-1] <= min_dt * (1 + 1e-12)
    # fewest steps: one template step fewer could not reach the gap
    template = [min(max_dt, min_dt * 2.0**k) for k in range(len(steps))]
    assert sum(template[:-1]) < gap * (1 - 1e-12) <= sum(template) * (1 + 1e-12)


def test_relative_dt_schedule_truncates_with_a_warning_and_rejects_bad_bounds():
    with pytest.warns(UserWarning, match="max_steps"):
        steps = relative_dt_schedule(10.0, 0.2, 0.05, max_steps=8)
    assert len(steps) == 8 and sum(steps) < 10.0
    for max_dt, min_dt in ((0.0, 0.0), (0.1, 0.2), (0.1, -0.1), (float("nan"), 0.1)):
        with pytest.raises(ValueError):
            relative_dt_schedule(1.0, max_dt, min_dt)
    with pytest.raises(ValueError, match="finite"):
        relative_dt_schedule(float("nan"))
