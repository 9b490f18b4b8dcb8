"""Image scores against a reference, intensity classes and region means."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from monai.metrics import PSNRMetric, RMSEMetric, SSIMMetric

from monai_flow.axial import to_axial_slices

__all__ = ["image_scores", "intensity_classes", "region_means"]


def image_scores(output: torch.Tensor, reference: torch.Tensor, window: Sequence[float]) -> dict[str, float]:
    """PSNR (dB), SSIM and RMSE of ``output`` against ``reference`` (B, C, *spatial) in ``window``.

    Both are clipped to ``window = (low, high)`` (e.g. a HU window in data units) whose width is
    the data range. SSIM is the 2D SSIM averaged over axial slices (the last axis for volumes).
    """
    low, high = float(window[0]), float(window[1])
    out, ref = output.float().clamp(low, high), reference.float().clamp(low, high)
    data_range = high - low
    psnr = PSNRMetric(max_val=data_range)(out, ref).mean().item()
    rmse = RMSEMetric()(out, ref).mean().item()
    ssim = SSIMMetric(spatial_dims=2, data_range=data_range)(to_axial_slices(out)[0], to_axial_slices(ref)[0])
    return {"psnr": psnr, "ssim": ssim.mean().item(), "rmse": rmse}


def intensity_classes(image: torch.Tensor, thresholds: Sequence[float]) -> torch.Tensor:
    """Label map of ``image`` by increasing ``thresholds``: 0 below the first, k between the
    k-th and (k+1)-th, ``len(thresholds)`` above the last (same shape, int64).

    E.g. CT in HU with ``(-950, -500, 200)``: 0 air, 1 lung-like, 2 soft tissue, 3 bone-like.
    """
    bounds = torch.as_tensor(list(thresholds), dtype=image.dtype, device=image.device)
    if bounds.ndim != 1 or bounds.numel() == 0 or not bool((bounds[1:] > bounds[:-1]).all()):
        raise ValueError(f"thresholds must be a non-empty strictly increasing sequence, got {thresholds}.")
    return torch.bucketize(image.contiguous(), bounds, right=True)


def region_means(x: torch.Tensor, labels: torch.Tensor, regions: Mapping[str, Sequence[int]]) -> dict[str, torch.Tensor]:
    """Per-sample mean of ``x`` (B, 1, ...) inside each region (a set of mask labels); NaN if empty."""
    out = {}
    for name, ids in regions.items():
        sel = torch.isin(labels, torch.as_tensor(list(ids), device=labels.device)).flatten(1).float()
        n = sel.sum(1)
        out[name] = torch.where(n > 0, (x.flatten(1).float() * sel).sum(1) / n.clamp_min(1), torch.nan)
    return out
