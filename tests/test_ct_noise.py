"""CT physics and low-dose noise: projector/FBP correctness and noise statistics against theory."""

import math

import pytest
import torch

from monai_flow.data.phantoms import ct_phantom
from monai_flow.physics import (
    CTScan,
    NUFFTPlan2D,
    estimate_ct_filter,
    estimate_ct_i0,
    ParallelBeamGeometry,
    hu_to_mu,
    low_dose_ct_noise,
    mu_to_hu,
    predicted_ct_noise_std,
)
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


def chord_lengths(px, py, ax, ay, angles):
    """Lengths of the chords of the ellipse (x/ax)^2 + (y/ay)^2 < 1 through (px, py) (inside) along
    the directions ``angles``, in the units of the arguments (analytic: roots of a quadratic in t)."""
    c, s = torch.cos(angles), torch.sin(angles)
    a = (c / ax) ** 2 + (s / ay) ** 2
    b = 2 * (px * c / ax**2 + py * s / ay**2)
    k = (px / ax) ** 2 + (py / ay) ** 2 - 1
    return torch.sqrt((b * b - 4 * a * k).clamp_min(0)) / a


def expected_fbp_variance(rows, cols, shape, ax, ay, mm, extra=0.0, mu=0.0192, num_angles=720):
    """Mean over the pixels (rows x cols) of an (h, w) slice of the water ellipse (semi-axes in pixels)
    of mean_theta e^p (1 + extra e^p), p = mu * chord: the FBP noise variance of a ramp filter on square
    pixels up to a constant gain (sinogram variance e^p / i0 (1 + extra e^p), averaged over the views)."""
    h, w = shape
    angles = torch.arange(num_angles, dtype=torch.float64) * math.pi / num_angles
    values = []
    for i in rows:
        for j in cols:
            e_p = torch.exp(mu * mm * chord_lengths(j - (w - 1) / 2, i - (h - 1) / 2, ax, ay, angles))
            values.append((e_p * (1 + extra * e_p)).mean())
    return float(torch.stack(values).mean())


def offset_body(n, mm, generator):
    """(n, n, 4) HU volume: an off-centre soft-tissue ellipse (220 x 150 mm) with a 30 mm bone insert, in
    air; position and size jitter with ``generator``."""
    jitter = 1 + 0.1 * (2 * torch.rand(4, generator=generator) - 1)
    y, x = torch.meshgrid((torch.arange(n) - (n - 1) / 2) * mm, (torch.arange(n) - (n - 1) / 2) * mm, indexing="ij")
    img = torch.full((n, n), -1000.0)
    img[((x - 15 * jitter[0]) / (110 * jitter[1])) ** 2 + ((y + 8 * jitter[2]) / (75 * jitter[3])) ** 2 < 1] = 40.0
    img[((x - 40) / 15) ** 2 + ((y - 20) / 15) ** 2 < 1] = 1000.0
    return img[..., None].repeat(1, 1, 4)


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
    """FBP noise variance at a pixel is the mean over views of e^p on the rays through it (ramp filter, square
    pixels): the measured centre-to-tip std ratio of an ellipse matches that ratio computed from the analytic
    chord lengths, and the centre of a large disk matches e^{(p_big - p_small)/2}."""
    # 90 x 30 mm (semi-axes) ellipse: the centre sees long horizontal paths, the tips short vertical ones. The
    # tip shares the long horizontal paths, which dominate the mean of e^p: about 1.19, not e^{(p_c - p_t)/2}.
    slab = ellipse(96, 128, ax=60, ay=20)[None, None].repeat(32, 1, 1, 1)
    noise = low_dose_ct_noise(slab, 0.25, SPACING, generator=torch.Generator().manual_seed(1), scan=CTScan(i0=1e5, electronic_std=0.0, num_views=360))
    rows, centre_cols, tip_cols = range(43, 53), range(59, 69), range(8, 18)  # the tip region is inside the water
    measured = noise[..., rows.start : rows.stop, centre_cols.start : centre_cols.stop].std() / noise[..., rows.start : rows.stop, tip_cols.start : tip_cols.stop].std()
    expected = math.sqrt(expected_fbp_variance(rows, centre_cols, (96, 128), 60, 20, 1.5) / expected_fbp_variance(rows, tip_cols, (96, 128), 60, 20, 1.5))
    # each region: 32 slices x 100 nearly uncorrelated pixels, std to ~1.5 %; the ratio to ~2.5 % (0.045 over 4 seeds)
    assert expected == pytest.approx(1.19, abs=0.01)
    assert abs(measured / expected - 1) < 0.08, (float(measured), expected)
    # same position, longer paths: the centre of a 180 mm disk vs a 60 mm disk (every chord is the diameter)
    big, small = (ellipse(128, 128, r, r)[None, None].repeat(8, 1, 1, 1) for r in (60, 20))
    kw = dict(scan=CTScan(i0=1e5, electronic_std=0.0, num_views=360), generator=torch.Generator().manual_seed(2))
    ratio = centre(low_dose_ct_noise(big, 0.25, SPACING, **kw), 5).std() / centre(low_dose_ct_noise(small, 0.25, SPACING, **kw), 5).std()
    expected = math.exp(0.0192 * (180 - 60) / 2)  # std ~ e^{p/2}
    assert abs(ratio / expected - 1) < 0.12  # 800 pixels per region: ~3 % per std, ~4 % on the ratio


