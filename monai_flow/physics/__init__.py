"""Imaging physics behind the degradation transforms: CT units, parallel-beam geometry, projector
and FBP (on a torch NUFFT), Poisson-Gaussian sinogram noise, MR Rician / noncentral-chi noise, and
the noise-level estimators. Everything works on channel-first torch batches, on CPU and GPU.
"""

from .ct_geometry import ParallelBeamGeometry, directional_noise_gain, fbp_noise_gain, parallel_beam_geometry
from .ct_noise import (
    fbp_noise_variance,
    low_dose_ct_noise,
    low_dose_noise_basis,
    predicted_ct_noise_std,
    sinogram_noise,
    sinogram_noise_variance,
)
from .ct_scan import CT_DOMAINS, CT_FILTERS, INPUT_NOISE, MU_WATER_PER_MM, CTScan, hu_to_mu, mu_to_hu
from .mr_noise import RELATIVE_TO, noncentral_chi_noise, resolve_noise_std
from .noise_estimation import estimate_ct_i0, estimate_ct_noise_std, estimate_rician_noise_std
from .nufft import NUFFTPlan2D

__all__ = [
    "CTScan",
    "CT_DOMAINS",
    "CT_FILTERS",
    "INPUT_NOISE",
    "MU_WATER_PER_MM",
    "NUFFTPlan2D",
    "ParallelBeamGeometry",
    "RELATIVE_TO",
    "directional_noise_gain",
    "estimate_ct_i0",
    "estimate_ct_noise_std",
    "estimate_rician_noise_std",
    "fbp_noise_gain",
    "fbp_noise_variance",
    "hu_to_mu",
    "low_dose_ct_noise",
    "low_dose_noise_basis",
    "mu_to_hu",
    "noncentral_chi_noise",
    "parallel_beam_geometry",
    "predicted_ct_noise_std",
    "resolve_noise_std",
    "sinogram_noise",
    "sinogram_noise_variance",
]
