"""Ignite handlers for flow training."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import torch
from ignite.engine import Engine, Events
from monai.transforms import CenterSpatialCrop

from monai_flow.atomic import discard
from monai_flow.flows.base import degradation_kwargs
from monai_flow.flows.curriculum import DtCurriculum

__all__ = ["CurriculumHandler", "QualityTimeCalibrationHandler"]


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


class QualityTimeCalibrationHandler:
    """When training completes, measure the network's quality-time calibration and save it beside the weights.

    The ``auto`` schedule of :class:`~monai_flow.inferers.RelativeFlowInferer` reads the file
    (``calibration``) to reach its ``target_std`` (:mod:`monai_flow.inferers.calibration`). The
    references are the validation batches (``batch[image_key]``, not trained on), each centre-cropped
    to ``roi_size``; noise is added by ``degradation.rescan(clean, reference, generator, **kwargs)``
    with per-sample ``kwargs`` read from the batch through ``degradation_keys`` (e.g. the spacing).

    Args:
        dataloader: validation batches (all of them: not a distributed shard).
        degradation: an operator with ``rescan`` (:class:`~monai_flow.transforms.CTDegradation`, or
            :class:`~monai_flow.transforms.NormalizedDegradation` around one).
        output_path: the calibration file, e.g. ``calibration_path(ckpt_path)``; written atomically.
        max_dt, min_dt: the inferer's template (its ``max_dt``/``min_dt``).
        nominal_gaps: gaps to measure (default :data:`~monai_flow.inferers.calibration.DEFAULT_CALIBRATION_GAPS`).
        roi_size: spatial centre crop of each reference (None: whole), to bound the cost.
        noise_estimator: the inferer's noise estimator (see ``measure_quality_time``), e.g.
            ``degradation.estimate_noise_std``.
        mask_window: (low, high) where noise is measured, in the references' (network) units, e.g. soft
            tissue; None: the foreground (:func:`~monai_flow.inferers.calibration.flat_foreground_mask`).
        clean_gap: nominal gap that cleans the references before they are rescanned.
        noise_scales: input noise levels relative to each reference's (how much a network removes
            depends on the input's noise, so the calibration spans the levels it will meet).
        degradation_keys: operator argument -> batch key (see :func:`~monai_flow.flows.base.degradation_kwargs`).
        image_key: batch key of the references.
        network: the network to measure (default: the trainer's ``network``).
        enabled: False skips the measurement (e.g. on ranks other than the first).
    """

    def __init__(self, dataloader, degradation, output_path: str, max_dt: float, min_dt: float,
                 nominal_gaps: Sequence[float] | None = None, roi_size: Sequence[int] | None = None,
                 noise_estimator: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 mask_window: Sequence[float] | None = None, clean_gap: float = 4.0,
                 noise_scales: Sequence[float] = (1.0,),
                 degradation_keys: Mapping[str, str] | None = None, image_key: str = "image",
                 network: torch.nn.Module | None = None, enabled: bool = True) -> None:
        operator = getattr(degradation, "operator", degradation)  # NormalizedDegradation forwards to its operator
        if not callable(getattr(operator, "rescan", None)):
            raise ValueError("degradation must have rescan(clean, reference, generator) (e.g. CTDegradation), got "
                             f"{type(operator).__name__}.")
        self.dataloader, self.degradation, self.output_path = dataloader, degradation, str(output_path)
        self.max_dt, self.min_dt, self.nominal_gaps = float(max_dt), float(min_dt), nominal_gaps
        self.roi_size = None if roi_size is None else [int(r) for r in roi_size]
        self.degradation_keys, self.image_key = dict(degradation_keys or {}), image_key
        self.noise_estimator, self.mask_window, self.clean_gap = noise_estimator, mask_window, float(clean_gap)
        self.noise_scales = [float(v) for v in noise_scales]
        self.network, self.enabled = network, bool(enabled)
        self.logger = logging.getLogger(__name__)

    def attach(self, engine: Engine) -> None:
        """Measure on ``COMPLETED``; on ``STARTED`` remove the previous run's file, so that weights whose
        measurement failed or never ran are never paired with another network's calibration."""
        engine.add_event_handler(Events.STARTED, self.discard_previous)
        engine.add_event_handler(Events.COMPLETED, self)

    def discard_previous(self, engine: Engine | None = None) -> None:
        if self.enabled:
            discard(self.output_path)

    def _crop(self, x: torch.Tensor) -> torch.Tensor:
        """The centre ``roi_size`` of each sample of ``x`` (B, C, *spatial)."""
        if self.roi_size is None:
            return x
        if len(self.roi_size) != x.ndim - 2:
            raise ValueError(f"roi_size {self.roi_size} does not match the references' spatial shape {tuple(x.shape[2:])}.")
        crop = CenterSpatialCrop(self.roi_size)
        return torch.stack([torch.as_tensor(crop(sample)) for sample in x])

    def __call__(self, engine: Engine) -> None:
        from monai_flow.inferers.calibration import DEFAULT_CALIBRATION_GAPS, flat_foreground_mask, measure_quality_time

        if not self.enabled:
            return
        network = self.network if self.network is not None else engine.network
        network = getattr(network, "module", network)  # the plain network under DistributedDataParallel
        device = next(network.parameters()).device
        batches = []
        for batch in self.dataloader:
            x = self._crop(torch.as_tensor(batch[self.image_key]).float()).to(device)
            batches.append((x, degradation_kwargs(batch, self.degradation_keys, x)))
        was_training = network.training
        network.eval()
        try:
            calibration = measure_quality_time(network, batches, self.degradation.rescan, self.max_dt, self.min_dt,
                                               nominal_gaps=self.nominal_gaps or DEFAULT_CALIBRATION_GAPS,
                                               mask=partial(flat_foreground_mask, window=self.mask_window),
                                               noise_estimator=self.noise_estimator, clean_gap=self.clean_gap,
                                               noise_scales=self.noise_scales)
        finally:
            network.train(was_training)
        calibration.save(self.output_path)
        self.logger.info("quality-time calibration saved to %s: nominal %s -> removed %s (at the mean input noise)",
                         self.output_path, [round(g, 2) for g in calibration.nominal],
                         [round(float(e), 3) for e in calibration.curve()])
