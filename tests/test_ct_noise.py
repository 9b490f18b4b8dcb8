"""CT physics and low-dose noise: projector/FBP correctness and noise statistics against theory."""

import math

import pytest
import torch

from monai_flow.physics import CTScan, NUFFTPlan2D, ParallelBeamGeometry, hu_to_mu, low_dose_ct_noise, mu_to_hu
from monai_flow.transforms import CTDegradation, LowDoseCTNoise, NormalizedDegradation

SPACING = (1.5, 1.5)


def ellipse(h=96, w=96, ax=40.0, ay=40.0, value=0.0, background=-1000.0):
    """(h, w) HU slice: an elliptic water (or ``value``) region with semi-axes in pixels, in air."""
    y, x = torch.meshgrid(torch.arange(h) - (h - 1) / 2, torch.arange(w) - (w - 1) / 2, indexing="ij")
    img = torch.full((h, w), background)
    img[(x / ax) ** 2 + (y / ay) ** 2 < 1] = value
    return img


def centre(noise, half=10):
    h, w = noise.shape[-2:]
    return noise[..., h // 2 - half : h // 2 + half, w // 2 - half : w // 2 + half]


def test_nufft_matches_direct_dft():
    torch.manual_seed(0)
    ny, nx, p = 14, 11, 200
    img = torch.randn(1, ny, nx, dtype=torch.float64)
    xi_y, xi_x = torch.rand(p, dtype=torch.float64) - 0.5, torch.rand(p, dtype=torch.float64) - 0.5
    jy = torch.arange(ny, dtype=torch.float64) - (ny - 1) / 2
    jx = torch.arange(nx, dtype=torch.float64) - (nx - 1) / 2
    kernel = torch.exp(-2j * math.pi * (xi_y[:, None, None] * jy[:, None] + xi_x[:, None, None] * jx[None, :]))
    plan = NUFFTPlan2D((ny, nx), xi_y, xi_x, width=6)
    direct = (kernel * img[0]).sum((1, 2))
    assert torch.allclose(plan.forward(img)[0], direct, atol=1e-4 * direct.abs().max())
    values = torch.randn(1, p, dtype=torch.complex128)
    direct_adj = (values[0, :, None, None] * kernel.conj()).sum(0)
    assert torch.allclose(plan.adjoint(values)[0], direct_adj, atol=1e-4 * direct_adj.abs().max())


def test_projection_of_disk_matches_chord_length_and_fbp_inverts_it():
    mu_disk, radius_mm = 0.02, 30.0
    geometry = ParallelBeamGeometry((96, 96), (0.75, 0.75), num_views=180, dtype=torch.float64)
    mu = (ellipse(ax=radius_mm / 0.75, ay=radius_mm / 0.75, value=1.0, background=0.0) * mu_disk)[None].double()
    sino = geometry.project(mu)
    s = (torch.arange(geometry.num_bins) - (geometry.num_bins - 1) / 2) * geometry.bin_spacing
    chord = 2 * torch.sqrt((radius_mm**2 - s**2).clamp_min(0)) * mu_disk
    assert sino.shape == (1, 180, geometry.num_bins)
    for view in (0, 45, 137):  # rotation invariance of a centred disk
        assert (sino[0, view] - chord).abs().mean() < 0.01 * chord.max()
    recon = geometry.fbp(sino)[0]
    assert abs(centre(recon).mean().item() - mu_disk) < 0.01 * mu_disk
    assert recon[:8, :8].abs().mean() < 0.02 * mu_disk


def test_hu_mu_round_trip_and_air_clip():
    hu = torch.tensor([-1000.0, -2000.0, 0.0, 1000.0])
    mu = hu_to_mu(hu, 0.02)
    assert torch.allclose(mu, torch.tensor([0.0, 0.0, 0.02, 0.04]))
    assert torch.allclose(mu_to_hu(mu[2:], 0.02), hu[2:])


def test_projection_noise_variance_scales_as_inverse_dose_minus_one_and_is_unbiased():
    water = ellipse()[None, None].repeat(16, 1, 1, 1)
    var = {}
    for i, a in enumerate((0.1, 0.25, 0.5)):
        gen = torch.Generator().manual_seed(10 + i)
        noise = low_dose_ct_noise(water, a, SPACING, generator=gen, scan=CTScan(i0=1e5, electronic_std=0.0, num_views=360))
        region = centre(noise)
        assert abs(region.mean().item()) < 2.0  # HU bias in water
        var[a] = region.var().item() / (1 / a - 1)
    ref = var[0.5]
    for a, v in var.items():
        assert abs(v / ref - 1) < 0.10, var


def test_full_simulation_from_noise_free_input_is_unbiased_and_matches_yu_increment():
    water = ellipse()[None, None].repeat(16, 1, 1, 1)
    gen = torch.Generator().manual_seed(0)
    full = low_dose_ct_noise(water, 1.0, SPACING, input_noise="none", generator=gen, scan=CTScan(i0=1e5, electronic_std=0.0, num_views=360))
    increment = low_dose_ct_noise(water, 0.5, SPACING, generator=gen, scan=CTScan(i0=1e5, electronic_std=0.0, num_views=360))
    assert abs(centre(full).mean().item()) < 2.0
    # lowering the dose by half adds exactly the full-dose variance
    assert abs(centre(increment).var().item() / centre(full).var().item() - 1) < 0.10


def test_noise_is_larger_along_longer_paths():
    # 90 x 30 mm ellipse: the centre sees long horizontal paths, the tips short vertical ones
    slab = ellipse(96, 128, ax=60, ay=20)[None, None].repeat(16, 1, 1, 1)
    noise = low_dose_ct_noise(slab, 0.25, SPACING, generator=torch.Generator().manual_seed(1), scan=CTScan(i0=1e5, electronic_std=0.0, num_views=360))
    centre_std = noise[..., 43:53, 59:69].std()
    tip_std = noise[..., 43:53, 8:18].std()  # inside water near the left tip
    assert centre_std > 1.15 * tip_std
    # same position, longer paths: the centre of a 180 mm disk vs a 60 mm disk
    big, small = (ellipse(128, 128, r, r)[None, None].repeat(8, 1, 1, 1) for r in (60, 20))
    kw = dict(scan=CTScan(i0=1e5, electronic_std=0.0, num_views=360), generator=torch.Generator().manual_seed(2))
    ratio = centre(low_dose_ct_noise(big, 0.25, SPACING, **kw), 5).std() / centre(low_dose_ct_noise(small, 0.25, SPACING, **kw), 5).std()
    expected = math.exp(0.0192 * (180 - 60) / 2)  # std ~ e^{p/2}
    assert abs(ratio / expected - 1) < 0.25


def test_electronic_noise_adds_variance_at_low_dose():
    water = ellipse()[None, None].repeat(8, 1, 1, 1)
    quiet = low_dose_ct_noise(water, 0.1, SPACING, CTScan(i0=2e4, electronic_std=0.0, num_views=360), generator=torch.Generator().manual_seed(0))
    loud = low_dose_ct_noise(water, 0.1, SPACING, CTScan(i0=2e4, electronic_std=10.0, num_views=360), generator=torch.Generator().manual_seed(1))
    assert centre(loud).var() > 1.2 * centre(quiet).var()


def radial_nps(noise):
    """Radially averaged noise power in a low and a high frequency band of (N, H, W) noise."""
    power = torch.fft.fft2(noise).abs().square().mean(0)
    h, w = power.shape
    k = torch.sqrt(torch.fft.fftfreq(h)[:, None] ** 2 + torch.fft.fftfreq(w)[None, :] ** 2)
    return power[(k > 0.02) & (k < 0.1)].mean(), power[(k > 0.3) & (k < 0.45)].mean()


@pytest.mark.parametrize("domain", ["projection", "image"])
def test_noise_power_spectrum_is_ramp_like(domain):
    water = torch.zeros(8, 1, 64, 64)  # uniform water fills the slice
    noise = low_dose_ct_noise(water, 0.25, SPACING, domain=domain, generator=torch.Generator().manual_seed(2), scan=CTScan(num_views=360))
    low, high = radial_nps(noise[:, 0, 8:-8, 8:-8])
    assert high > 3 * low


def test_image_domain_variance_scaling_and_agreement_with_projection():
    water = ellipse()[None, None].repeat(16, 1, 1, 1)
    kw = dict(scan=CTScan(i0=1e5, electronic_std=0.0, num_views=360))
    v = {a: centre(low_dose_ct_noise(water, a, SPACING, domain="image", generator=torch.Generator().manual_seed(3), **kw)).var().item() for a in (0.1, 0.5)}
    assert abs((v[0.1] / 9) / v[0.5] - 1) < 0.10
    proj = centre(low_dose_ct_noise(water, 0.5, SPACING, generator=torch.Generator().manual_seed(4), **kw)).var().item()
    assert abs(v[0.5] / proj - 1) < 0.25


def test_ct_degradation_is_cot_consistent():
    """One step of dt multiplies the reference noise std by e^dt: added var = (e^{2dt} - 1) var_ref."""
    water = ellipse()[None, None].repeat(16, 1, 1, 1)
    op = CTDegradation(spacing=SPACING, i0=1e5, electronic_std=0.0, num_views=360)
    reference = low_dose_ct_noise(water, 1.0, SPACING, input_noise="none", generator=torch.Generator().manual_seed(5), scan=CTScan(i0=1e5, electronic_std=0.0, num_views=360))
    dt = torch.tensor([0.1] * 8 + [0.3] * 8)
    added = op(water, dt, generator=torch.Generator().manual_seed(6)) - water
    var_ref = centre(reference).var()
    for sel, step in ((slice(0, 8), 0.1), (slice(8, 16), 0.3)):
        ratio = centre(added[sel]).var() / var_ref
        assert abs(ratio / math.expm1(2 * step) - 1) < 0.15


def test_ct_degradation_estimates_the_reference_dose():
    water = ellipse()[None, None].repeat(4, 1, 1, 1)
    gens = torch.Generator().manual_seed(7)
    noisy = torch.cat([
        water[:2] + low_dose_ct_noise(water[:2], 1.0, SPACING, input_noise="none", generator=gens, scan=CTScan(i0=5e4, num_views=360, electronic_std=0.0)),
        water[2:] + low_dose_ct_noise(water[2:], 1.0, SPACING, input_noise="none", generator=gens, scan=CTScan(i0=4e5, num_views=360, electronic_std=0.0)),
    ])
    i0 = CTDegradation(spacing=SPACING, i0="estimate", num_views=360).reference_i0(noisy)
    assert i0[:2].max() < i0[2:].min()  # ranks the doses
    assert torch.all((i0[:2] / 5e4 - 1).abs() < 0.5) and torch.all((i0[2:] / 4e5 - 1).abs() < 0.5)


def test_transform_reads_spacing_from_metadata_and_smaller_pixels_are_noisier():
    from monai.data import MetaTensor

    water = ellipse(64, 64, 28, 28)[None]
    stds = []
    for mm in (0.5, 1.0):
        img = MetaTensor(water.clone(), affine=torch.diag(torch.tensor([mm, mm, 1.0, 1.0])))
        out = LowDoseCTNoise(dose_fraction=0.25, num_views=180)(img, seed=0)
        stds.append(centre(out - water, 8).std())
    assert stds[0] > stds[1]  # fixed photons per (smaller) bin: noisier


def test_ct_degradation_uses_per_sample_photons_given_per_call():
    """Known exposure: the added std scales like i0^-1/2 per sample, whatever the constructor's i0."""
    water = ellipse()[None, None].repeat(8, 1, 1, 1)
    op = NormalizedDegradation(CTDegradation(spacing=SPACING, i0=1.0, electronic_std=0.0, num_views=360), 1000.0)
    photons = torch.tensor([2e4] * 4 + [8e4] * 4)
    added = op(water / 1000, 0.3, generator=torch.Generator().manual_seed(8), i0=photons) - water / 1000
    ratio = centre(added[:4]).std() / centre(added[4:]).std()
    assert abs(ratio / 2.0 - 1) < 0.1
    with pytest.raises(ValueError, match="i0"):
        op(water / 1000, 0.3, i0=torch.tensor([1e4, -1.0]))
