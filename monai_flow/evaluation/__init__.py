"""Evaluation of trained models: image scores (:mod:`.metrics`), the CSV and figure writers
(:mod:`.reports`), multi-level restoration evaluation (:func:`evaluate_restoration`) and
generation scores (:func:`evaluate_generation`)."""

from .generation import evaluate_generation
from .metrics import image_scores, intensity_classes, region_means
from .reports import write_csv, write_figure
from .restoration import evaluate_restoration

__all__ = [
    "evaluate_generation",
    "evaluate_restoration",
    "image_scores",
    "intensity_classes",
    "region_means",
    "write_csv",
    "write_figure",
]
