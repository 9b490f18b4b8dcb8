"""Ignite handlers for flow training."""

from __future__ import annotations

from typing import Any

from ignite.engine import Engine, Events

from monai_flow.flows.curriculum import DtCurriculum

__all__ = ["CurriculumHandler"]


class CurriculumHandler:
    """Advance a RelativeFlow :class:`DtCurriculum` once per completed epoch.

    Args:
        curriculum: a ``DtCurriculum``, an object with a ``curriculum`` attribute (``RelativeFlow``),
            or ``None`` to use ``engine.objective.curriculum`` of the attached trainer.
        epoch_level: step on ``EPOCH_COMPLETED`` (True) or on every ``ITERATION_COMPLETED`` (False).
    """

    def __init__(self, curriculum: DtCurriculum | Any | None = None, epoch_level: bool = True) -> None:
        self.curriculum = curriculum
        self.epoch_level = epoch_level

    def _resolve(self, engine: Engine) -> DtCurriculum:
        source = self.curriculum if self.curriculum is not None else getattr(engine, "objective", None)
        curriculum = getattr(source, "curriculum", source)
        if not (hasattr(curriculum, "step") and hasattr(curriculum, "state_dict")):
            raise ValueError(
                "CurriculumHandler needs a DtCurriculum, an objective with `.curriculum`, or a trainer whose "
                f"`objective` has one, got {type(source).__name__}."
            )
        return curriculum

    def attach(self, engine: Engine) -> None:
        self._resolve(engine)  # fail early on a bad configuration
        event = Events.EPOCH_COMPLETED if self.epoch_level else Events.ITERATION_COMPLETED
        engine.add_event_handler(event, self)

    def __call__(self, engine: Engine) -> None:
        self._resolve(engine).step()
