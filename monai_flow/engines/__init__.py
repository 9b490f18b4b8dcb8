"""Glue for ``monai.engines`` training of flow objectives: :class:`FlowTrainer`,
:class:`PrepareFlowBatch` and the RelativeFlow :class:`CurriculumHandler`; validation batches
(:class:`PrepareDegradedBatch`) and generation batches (:class:`PrepareGenerationBatch`).
Evaluation lives in :mod:`monai_flow.evaluation`."""

from .handlers import CurriculumHandler
from .prepare_batch import PrepareDegradedBatch, PrepareFlowBatch, PrepareGenerationBatch
from .trainer import FlowTrainer

__all__ = [
    "CurriculumHandler",
    "FlowTrainer",
    "PrepareDegradedBatch",
    "PrepareFlowBatch",
    "PrepareGenerationBatch",
]
