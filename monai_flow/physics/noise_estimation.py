"""Noise-level estimators, used by the degradation operators and by ``auto`` denoising schedules.

Both take a batch (B, C, *spatial) and return one standard deviation per sample, shape (B,).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from monai_flow.axial import to_axial_slices

__all__ = ["estimate_rician_noise_std", "estimate_ct_noise_std"]


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
