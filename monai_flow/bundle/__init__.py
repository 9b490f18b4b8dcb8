"""monai-flow's MONAI Bundles from code: locating a bundle (``bundle_root``), reading and
overriding its configs (:class:`Bundle`), the data items its configs build, and the traced
network that ``python -m monai.bundle ckpt_export traced_network_def ...`` exports
(:func:`traced_network`; imported on first use, so that this package stays free of torch)."""

from .config import Bundle, BundleError
from .items import generation_items, missing_references
from .paths import bundle_root

__all__ = ["Bundle", "BundleError", "bundle_root", "generation_items", "missing_references", "network_example_inputs",
           "traced_network"]


def __getattr__(name: str):
    if name in ("network_example_inputs", "traced_network"):
        from . import export

        return getattr(export, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
