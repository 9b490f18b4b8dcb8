"""RelativeFlow step schedules in quality time (tau, larger is cleaner), all in one place.

A schedule is a coarse-to-fine sequence of step sizes ``dt > 0``. Its template, read from the
clean end, is ``min_dt``, then doubling, capped at ``max_dt`` (the largest trained step):
``..., max_dt, max_dt, ..., 4 min_dt, 2 min_dt, min_dt``. With the defaults, 3 steps are the
RelativeFlow paper's ``(0.2, 0.1, 0.05)``.

- :func:`relative_dt_schedule`: close a quality gap with the fewest template steps.
- :func:`split_dt_schedule`: a given total in a given number of steps.
- :func:`relative_template_schedule`: the N-step template itself.
"""

from __future__ import annotations

import math
import warnings

__all__ = ["relative_dt_schedule", "relative_template_schedule", "split_dt_schedule"]


def relative_dt_schedule(gap: float, max_dt: float = 0.2, min_dt: float = 0.05, max_steps: int = 64) -> list[float]:
    """Split a quality-time gap into a coarse-to-fine sequence of step sizes summing to ``gap``.

    Template, read from the clean end: the last step is ``min_dt``, each earlier one doubles,
    capped at ``max_dt`` (the largest trained dt): ``..., max_dt, max_dt, ..., 4 min_dt, 2 min_dt,
    min_dt``. The fewest template steps whose sum reaches ``gap`` are taken and scaled down to sum
    to ``gap`` exactly. With the defaults a gap of 0.35 gives the paper's (0.2, 0.1, 0.05); larger
    gaps add ``max_dt`` steps in front, smaller gaps drop the coarse steps. ``gap <= 0`` gives no
    step. Beyond ``max_steps`` the schedule is truncated with a warning (the gap is not closed).
    """
    if not max_dt > 0 or not 0 < min_dt <= max_dt:
        raise ValueError(f"need 0 < min_dt <= max_dt, got min_dt={min_dt}, max_dt={max_dt}.")
    if not math.isfinite(gap):
        raise ValueError(f"gap must be finite, got {gap} (check the noise estimate and target_std).")
    if gap <= 0:
        return []
    template: list[float] = []  # clean end first
    total = 0.0
    while total < gap * (1 - 1e-12):
        if len(template) == max_steps:
            warnings.warn(
                f"relative_dt_schedule: gap {gap:.3g} needs more than max_steps={max_steps} steps; truncated."
            )
            return template[::-1]
        template.append(min(max_dt, min_dt * 2.0 ** len(template)))
        total += template[-1]
    scale = gap / total
    return [d * scale for d in reversed(template)]


def split_dt_schedule(total: float, steps: int, max_dt: float = 0.2, min_dt: float = 0.05) -> list[float]:
    """``steps`` coarse-to-fine step sizes summing to ``total``: the template of
    :func:`relative_dt_schedule` (from the clean end ``min_dt``, doubling, capped at ``max_dt``)
    cut to ``steps`` entries and scaled. A total of 0.35 in 3 steps is the paper's
    (0.2, 0.1, 0.05); 1 step is ``(total,)``. Changing ``steps`` keeps the noise removed (``total``).
    """
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}.")
    if not total > 0 or not math.isfinite(total):
        raise ValueError(f"total must be a finite dt > 0, got {total}.")
    template = [min(max_dt, min_dt * 2.0**k) for k in range(int(steps))][::-1]
    scale = total / sum(template)
    return [d * scale for d in template]


def relative_template_schedule(steps: int, max_dt: float = 0.2, min_dt: float = 0.05) -> list[float]:
    """The ``steps``-step template itself (its total is whatever the template sums to), e.g. 3 steps
    with the defaults give the paper's ``(0.2, 0.1, 0.05)``."""
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}.")
    return split_dt_schedule(sum(min(max_dt, min_dt * 2.0**k) for k in range(int(steps))), steps, max_dt, min_dt)
