"""The training-objective interface shared by every flow method.

An objective owns the sampling a flow-matching loss needs (times, noise, degradations) and
computes the loss with one or more network calls: ``objective.loss(network, batch)``.
Batches are MONAI-style dictionaries (``image``, ``label``, ``mask``, ``condition``) or a
bare image tensor of shape (B, C, *spatial) for 2D or 3D data.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

import torch
from monai.utils import convert_to_tensor

__all__ = ["FlowObjective", "degradation_kwargs"]


def degradation_kwargs(data: Mapping[str, Any], keys: Mapping[str, str] | None, like: torch.Tensor) -> dict[str, Any]:
    """Per-sample keyword arguments of a degradation operator taken from batch keys.

    ``keys`` maps operator argument -> batch key, e.g. ``{"i0": "photons"}`` for
    :class:`~monai_flow.transforms.CTDegradation` (each reference's known exposure) or
    ``{"reference_std": "noise_std"}`` for :class:`~monai_flow.transforms.MRDegradation`.
    Values go to ``like``'s device and dtype: one number per sample becomes a (B,) tensor; vectors per
    sample (B, n), e.g. a pixel spacing, and image-shaped values (B, C, *spatial), e.g. precomputed noise
    fields, keep their shape.
    """
    kwargs = {}
    for argument, key in (keys or {}).items():
        if key not in data:
            raise ValueError(f"batch has no '{key}' (degradation argument '{argument}'), got keys {sorted(map(str, data))}.")
        value = torch.as_tensor(data[key]).to(like.device, like.dtype)
        vector = value.ndim == 2 and value.shape[1] > 1
        kwargs[argument] = value if value.ndim == like.ndim or vector else value.reshape(-1)
    return kwargs


class FlowObjective(ABC):
    """Interface of flow training objectives: ``loss(network, batch, generator=None) -> Tensor``.

    Randomness (times, noise, dropout, degradations) is drawn from, in order of priority, the
    ``generator`` passed to :meth:`loss`, a per-device generator seeded by ``seed`` /
    :meth:`set_random_state`, or torch's global RNG. Under a fixed seed the loss is deterministic.

    Args:
        image_key: batch key of the image, a tensor (B, C, *spatial).
        seed: optional seed for the objective's own generators.
    """

    def __init__(self, image_key: str = "image", seed: int | None = None) -> None:
        self.image_key = image_key
        self._generators: dict[torch.device, torch.Generator] = {}
        self._seed: int | None = None
        self.set_random_state(seed)

    def set_random_state(self, seed: int | None = None) -> FlowObjective:
        """Reseed the objective's generators (``None``: use torch's global RNG). Returns ``self``."""
        if seed is not None and not isinstance(seed, int):
            raise ValueError(f"seed must be an int or None, got {type(seed).__name__}.")
        self._seed = seed
        self._generators = {}
        return self

    def generator(self, device: torch.device | str) -> torch.Generator | None:
        """The seeded generator for ``device`` (created on first use), or ``None`` when unseeded."""
        if self._seed is None:
            return None
        device = torch.device(device)
        if device not in self._generators:
            self._generators[device] = torch.Generator(device=device).manual_seed(self._seed)
        return self._generators[device]

    def _resolve_generator(self, generator: torch.Generator | None, device: torch.device) -> torch.Generator | None:
        return generator if generator is not None else self.generator(device)

    def unpack(self, batch: Mapping[str, Any] | torch.Tensor) -> dict[str, Any]:
        """Return the batch as a dict with plain tensors (MetaTensor metadata dropped).

        A tensor is taken as the image. Raises ``ValueError`` without an image of shape (B, C, *spatial).
        """
        if isinstance(batch, torch.Tensor):
            batch = {self.image_key: batch}
        if not isinstance(batch, Mapping):
            raise ValueError(f"batch must be a dict or a tensor, got {type(batch).__name__}.")
        if self.image_key not in batch:
            raise ValueError(f"batch has no image key '{self.image_key}', got keys {sorted(map(str, batch))}.")
        out = {
            k: convert_to_tensor(v, track_meta=False) if isinstance(v, torch.Tensor) else v for k, v in batch.items()
        }
        image = out[self.image_key]
        if not isinstance(image, torch.Tensor) or image.ndim < 3:
            shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
            raise ValueError(f"batch['{self.image_key}'] must be a tensor (B, C, *spatial), got {shape}.")
        return out

    @abstractmethod
    def loss(
        self,
        network: torch.nn.Module,
        batch: Mapping[str, Any] | torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Return the scalar training loss of ``network`` on ``batch``."""

    def __call__(
        self,
        network: torch.nn.Module,
        batch: Mapping[str, Any] | torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        return self.loss(network, batch, generator=generator)

    def state_dict(self) -> dict[str, Any]:
        """State to checkpoint (e.g. a curriculum); empty for stateless objectives."""
        return {}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
