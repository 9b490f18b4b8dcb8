"""Glue for ``monai.engines`` training of flow objectives: :class:`FlowTrainer`,
:class:`PrepareFlowBatch`, the RelativeFlow :class:`CurriculumHandler` and :class:`QualityTimeCalibrationHandler`; validation batches
(:class:`PrepareDegradedBatch`) and generation batches (:class:`PrepareGenerationBatch`).
Evaluation lives in :mod:`monai_flow.evaluation`."""

from .handlers import CurriculumHandler, QualityTimeCalibrationHandler
from .prepare_batch import PrepareDegradedBatch, PrepareFlowBatch, PrepareGenerationBatch
from .trainer import FlowTrainer

__all__ = [
    "CurriculumHandler",
    "FlowTrainer",
    "PrepareDegradedBatch",
    "PrepareFlowBatch",
    "PrepareGenerationBatch",
    "QualityTimeCalibrationHandler",
]