def test_electronic_noise_adds_variance_at_low_dose():
    """Yu et al. increment to dose a: var = (1 - a)/a e^p/i0 (1 + (1 + a)/a s_e^2 e^p / i0); the loud/quiet
    variance ratio is the electronic factor, averaged over the central pixels and the views."""
    water = ellipse()[None, None].repeat(16, 1, 1, 1)
    a, i0, s_e = 0.1, 2e4, 10.0
    quiet = low_dose_ct_noise(water, a, SPACING, CTScan(i0=i0, electronic_std=0.0, num_views=360), generator=torch.Generator().manual_seed(0))
    loud = low_dose_ct_noise(water, a, SPACING, CTScan(i0=i0, electronic_std=s_e, num_views=360), generator=torch.Generator().manual_seed(1))
    region = range(38, 58)  # centre(noise, 10) of a 96 x 96 slice
    k = (1 + a) / a * s_e**2 / i0
    expected = expected_fbp_variance(region, region, (96, 96), 40, 40, 1.5, extra=k) / expected_fbp_variance(region, region, (96, 96), 40, 40, 1.5)
    assert expected == pytest.approx(1.53, abs=0.02)
    # 16 x 400 pixels per variance: ~2.5 % each, ~3.5 % on the ratio
    assert abs(float(centre(loud).var() / centre(quiet).var()) / expected - 1) < 0.12


@pytest.mark.parametrize("electronic_std", [0.0, 10.0])
def test_predicted_full_dose_noise_matches_simulation(electronic_std):
    """predicted_ct_noise_std is the centre noise of a whole acquisition at i0: var_p = e^p/i0 (1 + s_e^2 e^p/i0).

    The reviewer's case: a 160 mm water cylinder at i0 = 5e3 photons per bin with 10 counts of electronic
    noise, where the old prediction (the Yu increment at a = 1/2, three times the electronic term) was
    about 27 % too high. The image-domain mode uses the same centre prediction."""
    water = ellipse(64, 64, 80 / 3, 80 / 3)[None, None].repeat(32, 1, 1, 1)  # 3 mm pixels
    scan = CTScan(i0=5e3, electronic_std=electronic_std, num_views=360)
    simulated = centre(low_dose_ct_noise(water, 1.0, (3.0, 3.0), scan, input_noise="none", generator=torch.Generator().manual_seed(0)), 6).std()
    image = centre(low_dose_ct_noise(water, 1.0, (3.0, 3.0), scan, domain="image", input_noise="none", generator=torch.Generator().manual_seed(1)), 6).std()
    predicted = predicted_ct_noise_std(water[:1], (3.0, 3.0), scan)
    # 32 slices x 144 pixels: the std to ~1.5 %; the prediction is the exact centre (the region's +-18 mm see
    # ~1 % shorter paths) and the local-ray approximation of the FBP variance is ~1 % high there
    assert abs(float(predicted / simulated) - 1) < 0.06, (float(predicted), float(simulated))
    assert abs(float(image / simulated) - 1) < 0.06, (float(image), float(simulated))


@pytest.mark.parametrize("spacing", [(1.0, 2.0), (2.0, 1.0)])
def test_rectangular_pixels_predicted_and_image_domain_noise_match_simulation(spacing):
    """With dy != dx the bins (min spacing wide) carry frequencies the coarser axis cannot hold: the FBP
    gain is the band-limited integral per view direction, not pi^2 / (12 V d^2) (which made the predicted
    and image-domain std about 20 % too high here)."""
    water = torch.zeros(32, 1, 64, 64)  # water fills the 64 x 128 mm slice
    scan = CTScan(i0=1e5, electronic_std=0.0, num_views=180)
    simulated = centre(low_dose_ct_noise(water, 1.0, spacing, scan, input_noise="none", generator=torch.Generator().manual_seed(0)), 6).std()
    image = centre(low_dose_ct_noise(water, 1.0, spacing, scan, domain="image", input_noise="none", generator=torch.Generator().manual_seed(1)), 6).std()
    predicted = predicted_ct_noise_std(water[:1], spacing, scan)
    # 32 slices x 144 pixels: ~1.5 % per std
    assert abs(float(predicted / simulated) - 1) < 0.06, (float(predicted), float(simulated))
    assert abs(float(image / simulated) - 1) < 0.06, (float(image), float(simulated))


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
    # a ramp spectrum |k|: the bands' mean |k| ratio, 5.8 (white noise would give 1, |k|^2 about 30);
    # the unwindowed 48 x 48 region leaks some high power into the low band (measured 5.3 - 5.4)
    k = torch.sqrt(torch.fft.fftfreq(48)[:, None] ** 2 + torch.fft.fftfreq(48)[None, :] ** 2)
    ramp = k[(k > 0.3) & (k < 0.45)].mean() / k[(k > 0.02) & (k < 0.1)].mean()
    assert abs(float(high / low / ramp) - 1) < 0.2


