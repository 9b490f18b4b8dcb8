"""monai_flow.inferers: MONAI inferers for flow models.

``FlowInferer`` (generation, t = 0 noise -> t = 1 data), ``RelativeFlowInferer`` (denoising in
quality time, step ``x <- x + (e^dt - 1) net(x, dt)``) and ``SlidingWindowFlowInferer`` (either
of them on volumes larger than the roi, ``per_step`` or ``per_window``), ``RestorationInferer``
(IR-Flow, t = 0 degraded -> t = 1 clean, 1..N steps) and ``FlowMapDenoiser`` (flow-map
denoising with a distortion-perception ``lookahead``); ``DomainInferer`` runs any of them in a
degradation operator's domain (MR second-moment domain); ``FlipEnsembleInferer`` averages any
of them over mirror images of the input.
"""

from .base import FlowInfererBase, make_noise
from .calibration import QualityTimeCalibration, calibration_path, measure_quality_time
from .domain import DomainInferer
from .flip_ensemble import FlipEnsembleInferer
from .flow import FlowInferer
from .flow_map import FlowMapDenoiser
from .relative import RelativeFlowInferer
from .restoration import RestorationInferer
from .schedules import relative_dt_schedule, relative_template_schedule, split_dt_schedule
from .sliding_window import SlidingWindowFlowInferer

__all__ = [
    "DomainInferer",
    "FlipEnsembleInferer",
    "FlowInferer",
    "FlowInfererBase",
    "FlowMapDenoiser",
    "QualityTimeCalibration",
    "RelativeFlowInferer",
    "RestorationInferer",
    "SlidingWindowFlowInferer",
    "calibration_path",
    "make_noise",
    "measure_quality_time",
    "relative_dt_schedule",
    "relative_template_schedule",
    "split_dt_schedule",
]
