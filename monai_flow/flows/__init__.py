"""Flow training objectives behind one interface, :class:`FlowObjective` (``loss(network, batch)``).

- :class:`ConditionalFlowMatching`: MOTFM generation (t in [0, 1], t = 0 noise, t = 1 data).
- :class:`RelativeFlow`: denoising from noisy references (quality time tau, larger is cleaner),
  with its :class:`DtCurriculum`.
- :class:`CumulativeVelocityFlow`: IR-Flow paired restoration (t = 0 degraded, t = 1 clean).
- :class:`FlowMap`: MeanFlow flow-map objective for the distortion-perception denoiser.
"""

from .base import FlowObjective
from .conditional_ot import ConditionalFlowMatching
from .coupling import ot_permutation
from .curriculum import DtCurriculum
from .paths import CondOTProbPath, expand_time
from .cumulative import RESTORATION_TARGETS, CumulativeVelocityFlow, restoration_step
from .flow_map import FlowMap, meanflow_target
from .relative import RelativeFlow, relative_euler_step, relative_velocity_target
from .time import LogitNormalTimeSampler, TimeSampler, UniformTimeSampler, get_time_sampler

__all__ = [
    "CumulativeVelocityFlow",
    "FlowMap",
    "meanflow_target",
    "restoration_step",
    "RESTORATION_TARGETS",
    "FlowObjective",
    "ConditionalFlowMatching",
    "ot_permutation",
    "DtCurriculum",
    "CondOTProbPath",
    "expand_time",
    "RelativeFlow",
    "relative_euler_step",
    "relative_velocity_target",
    "TimeSampler",
    "UniformTimeSampler",
    "LogitNormalTimeSampler",
    "get_time_sampler",
]
