"""Adapting a RelativeFlow denoiser to the user's own scan (no clean data needed): fine-tune a
copy of the network on the input volume within a time budget, cache the weights by the input's
content, then denoise. :class:`AdaptiveInferer` wraps any denoising inferer with it."""

from .cache import AdaptationCache, content_key, default_cache_dir
from .ct import CTAdaptation
from .inferer import AdaptiveInferer, header_meta
from .mr import MRAdaptation
from .training import AdaptationError, AdaptationResult, VolumeAdaptation

__all__ = [
    "AdaptationCache",
    "AdaptationError",
    "AdaptationResult",
    "AdaptiveInferer",
    "CTAdaptation",
    "MRAdaptation",
    "VolumeAdaptation",
    "content_key",
    "default_cache_dir",
    "header_meta",
]
