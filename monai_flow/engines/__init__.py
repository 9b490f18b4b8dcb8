"""Glue for ``monai.engines`` training of flow objectives: :class:`FlowTrainer`,
:class:`PrepareFlowBatch` and the RelativeFlow :class:`CurriculumHandler`."""

from .handlers import CurriculumHandler
from .prepare_batch import PrepareFlowBatch
from .trainer import FlowTrainer

__all__ = ["CurriculumHandler", "FlowTrainer", "PrepareFlowBatch"]
