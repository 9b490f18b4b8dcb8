"""Noise-level estimators, used by the degradation operators and by ``auto`` denoising schedules.

All take a batch (B, C, *spatial) and return one value per sample, shape (B,): a noise standard
deviation (:func:`estimate_rician_noise_std`, :func:`estimate_ct_noise_std`) or the photon count
of a CT scan (:func:`estimate_ct_i0`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from monai_flow.axial import to_axial_slices

from .ct_geometry import directional_noise_gain, parallel_beam_geometry
from .ct_noise import sinogram_noise_variance
from .ct_scan import CTScan, check_spacing, hu_to_mu

__all__ = ["estimate_ct_i0", "estimate_rician_noise_std", "estimate_ct_noise_std"]

#: 2 x 2 diagonal Haar detail: zero on constants and on linear ramps, passes the high frequencies
#: where most of the power of ramp-filtered FBP noise lies
_DIAGONAL_DETAIL = torch.tensor([[0.5, -0.5], [-0.5, 0.5]])


def estimate_rician_noise_std(
    image: torch.Tensor, num_coils: int = 1, cutoff: float = 2.5, iterations: int = 20
) -> torch.Tensor:
    """Per-sample noise ``s`` of a magnitude MR image from its background (A = 0) voxels.

    Background magnitudes follow a chi distribution with 2L degrees of freedom (Rayleigh for
    L = 1), whose density peaks at ``s sqrt(2L - 1)``. Starting from the histogram mode of the
    lower half of the intensities, the estimate is refined by moments of the chi distribution
    truncated at ``cutoff * s * sqrt(2L)``: voxels below the cut are taken as background,
    ``s^2 = E[M^2 | M < T] / (2L c(T))`` with ``c`` the truncation correction, repeated.
    Exact zeros (masked or zero-filled background) are ignored. Needs a background of at least
    a few percent of the voxels, as in a head or body scan with air around it.
    """
    if num_coils < 1:
        raise ValueError(f"num_coils must be >= 1, got {num_coils}.")
    flat = image.detach().reshape(image.shape[0], -1).double()
    dof = 2 * num_coils
    estimates = []
    for values in flat:
        values = values[values > 0]
        if values.numel() < 16:
            raise ValueError("estimate_rician_noise_std: fewer than 16 non-zero voxels in a sample.")
        s = _histogram_mode(values[values <= values.median()]) / math.sqrt(dof - 1)
        for _ in range(iterations):
            threshold = cutoff * s * math.sqrt(dof)
            background = values[values < threshold]
            if background.numel() < 8:
                break
            s_new = math.sqrt(float(background.square().mean()) / (dof * _chi_truncation(threshold / s, dof)))
            if abs(s_new - s) <= 1e-6 * s:
                s = s_new
                break
            s = s_new
        estimates.append(s)
    return torch.tensor(estimates, dtype=image.dtype, device=image.device)


def estimate_ct_noise_std(
    image: torch.Tensor, window: int = 7, hu_range: tuple[float, float] = (-300.0, 300.0)
) -> torch.Tensor:
    """Per-sample global noise level (HU) of a CT image: the median local standard deviation.

    Local standard deviations are taken in ``window`` x ``window`` patches of each axial slice
    (the first two spatial axes) whose mean lies in ``hu_range`` (soft tissue: excludes air,
    lungs and bone edges); their median is robust to the few patches that straddle anatomy
    (Christianson et al., Radiology 2015, "global noise level"). It measures the actual pixel
    noise whatever its spatial correlation, so it suits FBP noise with a ramp-like spectrum.
    Samples without any soft-tissue patch fall back to all patches.
    """
    if image.ndim < 4:
        raise ValueError(f"expected a batch (B, C, H, W[, D]), got shape {tuple(image.shape)}.")
    slices, _ = to_axial_slices(image.detach().float())
    x = slices.reshape(image.shape[0], -1, *slices.shape[-2:])  # a sample's axial slices as channels
    n = window * window
    mean = F.avg_pool2d(x, window, stride=window // 2 + 1)
    mean_sq = F.avg_pool2d(x.square(), window, stride=window // 2 + 1)
    local_std = ((mean_sq - mean.square()).clamp_min(0) * n / (n - 1)).sqrt()
    results = []
    for stds, means in zip(local_std.reshape(x.shape[0], -1), mean.reshape(x.shape[0], -1)):
        tissue = (means >= hu_range[0]) & (means <= hu_range[1])
        results.append(stds[tissue].median() if tissue.any() else stds.median())
    return torch.stack(results).to(image.dtype)


def estimate_ct_i0(
    image: torch.Tensor,
    spacing: Sequence[float],
    scan: CTScan = CTScan(),
    hu_range: tuple[float, float] = (-300.0, 300.0),
    edge_hu: float = 100.0,
    smoothing: int = 5,
    grid_points: int = 16,
    num_angles: int = 16,
    cutoff: float = 2.5,
    iterations: int = 30,
) -> torch.Tensor:
    """Per-sample photons per bin ``i0`` (B,) of full-dose CT scans (B, C, H, W[, D]) in HU, from their noise.

    The inverse of :func:`~monai_flow.physics.low_dose_ct_noise` at full dose from noise-free data
    (``input_noise="none"``) with the geometry and electronic noise of ``scan`` (its ``i0`` is
    ignored); axial slices are (H, W) with pixel ``spacing`` (dy, dx) in mm. Measured and predicted
    quantities are the same, position by position:

    - measured: the 2 x 2 diagonal detail ``d`` of each slice (a high-pass that ignores smooth
      anatomy and texture), at positions whose neighbourhood is flat soft tissue (every
      ``smoothing`` x ``smoothing`` local mean in ``hu_range`` and varying by at most ``edge_hu``:
      no edges; the local means are nearly noise-free since FBP noise has little low-frequency
      power, so the selection does not depend on the noise it measures);
    - predicted: the variance of ``d`` at each position, ``A / i0 + B / i0^2`` with the quantum
      term ``A`` and electronic term ``B`` from the rays through the position
      (as :func:`~monai_flow.physics.ct_noise.fbp_noise_variance` with the detail as kernel,
      on a ``grid_points`` x ``grid_points`` grid, interpolated; line integrals from
      the smoothed image, so noise in the air is not rectified by the clip at mu = 0);
    - estimate: ``d`` is a linear function of Gaussian noise, so ``z = d / sqrt(A + B / i0)`` is
      N(0, 1 / i0) exactly: the second moment of ``z`` truncated at ``cutoff`` standard deviations
      (a few edges left are outliers) with the truncation corrected, iterated from the median
      |z|. Nothing to calibrate, unlike the median of 7 x 7 sample stds (biased by the spatial
      correlation of the noise and by the structure inside each window, and not comparable with
      the noise at one position).

    Accuracy on simulated scans: 0.98 - 1.02 x the true i0 on average; the spread (one sigma) is
    about 5 % per few thousand selected positions (3 % for 4 - 8 slices of a 128 x 128 body). Left:
    the local-ray approximation of the FBP variance (1 - 3 % high at the centre of a large body:
    the ramp kernel also draws noise from distant bins, whose rays are shorter) and pixel-scale
    anatomy, which counts as noise (the chest phantom's texture is the noise of i0 ~ 1e7, so
    i0 = 1e6 comes out 10 % low). A sample without flat soft tissue falls back to all soft-tissue
    positions, then to all positions (and overestimates the noise).
    """
    if image.ndim < 4:
        raise ValueError(f"expected a batch (B, C, H, W[, D]), got shape {tuple(image.shape)}.")
    spacing = check_spacing(spacing)
    slices, _ = to_axial_slices(image.detach().float())
    slices = slices.reshape(-1, *slices.shape[-2:])  # (B * S, H, W)
    per_sample = slices.shape[0] // image.shape[0]
    h, w = slices.shape[-2:]
    if min(h, w) < 4:
        raise ValueError(f"estimate_ct_i0 needs axial slices of at least 4 x 4 pixels, got {h} x {w}.")
    geometry = parallel_beam_geometry((h, w), spacing, scan.num_views, scan.num_bins, scan.filter_name, str(slices.device))
    x = slices[:, None]
    smooth = F.avg_pool2d(x, smoothing, stride=1, padding=smoothing // 2, count_include_pad=False)
    lo = -F.max_pool2d(-smooth, smoothing, stride=1, padding=smoothing // 2)
    hi = F.max_pool2d(smooth, smoothing, stride=1, padding=smoothing // 2)
    lo, hi = -F.max_pool2d(-lo, 2, stride=1), F.max_pool2d(hi, 2, stride=1)  # over each 2 x 2 support
    flat = ((lo >= hu_range[0]) & (hi <= hu_range[1]) & (hi - lo <= edge_hu))[:, 0]
    tissue = ((smooth >= hu_range[0]) & (smooth <= hu_range[1]))[:, 0]
    tissue = F.max_pool2d(tissue[:, None].float(), 2, stride=1)[:, 0] > 0
    detail = F.conv2d(x, _DIAGONAL_DETAIL.to(x)[None, None])[:, 0]  # (N, H - 1, W - 1)

    # quantum (A) and electronic (B) terms of the detail's variance, (N, H - 1, W - 1) in HU^2
    ys = (torch.linspace(0, h - 1, grid_points) - (h - 1) / 2) * spacing[0]
    xs = (torch.linspace(0, w - 1, grid_points) - (w - 1) / 2) * spacing[1]
    points = torch.stack(torch.meshgrid(ys, xs, indexing="ij"), dim=-1).reshape(-1, 2)
    p = geometry.line_integrals_through(hu_to_mu(smooth[:, 0], scan.mu_water), points, num_angles)
    gain = directional_noise_gain(geometry, geometry.view_angles(num_angles), _DIAGONAL_DETAIL).to(p)
    quantum = sinogram_noise_variance(p, 1.0, 1.0, 0.0, "none")  # e^p: the variance at i0 = 1 without s_e
    electronic = sinogram_noise_variance(p, 1.0, 1.0, 1.0, "none") - quantum  # e^2p: the s_e^2 / i0^2 term
    terms = torch.stack([(quantum * gain).mean(-1), (electronic * gain).mean(-1) * scan.electronic_std**2], 1)
    terms = terms * scan.hu_per_mu**2
    terms = F.interpolate(terms.reshape(-1, 2, grid_points, grid_points), size=(h, w), mode="bilinear", align_corners=True)
    terms = F.avg_pool2d(terms, 2, stride=1)  # at the centres of the 2 x 2 supports

    results = []
    for b in range(image.shape[0]):
        part = slice(b * per_sample, (b + 1) * per_sample)
        use = flat[part] if int(flat[part].sum()) >= 64 else tissue[part] if int(tissue[part].sum()) >= 64 else torch.ones_like(flat[part])
        d = detail[part][use].double()
        a, e = (terms[part, k][use].double().clamp_min(1e-30) for k in range(2))
        results.append(1.0 / _truncated_gaussian_variance(d, a, e, cutoff, iterations))
    return torch.stack(results).to(image.dtype)


def _truncated_gaussian_variance(d: torch.Tensor, a: torch.Tensor, e: torch.Tensor, cutoff: float, iterations: int) -> torch.Tensor:
    """``v`` such that ``d ~ N(0, v a + v^2 e)``: second moment of ``z = d / sqrt(a + v e)`` below
    ``cutoff`` standard deviations over its truncation factor, from the median-|z| start."""
    v = (torch.median(d.abs() / a.sqrt()) / 0.6744897501960817).square()  # median |N(0, 1)|
    if not bool(v > 0):  # no measurable noise (a noise-free image): an infinite photon count
        return torch.full_like(v, 1e-30)
    factor = _chi_truncation(cutoff, 1)
    for _ in range(iterations):
        z = d / (a + v * e).sqrt()
        inside = z.abs() < cutoff * v.sqrt()
        if not bool(inside.any()):
            return v
        v_new = z[inside].square().mean() / factor
        if bool(torch.abs(v_new - v) <= 1e-6 * v):
            return v_new
        v = v_new
    return v


def _histogram_mode(values: torch.Tensor, bins: int = 256) -> float:
    hist = torch.histc(values, bins=bins, min=0.0, max=float(values.max()))
    width = float(values.max()) / bins
    return (int(hist.argmax()) + 0.5) * width


def _chi_truncation(c: float, dof: int) -> float:
    """E[M^2 | M < c s] / E[M^2] for a chi variable with ``dof`` degrees of freedom (scale s)."""
    k = dof / 2.0  # M^2 / (2 s^2) ~ Gamma(k, 1)
    x = c * c / 2.0
    p_k = torch.special.gammainc(torch.tensor(k), torch.tensor(x))
    p_k1 = torch.special.gammainc(torch.tensor(k + 1.0), torch.tensor(x))
    return float(p_k1 / p_k)
