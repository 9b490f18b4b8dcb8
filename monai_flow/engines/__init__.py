"""Glue for ``monai.engines`` training of flow objectives: :class:`FlowTrainer`,
:class:`PrepareFlowBatch` and the RelativeFlow :class:`CurriculumHandler`; validation batches
(:class:`PrepareDegradedBatch`) and multi-level evaluation (:func:`evaluate_restoration`)."""

from .evaluation import evaluate_restoration, image_scores
from .handlers import CurriculumHandler
from .prepare_batch import PrepareDegradedBatch, PrepareFlowBatch
from .trainer import FlowTrainer

__all__ = [
    "CurriculumHandler",
    "FlowTrainer",
    "PrepareDegradedBatch",
    "PrepareFlowBatch",
    "evaluate_restoration",
    "image_scores",
]