def test_image_domain_variance_scaling_and_agreement_with_projection():
    water = ellipse()[None, None].repeat(16, 1, 1, 1)
    kw = dict(scan=CTScan(i0=1e5, electronic_std=0.0, num_views=360))
    v = {a: centre(low_dose_ct_noise(water, a, SPACING, domain="image", generator=torch.Generator().manual_seed(3), **kw)).var().item() for a in (0.1, 0.5)}
    assert abs((v[0.1] / 9) / v[0.5] - 1) < 0.10
    proj = centre(low_dose_ct_noise(water, 0.5, SPACING, generator=torch.Generator().manual_seed(4), **kw)).var().item()
    assert abs(v[0.5] / proj - 1) < 0.12  # 16 x 400 pixels per variance: ~4 % on the ratio


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


@pytest.mark.parametrize(
    "body, n, mm, num_views, i0, electronic_std, tolerance",
    [
        ("offset", 96, 3.0, 720, 3e4, 10.0, 0.10),
        ("offset", 128, 2.0, 360, 1e5, 5.0, 0.10),
        ("chest", 128, 2.5, 720, 1e5, 5.0, 0.10),
        ("chest", 128, 2.0, 360, 3e5, 5.0, 0.15),
        ("chest", 128, 1.5, 720, 1e4, 10.0, 0.10),
    ],
)
def test_ct_degradation_estimates_the_reference_dose(body, n, mm, num_views, i0, electronic_std, tolerance):
    """i0="estimate" inverts a full acquisition at i0 (with the operator's electronic noise) within 10 %.

    Bodies that are not a centred disk: an off-centre ellipse with a bone insert (4 slices per sample) and
    the chest phantom (lungs, fat rim, vertebra, texture; 8 slices, as it has little soft tissue). Over 24
    to 40 samples per setting the estimate was 0.98 - 1.02 on average with a 2 - 3 % spread (one sigma):
    +-10 % is about three sigma. The realistic chest phantom at the lowest noise (3e5 photons, ~6 HU) reads
    0.96 +- 0.04 over 12 samples (lung texture and vessels at pixel scale count as noise), hence 15 % there.
    (The old estimate compared the median 7 x 7 local std anywhere with the
    noise at the centre: 1.35 - 1.45 x on the ellipse, 0.01 - 0.3 x on the chest phantom.)"""
    g = torch.Generator().manual_seed(7)
    make = (lambda: offset_body(n, mm, g)) if body == "offset" else (lambda: ct_phantom((n, n, 8), generator=g))
    clean = torch.stack([make() for _ in range(2)])[:, None]
    scan = CTScan(i0=i0, electronic_std=electronic_std, num_views=num_views)
    noisy = clean + low_dose_ct_noise(clean, 1.0, (mm, mm), scan, input_noise="none", generator=g)
    estimated = CTDegradation(spacing=(mm, mm), i0="estimate", electronic_std=electronic_std, num_views=num_views).reference_i0(noisy)
    assert torch.all((estimated / i0 - 1).abs() < tolerance), (estimated / i0).tolist()


def test_ct_i0_estimate_ranks_doses_and_ignores_a_noise_free_image():
    water = ellipse()[None, None].repeat(4, 1, 1, 1)
    gen = torch.Generator().manual_seed(7)
    noisy = torch.cat([
        water[:2] + low_dose_ct_noise(water[:2], 1.0, SPACING, input_noise="none", generator=gen, scan=CTScan(i0=5e4, num_views=360, electronic_std=0.0)),
        water[2:] + low_dose_ct_noise(water[2:], 1.0, SPACING, input_noise="none", generator=gen, scan=CTScan(i0=4e5, num_views=360, electronic_std=0.0)),
    ])
    i0 = CTDegradation(spacing=SPACING, i0="estimate", num_views=360, electronic_std=0.0).reference_i0(torch.cat([noisy, water[:1]]))
    assert i0[:2].max() < i0[2:4].min()  # ranks the doses
    # one slice each (a 6 % spread over 16 draws); at the centre of a disk the local-ray approximation of the
    # FBP variance is a few % high, the worst case
    assert torch.all((i0[:2] / 5e4 - 1).abs() < 0.25) and torch.all((i0[2:4] / 4e5 - 1).abs() < 0.25)
    assert i0[4] > 1e12  # no measurable noise: no photon limit


