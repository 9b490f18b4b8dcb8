"""MONAI-compatible CT and MR degradation transforms and the RelativeFlow degradation operators.

The physics functions they call (``low_dose_ct_noise``, the estimators, ...) are re-exported from
:mod:`monai_flow.physics` for convenience.
"""

from .array import LowDoseCTNoise, RandLowDoseCTNoise, RandRicianMRNoise, RicianMRNoise
from monai_flow.physics import (
    MU_WATER_PER_MM,
    CTScan,
    estimate_ct_noise_std,
    estimate_rician_noise_std,
    hu_to_mu,
    low_dose_ct_noise,
    mu_to_hu,
    noncentral_chi_noise,
    predicted_ct_noise_std,
)

from .degradation import CTDegradation, MRDegradation, NoiseBasisDegradation, NormalizedDegradation
from .noise_basis import CTNoiseBasisd, CTNoiseBasisD, CTNoiseBasisDict, PixelSpacingd, slice_photons
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

__all__ = [
    "CTDegradation",
    "CTNoiseBasisD",
    "CTNoiseBasisDict",
    "CTNoiseBasisd",
    "CTScan",
    "LowDoseCTNoise",
    "LowDoseCTNoiseD",
    "LowDoseCTNoiseDict",
    "LowDoseCTNoised",
    "MRDegradation",
    "MU_WATER_PER_MM",
    "NoiseBasisDegradation",
    "NormalizedDegradation",
    "PixelSpacingd",
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
    "slice_photons",
]
