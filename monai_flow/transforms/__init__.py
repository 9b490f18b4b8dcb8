"""MONAI-compatible CT and MR degradation transforms and the RelativeFlow degradation operators."""

from .array import LowDoseCTNoise, RandLowDoseCTNoise, RandRicianMRNoise, RicianMRNoise
from .ct_physics import MU_WATER_PER_MM, ParallelBeamGeometry, hu_to_mu, mu_to_hu
from .degradation import (
    CTDegradation,
    MRDegradation,
    NormalizedDegradation,
    low_dose_ct_noise,
    predicted_ct_noise_std,
)
from .dictionary import (
    LowDoseCTNoised,
    LowDoseCTNoiseD,
    LowDoseCTNoiseDict,
    RandLowDoseCTNoised,
    RandLowDoseCTNoiseD,
    RandLowDoseCTNoiseDict,
    RandRicianMRNoised,
    RandRicianMRNoiseD,
    RandRicianMRNoiseDict,
    RicianMRNoised,
    RicianMRNoiseD,
    RicianMRNoiseDict,
)
from .mr_physics import noncentral_chi_noise
from .noise_estimation import estimate_ct_noise_std, estimate_rician_noise_std

__all__ = [
    "CTDegradation",
    "LowDoseCTNoise",
    "LowDoseCTNoiseD",
    "LowDoseCTNoiseDict",
    "LowDoseCTNoised",
    "MRDegradation",
    "MU_WATER_PER_MM",
    "NormalizedDegradation",
    "ParallelBeamGeometry",
    "RandLowDoseCTNoise",
    "RandLowDoseCTNoiseD",
    "RandLowDoseCTNoiseDict",
    "RandLowDoseCTNoised",
    "RandRicianMRNoise",
    "RandRicianMRNoiseD",
    "RandRicianMRNoiseDict",
    "RandRicianMRNoised",
    "RicianMRNoise",
    "RicianMRNoiseD",
    "RicianMRNoiseDict",
    "RicianMRNoised",
    "estimate_ct_noise_std",
    "estimate_rician_noise_std",
    "hu_to_mu",
    "low_dose_ct_noise",
    "mu_to_hu",
    "noncentral_chi_noise",
    "predicted_ct_noise_std",
]