def test_transform_reads_spacing_from_metadata_and_smaller_pixels_are_noisier():
    """Same pixels, spacing from the affine: at 0.5 mm the disk is half as wide (p halves) and the bins half as
    wide (FBP gain x 4): std ratio 2 e^{(p_0.5 - p_1) / 2} = 1.53 (the electronic term changes it < 0.1 %)."""
    from monai.data import MetaTensor

    water = ellipse(64, 64, 28, 28)[None, ..., None].repeat(1, 1, 1, 8)  # (C, H, W, D): 8 slices
    stds = []
    for mm in (0.5, 1.0):
        img = MetaTensor(water.clone(), affine=torch.diag(torch.tensor([mm, mm, 1.0, 1.0])))
        out = LowDoseCTNoise(dose_fraction=0.25, num_views=180)(img, seed=0)
        stds.append(centre((out - water).permute(0, 3, 1, 2), 8).std())
    expected = 2 * math.exp(0.0192 * 2 * 28 * (0.5 - 1.0) / 2)
    assert abs(float(stds[0] / stds[1]) / expected - 1) < 0.1  # 8 x 256 pixels per std: ~2.5 % on the ratio


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


def test_noise_basis_recombines_into_the_increment_at_any_dose():
    """sqrt((1-a)/a) Q + sqrt(1-a^2)/a E has the variance of the direct simulation at dose a, at a
    photon level where the electronic part matters (the two doses weight it differently)."""
    from monai_flow.physics import low_dose_noise_basis

    water = ellipse(64, 64, 28, 28)[None, None].repeat(24, 1, 1, 1)
    scan = CTScan(i0=3e3, electronic_std=10.0, num_views=180)
    spacing = (3.0, 3.0)
    q, e = low_dose_noise_basis(water, spacing, scan, generator=torch.Generator().manual_seed(0))
    assert q.shape == water.shape and e.shape == water.shape
    for a in (0.5, 0.1):
        combined = math.sqrt((1 - a) / a) * q + math.sqrt(1 - a * a) / a * e
        direct = low_dose_ct_noise(water, a, spacing, scan, generator=torch.Generator().manual_seed(1))
        ratio = centre(combined, 8).var() / centre(direct, 8).var()
        assert abs(ratio.item() - 1) < 0.08, (a, ratio)
    electronic_share = centre(e, 8).var() / centre(q, 8).var()
    assert electronic_share > 0.05  # the electronic basis is not negligible here
    assert low_dose_noise_basis(water[:2], spacing, CTScan(electronic_std=0.0))[1] is None


@pytest.mark.parametrize("true_filter", ["ramp", "hann"])
def test_estimate_ct_filter_finds_the_reconstruction_kernel_of_the_noise(true_filter):
    """Scans simulated with a sharp (ramp) or a smooth (Hann) FBP filter (realistic chest phantom, 1.4 mm,
    720 views): under the right filter the fine- and coarse-scale photon estimates agree; a wrong
    candidate's disagreement has the sign of its sharpness (sharper: reads more photons at the fine
    scale). Ramp and Shepp-Logan differ only at the highest frequencies (measured disagreements
    0.16 and -0.13 on ramp noise), so either is accepted for ramp noise."""
    g = torch.Generator().manual_seed(3)
    clean = ct_phantom((128, 128, 2), generator=g)[None, None]
    scan = CTScan(i0=1e5, electronic_std=5.0, num_views=720, filter_name=true_filter)
    noisy = clean + low_dose_ct_noise(clean, 1.0, (1.4, 1.4), scan, input_noise="none", generator=g)
    best, disagreement = estimate_ct_filter(noisy, (1.4, 1.4), CTScan(electronic_std=5.0, num_views=720))
    assert best in (("ramp", "shepp-logan") if true_filter == "ramp" else ("hann",)), disagreement
    assert disagreement["ramp"] > disagreement["shepp-logan"] > disagreement["hann"]
    assert abs(disagreement[true_filter]) < 0.3 and abs(disagreement["ramp" if true_filter == "hann" else "hann"]) > 0.8
    with pytest.raises(ValueError, match="zero-sum"):
        estimate_ct_i0(noisy, (1.4, 1.4), scan, detail=torch.ones(2, 2))
