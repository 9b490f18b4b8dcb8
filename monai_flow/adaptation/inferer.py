"""A MONAI inferer that adapts the network to each input before denoising it."""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable, Mapping
from typing import Any

import torch
from monai.data import MetaTensor
from monai.inferers import Inferer
from monai.utils import convert_to_dst_type

from monai_flow.checkpoints import unwrap_network

from .cache import AdaptationCache, content_key
from .training import VolumeAdaptation

__all__ = ["AdaptiveInferer", "header_meta"]


def header_meta(image: torch.Tensor) -> dict[str, Any]:
    """What an adaptation can use from an input's header: ``spacing`` (the first two axes, mm) of a
    MetaTensor, plus the CT exposure of a DICOM series when its files are known
    (:func:`monai_flow.data.ct_exposure_meta`, if available)."""
    meta: dict[str, Any] = {}
    if isinstance(image, MetaTensor):
        from monai.data.utils import affine_to_spacing

        affine = torch.as_tensor(image.affine)
        affine = affine[0] if affine.ndim == 3 else affine  # a batch carries one affine per sample
        meta["spacing"] = tuple(float(s) for s in affine_to_spacing(affine, r=affine.shape[-1] - 1)[:2])
        try:
            from monai_flow.data import ct_exposure_meta
        except ImportError:
            return meta
        meta.update(ct_exposure_meta(image.meta) or {})
    return meta


def _weights_digest(network: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, value in sorted(unwrap_network(network).state_dict().items()):
        digest.update(name.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class AdaptiveInferer(Inferer):
    """``AdaptiveInferer(inferer, adaptation)(inputs, network)``: for each input volume, fine-tune a copy
    of ``network`` on that volume (:class:`~monai_flow.adaptation.VolumeAdaptation`), then run ``inferer``
    with the copy. The network passed in is never changed.

    Adapted weights are cached by the input's content, the starting weights and the adaptation
    settings (:class:`~monai_flow.adaptation.AdaptationCache`), so a rerun, or a second output
    format of the same input, reuses them. ``results`` holds what each adaptation did.

    Args:
        inferer: the denoising inferer to run with the adapted network (e.g. a
            :class:`~monai_flow.inferers.RelativeFlowInferer` or a sliding-window one).
        adaptation: how to adapt (:class:`~monai_flow.adaptation.CTAdaptation`, :class:`~monai_flow.adaptation.MRAdaptation`).
        cache: an :class:`AdaptationCache`, ``None`` for the default location, ``False`` for no cache.
        meta_reader: ``image -> dict`` of header information for the adaptation (default :func:`header_meta`).
    """

    def __init__(self, inferer: Callable, adaptation: VolumeAdaptation, cache: AdaptationCache | bool | None = None,
                 meta_reader: Callable[[torch.Tensor], Mapping[str, Any]] = header_meta) -> None:
        super().__init__()
        if not isinstance(adaptation, VolumeAdaptation):
            raise ValueError(f"adaptation must be a VolumeAdaptation, got {type(adaptation).__name__}.")
        self.inferer, self.adaptation, self.meta_reader = inferer, adaptation, meta_reader
        self.cache = None if cache is False else (cache if isinstance(cache, AdaptationCache) else AdaptationCache())
        self.results: list[dict] = []

    def adapted(self, network: torch.nn.Module, volume: torch.Tensor, meta: Mapping[str, Any]) -> torch.nn.Module:
        """A copy of ``network`` whose core holds weights adapted to ``volume`` (1, C, *spatial)."""
        plain = volume.as_tensor() if isinstance(volume, MetaTensor) else volume
        key = content_key(plain, {"adaptation": self.adaptation.settings(), "weights": _weights_digest(network),
                                  "meta": {k: v for k, v in meta.items() if k != "files"}})
        state = self.cache.get(key) if self.cache is not None else None
        info: dict[str, Any] = {"key": key, "cached": state is not None}
        if state is None:
            with torch.enable_grad():
                core, result = self.adaptation(network, plain, meta)
            state = core.state_dict()
            info.update(result)
            if self.cache is not None:
                name = meta.get("name") or (volume.meta.get("filename_or_obj") if isinstance(volume, MetaTensor) else None)
                self.cache.put(key, state, {"input": str(name), "shape": list(plain.shape), **dict(result)})
        self.results.append(info)
        adapted = copy.deepcopy(network)
        unwrap_network(adapted).load_state_dict(state)
        return adapted.eval()

    def __call__(self, inputs: torch.Tensor, network: torch.nn.Module, *args: Any, **kwargs: Any) -> torch.Tensor:  # type: ignore[override]
        """Args: inputs (B, C, *spatial) in network units (each sample adapted to separately)."""
        outputs = []
        for b in range(inputs.shape[0]):
            volume = inputs[b : b + 1]
            adapted = self.adapted(network, volume, dict(self.meta_reader(volume)))
            outputs.append(self.inferer(volume, adapted, *args, **kwargs))
        out = torch.cat([o.as_tensor() if isinstance(o, MetaTensor) else o for o in outputs])
        return convert_to_dst_type(out, inputs, device=out.device)[0]
