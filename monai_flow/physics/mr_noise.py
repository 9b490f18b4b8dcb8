"""MR magnitude noise: Rician (one coil) and noncentral chi (L coils, sum of squares).

A magnitude image ``A`` is split evenly over ``L`` receive coils (``A_l = A / sqrt(L)``), each
coil gets independent complex Gaussian noise of standard deviation ``s`` per real/imaginary part,
and the magnitude is recombined by root-sum-of-squares::

    M = sqrt( sum_l (A_l + n_re,l)^2 + n_im,l^2 ),   E[M^2] = A^2 + 2 L s^2.

With L = 1 this is the Rician distribution; in the background (A = 0) it is Rayleigh
(L = 1: mean s sqrt(pi/2) = 1.2533 s, sd 0.6551 s) or chi with 2L degrees of freedom.
"""

from __future__ import annotations

import torch

__all__ = ["noncentral_chi_noise", "resolve_noise_std", "RELATIVE_TO"]

RELATIVE_TO = ("absolute", "max", "percentile")


def noncentral_chi_noise(
    magnitude: torch.Tensor,
    std: torch.Tensor | float,
    num_coils: int = 1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Magnitude ``M`` of ``magnitude`` plus complex Gaussian noise over ``num_coils`` coils.

    Args:
        magnitude: (B, ...) noise-free (or reference) magnitude, any float dtype.
        std: per-part noise standard deviation ``s``; a float or a tensor broadcastable from
            the left, e.g. (B,) for one level per sample.
        num_coils: L >= 1.
        generator: torch.Generator for reproducible draws.
    """
    s = torch.as_tensor(std, dtype=magnitude.dtype, device=magnitude.device)
    s = s.reshape(*s.shape, *([1] * (magnitude.ndim - s.ndim)))
    coil_signal = magnitude / num_coils**0.5
    shape = (num_coils, 2, *magnitude.shape)
    noise = torch.randn(shape, generator=generator, dtype=magnitude.dtype, device=magnitude.device) * s
    power = (coil_signal + noise[:, 0]).square().sum(0) + noise[:, 1].square().sum(0)
    return power.sqrt()


def resolve_noise_std(
    image: torch.Tensor,
    std: torch.Tensor | float,
    relative_to: str = "absolute",
    percentile: float = 99.0,
) -> torch.Tensor:
    """Turn a noise level into an absolute ``s`` per sample, shape (B,).

    ``relative_to="absolute"``: ``std`` is already in image units. ``"max"``: a fraction of each
    sample's maximum (BrainWeb's "3%" is ``std=0.03``). ``"percentile"``: a fraction of each
    sample's ``percentile``-th intensity, robust to a few bright voxels.
    """
    if relative_to not in RELATIVE_TO:
        raise ValueError(f"relative_to must be one of {RELATIVE_TO}, got {relative_to!r}.")
    s = torch.as_tensor(std, dtype=image.dtype, device=image.device).reshape(-1)
    if relative_to == "absolute":
        return s.expand(image.shape[0]) if s.numel() == 1 else s
    flat = image.reshape(image.shape[0], -1)
    if relative_to == "max":
        ref = flat.amax(dim=1)
    else:
        k = max(1, min(flat.shape[1], round(percentile / 100.0 * flat.shape[1])))
        ref = flat.kthvalue(k, dim=1).values  # torch.quantile refuses > 2**24 elements
    return s * ref
