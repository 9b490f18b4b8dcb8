"""Property-based tests (hypothesis) of the transforms' and schedules' contracts.

Each property is what the docstrings promise for every valid input, not a statistical tendency:
shapes, dtypes and containers are kept, magnitudes stay >= 0, a full dose adds nothing, the noise
level scales with the image (MR) and with dt exactly as the CoT mapping says (CT and MR, same
random draws), and invalid parameters raise ValueError. Sizes are small and the example counts
low so that the file runs in well under 30 s.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from monai_flow.inferers import relative_dt_schedule
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


@SLOW
@given(img=images(sizes=(8, 16), low=-1000.0, high=1500.0, dtypes=ANY_DTYPE), dose=st.floats(0.02, 1.0), domain=st.sampled_from(["projection", "image"]),
       input_noise=st.sampled_from(["full_dose", "none"]), electronic=st.floats(0.0, 10.0), seed=st.integers(0, 2**31 - 1))
def test_low_dose_ct_keeps_shape_and_dtype_and_stays_finite(img, dose, domain, input_noise, electronic, seed):
    for t in (LowDoseCTNoise(dose_fraction=dose, domain=domain, input_noise=input_noise, electronic_std=electronic, **CT_KW),
              RandLowDoseCTNoise(dose_fraction=(dose / 2, dose), domain=domain, input_noise=input_noise, **CT_KW)):
        out = t.set_random_state(seed)(img)
        assert out.shape == img.shape and out.dtype == expected_dtype(img) and torch.isfinite(out).all()


@SLOW
@given(img=images(sizes=(8, 16), low=-1000.0, high=1500.0), domain=st.sampled_from(["projection", "image"]),
       electronic=st.floats(0.0, 10.0), seed=st.integers(0, 2**31 - 1))
def test_full_dose_of_a_full_dose_scan_adds_nothing(img, domain, electronic, seed):
    out = LowDoseCTNoise(dose_fraction=1.0, domain=domain, electronic_std=electronic, input_noise="full_dose", **CT_KW)(img, seed=seed)
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
                 lambda: CTDegradation(mu_water=0.0)):
        with pytest.raises(ValueError):
            make()


# ---------------------------------------------------------------------------------------------
# RelativeFlow degradation operators: shape, and noise growing with dt exactly as the CoT mapping
# ---------------------------------------------------------------------------------------------
@st.composite
def batches(draw, sizes=(8, 16), low=0.0, high=1.0):
    """A float32 batch (B, C, H, W) or (B, C, H, W, D) with values in [low, high]."""
    shape = draw(images(sizes=sizes, dtypes=(torch.float32,))).shape
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    return low + (high - low) * torch.rand(draw(st.integers(1, 3)), *shape, generator=g)


@st.composite
def dt_pairs(draw):
    """dt1 < dt2 in (0, 1.5]."""
    dt1 = draw(st.floats(0.01, 1.0))
    return dt1, dt1 + draw(st.floats(0.005, 0.5))


@SLOW
@given(x=batches(low=-1000.0, high=1000.0), dts=dt_pairs(), domain=st.sampled_from(["projection", "image"]), seed=st.integers(0, 2**31 - 1))
def test_ct_degradation_noise_grows_with_dt_as_cot(x, dts, domain, seed):
    """Without electronic noise the Yu increment's std is sqrt((1 - a)/a) = sqrt(e^{2 dt} - 1) times a
    per-bin factor, so with the same draws the added noise at dt2 is that ratio times the one at dt1."""
    op = CTDegradation(electronic_std=0.0, domain=domain, **CT_KW)
    b = x.shape[0]
    n1 = op(x, torch.full((b,), dts[0]), generator=torch.Generator().manual_seed(seed)) - x
    n2 = op(x, torch.full((b,), dts[1]), generator=torch.Generator().manual_seed(seed)) - x
    assert n1.shape == x.shape and n2.shape == x.shape
    ratio = math.sqrt(math.expm1(2 * dts[1]) / math.expm1(2 * dts[0]))
    torch.testing.assert_close(n2, ratio * n1, rtol=2e-3, atol=2e-3 * float(n1.abs().max()) + 1e-4)
    assert float(n2.std()) >= float(n1.std())


@FAST
@given(x=batches(sizes=(4, 8, 12)), dts=dt_pairs(), s_ref=st.floats(0.001, 1.0), coils=st.integers(1, 4), seed=st.integers(0, 2**31 - 1))
def test_mr_degradation_keeps_shape_and_noise_grows_with_dt_as_cot(x, dts, s_ref, coils, seed):
    op = MRDegradation(reference_std=s_ref, num_coils=coils)
    b = x.shape[0]
    y = op(x, torch.full((b,), dts[1]), generator=torch.Generator().manual_seed(seed))
    assert y.shape == x.shape and y.dtype == x.dtype and (y >= 0).all()
    # background (zero signal): M = s(dt) * |noise draw|, s(dt) = s_ref sqrt(e^{2 dt} - 1)
    zero = torch.zeros_like(x)
    m1 = op(zero, torch.full((b,), dts[0]), generator=torch.Generator().manual_seed(seed))
    m2 = op(zero, torch.full((b,), dts[1]), generator=torch.Generator().manual_seed(seed))
    ratio = math.sqrt(math.expm1(2 * dts[1]) / math.expm1(2 * dts[0]))
    torch.testing.assert_close(m2, ratio * m1, rtol=1e-4, atol=1e-7)
    assert (m2 >= m1).all()


# ---------------------------------------------------------------------------------------------
# relative_dt_schedule
# ---------------------------------------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(gap=st.floats(-1.0, 5.0), max_dt=st.floats(0.01, 1.0), frac=st.floats(0.01, 1.0))
def test_relative_dt_schedule_sums_to_the_gap_in_coarse_to_fine_steps(gap, max_dt, frac):
    min_dt = max_dt * frac
    assume(gap / max_dt < 60)  # within max_steps=64 (truncation is a separate, warned case)
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
