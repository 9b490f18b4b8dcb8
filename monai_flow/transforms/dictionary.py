"""Dictionary versions of :mod:`monai_flow.transforms.array` (``...d``, aliases ``...D``, ``...Dict``).

The random versions draw one level per call, shared by all ``keys``, and an independent noise
realisation per key (two keys holding the same image give two independent degradations).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, Randomizable, RandomizableTransform

from .array import LowDoseCTNoise, RandLowDoseCTNoise, RandRicianMRNoise, RicianMRNoise

__all__ = [
    "LowDoseCTNoised", "LowDoseCTNoiseD", "LowDoseCTNoiseDict",
    "RandLowDoseCTNoised", "RandLowDoseCTNoiseD", "RandLowDoseCTNoiseDict",
    "RicianMRNoised", "RicianMRNoiseD", "RicianMRNoiseDict",
    "RandRicianMRNoised", "RandRicianMRNoiseD", "RandRicianMRNoiseDict",
]


class _SeededNoised(Randomizable, MapTransform):
    """Applies a fixed-level noise transform to each key with its own seed from ``self.R``."""

    array_class: type = LowDoseCTNoise

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False, **kwargs) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.transform = self.array_class(**kwargs)
        self.backend = self.transform.backend

    def randomize(self, data=None) -> None:
        self._seeds = [self.R.randint(2**31) for _ in self.keys]

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        self.randomize()
        for key, seed in self.key_iterator(d, self._seeds):
            d[key] = self.transform(d[key], seed=seed)
        return d


class _RandLeveld(RandomizableTransform, MapTransform):
    """Applies a random-level noise transform: one level per call, one seed per key."""

    array_class: type = RandLowDoseCTNoise

    def __init__(self, keys: KeysCollection, prob: float = 1.0, allow_missing_keys: bool = False, **kwargs) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.rand = self.array_class(prob=1.0, **kwargs)
        self.backend = self.rand.backend

    def randomize(self, data=None) -> None:
        super().randomize(None)
        self._level = self.R.uniform(*self.rand.level_range)
        self._seeds = [self.R.randint(2**31) for _ in self.keys]

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        self.randomize()
        if not self._do_transform:
            return d
        for key, seed in self.key_iterator(d, self._seeds):
            d[key] = self.rand.transform(d[key], seed=seed, **{self.rand.level_name: self._level})
        return d


class LowDoseCTNoised(_SeededNoised):
    """Dictionary :class:`~monai_flow.transforms.LowDoseCTNoise`; keyword arguments as the array version."""

    array_class = LowDoseCTNoise


class RandLowDoseCTNoised(_RandLeveld):
    """Dictionary :class:`~monai_flow.transforms.RandLowDoseCTNoise`; ``dose_fraction`` is a (min, max) range."""

    array_class = RandLowDoseCTNoise


class RicianMRNoised(_SeededNoised):
    """Dictionary :class:`~monai_flow.transforms.RicianMRNoise`; keyword arguments as the array version."""

    array_class = RicianMRNoise


class RandRicianMRNoised(_RandLeveld):
    """Dictionary :class:`~monai_flow.transforms.RandRicianMRNoise`; ``std`` is a (min, max) range."""

    array_class = RandRicianMRNoise


LowDoseCTNoiseD = LowDoseCTNoiseDict = LowDoseCTNoised
RandLowDoseCTNoiseD = RandLowDoseCTNoiseDict = RandLowDoseCTNoised
RicianMRNoiseD = RicianMRNoiseDict = RicianMRNoised
RandRicianMRNoiseD = RandRicianMRNoiseDict = RandRicianMRNoised
