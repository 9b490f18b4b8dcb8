"""Imaging physics behind the degradation transforms: CT units and acquisition (validated once in
:class:`CTScan`), parallel- and fan-beam geometry, projectors and FBP (on a torch NUFFT), bowtie and
tube-current modulation, Poisson-Gaussian sinogram noise, MR Rician / noncentral-chi noise, and the
noise-level estimators. Everything works on channel-first torch batches, on CPU and GPU.
"""

from .ct_geometry import ParallelBeamGeometry, directional_noise_gain, fbp_noise_gain, parallel_beam_geometry
from .ct_noise import (
    bowtie_profile,
    check_fan_coverage,
    fbp_noise_variance,
    incident_flux,
    scan_geometry,
    low_dose_ct_noise,
    low_dose_noise_basis,
    predicted_ct_noise_std,
    sinogram_noise,
    sinogram_noise_variance,
)
from .ct_scan import (
    BOWTIE_SHAPES,
    CT_DOMAINS,
    CT_FILTERS,
    CT_GEOMETRIES,
    DETECTOR_SHAPES,
    INPUT_NOISE,
    MODULATIONS,
    MU_WATER_PER_MM,
    CTScan,
    hu_to_mu,
    mu_to_hu,
)
from .fan_beam import FanBeamGeometry, fan_beam_geometry
from .mr_noise import RELATIVE_TO, noncentral_chi_noise, resolve_noise_std
from .noise_estimation import (
    MR_NOISE_METHODS,
    estimate_ct_filter,
    estimate_ct_i0,
    estimate_ct_noise_std,
    estimate_mr_noise_std,
    estimate_rician_noise_std,
    estimate_rician_noise_std_wavelet,
)
from .nufft import NUFFTPlan2D

__all__ = [
    "BOWTIE_SHAPES",
    "CTScan",
    "MR_NOISE_METHODS",
    "CT_DOMAINS",
    "CT_FILTERS",
    "estimate_ct_filter",
    "CT_GEOMETRIES",
    "DETECTOR_SHAPES",
    "FanBeamGeometry",
    "MODULATIONS",
    "bowtie_profile",
    "check_fan_coverage",
    "fan_beam_geometry",
    "incident_flux",
    "scan_geometry",
    "INPUT_NOISE",
    "MU_WATER_PER_MM",
    "NUFFTPlan2D",
    "ParallelBeamGeometry",
    "RELATIVE_TO",
    "directional_noise_gain",
    "estimate_ct_i0",
    "estimate_ct_noise_std",
    "estimate_mr_noise_std",
    "estimate_rician_noise_std",
    "estimate_rician_noise_std_wavelet",
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
