"""CT units and acquisition parameters, validated in one place.

Units: attenuation ``mu`` in 1/mm, Hounsfield units (HU), line integrals dimensionless, photon
counts per detector bin and view, pixel spacing in mm.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = [
    "CT_DOMAINS",
    "CT_FILTERS",
    "INPUT_NOISE",
    "MU_WATER_PER_MM",
    "CTScan",
    "check_domain",
    "check_input_noise",
    "check_spacing",
    "hu_to_mu",
    "mu_to_hu",
]

#: Linear attenuation coefficient of water at about 70 keV effective energy, in 1/mm.
MU_WATER_PER_MM = 0.0192
CT_FILTERS = ("ramp", "shepp-logan", "hann")
CT_DOMAINS = ("projection", "image")
INPUT_NOISE = ("full_dose", "none")


def hu_to_mu(hu: torch.Tensor, mu_water: float = MU_WATER_PER_MM) -> torch.Tensor:
    """Hounsfield units to linear attenuation (1/mm), clipped at 0 (nothing attenuates < air)."""
    return (mu_water * (1.0 + hu / 1000.0)).clamp_min(0.0)


def mu_to_hu(mu: torch.Tensor, mu_water: float = MU_WATER_PER_MM) -> torch.Tensor:
    """Linear attenuation (1/mm) to Hounsfield units."""
    return 1000.0 * (mu / mu_water - 1.0)


def _positive(name: str, value, unit: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ValueError(f"{name} must be a finite number > 0 ({unit}), got {value!r}.")
    return float(value)


def check_spacing(spacing: Sequence[float]) -> tuple[float, float]:
    """In-plane pixel spacing ``(dy, dx)`` in mm, both finite and > 0."""
    values = tuple(spacing) if isinstance(spacing, Sequence) else ()
    if len(values) != 2 or not all(isinstance(s, (int, float)) and 0 < s < math.inf for s in values):
        raise ValueError(f"spacing must be two positive in-plane values (dy, dx) in mm, got {spacing!r}.")
    return float(values[0]), float(values[1])


def check_domain(domain: str) -> str:
    if domain not in CT_DOMAINS:
        raise ValueError(f"domain must be one of {CT_DOMAINS}, got {domain!r}.")
    return domain


def check_input_noise(input_noise: str) -> str:
    if input_noise not in INPUT_NOISE:
        raise ValueError(f"input_noise must be one of {INPUT_NOISE}, got {input_noise!r}.")
    return input_noise


@dataclass(frozen=True)
class CTScan:
    """Acquisition parameters of a (full-dose) CT scan; validated on construction.

    Args:
        i0: incident photons per detector bin and view at full dose (1e5..1e6 typical).
        electronic_std: electronic (readout) noise std in counts per bin; dose independent (3..10).
        mu_water: attenuation of water in 1/mm (0.0192 at about 70 keV).
        num_views: views over 180 degrees (parallel beam).
        num_bins: detector bins; ``None`` covers the slice diagonal.
        filter_name: FBP filter, "ramp" (Ram-Lak), "shepp-logan" or "hann" (sets the noise texture).
    """

    i0: float = 1e5
    electronic_std: float = 5.0
    mu_water: float = MU_WATER_PER_MM
    num_views: int = 720
    num_bins: int | None = None
    filter_name: str = "ramp"

    def __post_init__(self) -> None:
        _positive("i0", self.i0, "photons per bin and view")
        _positive("mu_water", self.mu_water, "1/mm")
        e = self.electronic_std
        if isinstance(e, bool) or not isinstance(e, (int, float)) or not 0 <= e < math.inf:
            raise ValueError(f"electronic_std must be finite and >= 0 counts, got {e!r}.")
        for name in ("num_views", "num_bins"):
            value = getattr(self, name)
            if value is None and name == "num_bins":
                continue
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")
        if self.filter_name not in CT_FILTERS:
            raise ValueError(f"filter_name must be one of {CT_FILTERS}, got {self.filter_name!r}.")
        object.__setattr__(self, "i0", float(self.i0))
        object.__setattr__(self, "electronic_std", float(e))
        object.__setattr__(self, "mu_water", float(self.mu_water))
        object.__setattr__(self, "num_views", int(self.num_views))
        object.__setattr__(self, "num_bins", None if self.num_bins is None else int(self.num_bins))

    @property
    def hu_per_mu(self) -> float:
        """d(HU) / d(mu): converts attenuation (1/mm) differences to HU."""
        return 1000.0 / self.mu_water
