"""MR Rician / noncentral-chi noise: moments against theory, explicit levels, estimator, operator."""

import math

import numpy as np
import pytest
import torch

from monai_flow.transforms import (
    MRDegradation,
    RandRicianMRNoise,
    RicianMRNoise,
    estimate_rician_noise_std,
    noncentral_chi_noise,
)


@pytest.mark.parametrize("num_coils", [1, 4])
def test_second_moment_is_a2_plus_2ls2(num_coils):
    a, s = 50.0, 4.0
    m = noncentral_chi_noise(torch.full((1, 400_000), a, dtype=torch.float64), s, num_coils, torch.Generator().manual_seed(0))
    expected = a**2 + 2 * num_coils * s**2
    assert abs(m.square().mean().item() / expected - 1) < 0.005


def test_background_is_rayleigh():
    s = 3.0
    m = noncentral_chi_noise(torch.zeros(1, 400_000, dtype=torch.float64), s, 1, torch.Generator().manual_seed(1))
    assert abs(m.mean().item() / (s * math.sqrt(math.pi / 2)) - 1) < 0.01  # 1.2533 s
    assert abs(m.std().item() / (s * math.sqrt(2 - math.pi / 2)) - 1) < 0.01  # 0.6551 s


def test_multicoil_background_mean_is_chi_2l():
    s, coils = 2.0, 8
    m = noncentral_chi_noise(torch.zeros(1, 200_000, dtype=torch.float64), s, coils, torch.Generator().manual_seed(2))
    chi_mean = s * math.sqrt(2) * math.gamma(coils + 0.5) / math.gamma(coils)
    assert abs(m.mean().item() / chi_mean - 1) < 0.01


def test_levels_are_explicit_relative_to_max_and_percentile():
    img = np.zeros((1, 64, 64, 16), np.float32)
    img[:, 16:48, 16:48] = 200.0
    img[0, 0, 0, 0] = 1000.0  # one hot voxel
    bg = (slice(None), slice(0, 8), slice(8, 64))
    for relative_to, reference in (("absolute", 1.0), ("max", 1000.0), ("percentile", 200.0)):
        std = 6.0 if relative_to == "absolute" else 0.02
        out = RicianMRNoise(std=std, relative_to=relative_to, percentile=99)(img, seed=0)
        s_true = std * reference
        assert isinstance(out, np.ndarray) and out.dtype == np.float32
        assert abs(out[bg].mean() / (1.2533 * s_true) - 1) < 0.03


def test_random_version_draws_from_the_given_range():
    t = RandRicianMRNoise(std=(0.02, 0.04), relative_to="max")
    t.set_random_state(0)
    levels = []
    for _ in range(200):
        t.randomize()
        levels.append(t._level)
    assert min(levels) >= 0.02 and max(levels) <= 0.04
    assert min(levels) < 0.022 and max(levels) > 0.038  # covers the range, unlike U(0, std)


@pytest.mark.parametrize("num_coils", [1, 4])
def test_background_estimator_recovers_sigma(num_coils):
    img = torch.zeros(2, 1, 48, 48, 24)
    img[:, :, 8:40, 8:40, 4:20] = 150.0
    s = torch.tensor([2.0, 7.0])
    noisy = noncentral_chi_noise(img, s, num_coils, torch.Generator().manual_seed(3))
    est = estimate_rician_noise_std(noisy, num_coils=num_coils)
    assert torch.allclose(est, s, rtol=0.03)


def test_mr_degradation_is_cot_consistent():
    """Noise power 2 s^2 of the reference grows to 2 s^2 e^{2 dt} (std times e^dt)."""
    s_ref = 3.0
    reference = noncentral_chi_noise(torch.zeros(2, 1, 64, 64, 32), s_ref, 1, torch.Generator().manual_seed(4))
    dt = torch.tensor([0.1, 0.4])
    for op in (MRDegradation(reference_std=s_ref), MRDegradation(reference_std=None)):
        y = op(reference, dt, generator=torch.Generator().manual_seed(5))
        power = y.square().reshape(2, -1).mean(1) / 2
        assert torch.allclose(power, s_ref**2 * torch.exp(2 * dt), rtol=0.02)
    dose = MRDegradation(reference_std=s_ref, dt_mapping="dose")(reference, dt, generator=torch.Generator().manual_seed(5))
    assert torch.allclose(dose.square().reshape(2, -1).mean(1) / 2, s_ref**2 * torch.exp(dt), rtol=0.02)


def test_bad_parameters_raise_clear_errors():
    with pytest.raises(ValueError, match="std"):
        RicianMRNoise(std=-0.1)
    with pytest.raises(ValueError, match="std"):
        RandRicianMRNoise(std=(0.05, 0.01))
    with pytest.raises(ValueError, match="relative_to"):
        RicianMRNoise(relative_to="mean")
    with pytest.raises(ValueError, match="num_coils"):
        RicianMRNoise(num_coils=0)
    with pytest.raises(ValueError, match="dt_mapping"):
        MRDegradation(dt_mapping="linear")
    with pytest.raises(ValueError, match="dt"):
        MRDegradation(reference_std=1.0)(torch.ones(2, 1, 8, 8), torch.tensor([0.1, -0.1]))
