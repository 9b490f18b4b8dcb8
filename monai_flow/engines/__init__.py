"""Glue for ``monai.engines`` training of flow objectives: :class:`FlowTrainer`,
:class:`PrepareFlowBatch` and the RelativeFlow :class:`CurriculumHandler`; validation batches
(:class:`PrepareDegradedBatch`), generation batches (:class:`PrepareGenerationBatch`),
multi-level evaluation (:func:`evaluate_restoration`) and generation scores (:func:`evaluate_generation`)."""

from .evaluation import evaluate_generation, evaluate_restoration, image_scores, intensity_classes
from .handlers import CurriculumHandler
from .prepare_batch import PrepareDegradedBatch, PrepareFlowBatch, PrepareGenerationBatch
from .trainer import FlowTrainer

__all__ = [
    "CurriculumHandler",
    "FlowTrainer",
    "PrepareDegradedBatch",
    "PrepareFlowBatch",
    "PrepareGenerationBatch",
    "evaluate_generation",
    "evaluate_restoration",
    "image_scores",
    "intensity_classes",
]
