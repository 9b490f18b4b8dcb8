"""Quality-time calibration: the noise a trained RelativeFlow network really removes.

The inferer's correspondence (a step of ``dt`` divides the noise std by ``e^{dt}``, ``docs/flows.md``)
holds for a first step on inputs like the training inputs. Each further step sees an input that is
cleaner, and whose residual noise is coarser, than any training input, and removes less: with the
``ct_denoise`` main model, a nominal quality time of 1.6 removes ``e^{1.25}`` rather than ``e^{1.6}``.
So ``dt_schedule="auto"`` needs the map from the nominal gap it schedules to the gap it achieves.
That map belongs to the trained network, so it is measured, not modelled:

- :func:`measure_quality_time` cleans references the network did not train on (with the network
  itself), simulates two independent scans of each at one or more multiples of the reference's noise,
  runs the ``auto`` template schedule of each nominal gap ``G`` on both and measures the *removal*
  ``ln(sigma_in / sigma_out)``: ``sigma_out = std(out_1 - out_2) / sqrt(2)`` over the flattest half
  of the foreground (or of a window such as soft tissue; the difference of two scans holds their
  noise only), ``sigma_in`` the same on the scans or, as ``auto`` sees it, the noise estimator's
  reading.
- :class:`QualityTimeCalibration` holds one point per reference and noise level (its input noise and
  its removal for every ``G``), fits the removal against the input noise and inverts it
  (``nominal_gap``); :class:`~monai_flow.inferers.RelativeFlowInferer` takes it as ``calibration``.
  Saved as JSON beside the weights (:func:`calibration_path`).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from monai_flow.atomic import write_atomically
from monai_flow.inferers.schedules import relative_dt_schedule

__all__ = [
    "DEFAULT_CALIBRATION_GAPS",
    "QualityTimeCalibration",
    "calibration_path",
    "flat_foreground_mask",
    "measure_quality_time",
]

#: nominal gaps measured by default: the range ``auto`` schedules for 2 - 6x noise reductions and beyond.
DEFAULT_CALIBRATION_GAPS = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 3.5, 4.0)


@dataclass(frozen=True)
class QualityTimeCalibration:
    """Measured noise removal of a RelativeFlow network along the ``auto`` template schedule.

    One measured *point* per reference and input noise level: its input noise and, for every nominal
    gap, the gap it removed. What a network removes depends on the input's noise, so the removal at
    an input noise ``sigma`` is a least-squares line in ``ln sigma`` through the points, per nominal
    gap, held constant outside the measured noise range.

    Args:
        nominal: nominal gaps ``G`` (the sum of the schedule's ``dt``), increasing, from 0.
        noise: each point's input noise std (the estimator's reading; the units of ``target_std``).
        effective: per point, the measured ``ln(sigma_in / sigma_out)`` after the schedule of each ``G``.
        max_dt, min_dt: the template the schedules were built with
            (:func:`~monai_flow.inferers.relative_dt_schedule`).
    """

    nominal: tuple[float, ...]
    noise: tuple[float, ...]
    effective: tuple[tuple[float, ...], ...]
    max_dt: float
    min_dt: float

    def __post_init__(self) -> None:
        g, n = np.asarray(self.nominal, float), np.asarray(self.noise, float)
        e = np.asarray(self.effective, float)
        if g.ndim != 1 or g.size < 2 or n.ndim != 1 or n.size < 1 or e.shape != (n.size, g.size):
            raise ValueError(f"need nominal (G,) with G >= 2, noise (P,) and effective (P, G) of the same lengths, got "
                             f"{g.shape}, {n.shape} and {e.shape}.")
        if not (np.isfinite(g).all() and np.isfinite(e).all() and np.isfinite(n).all() and (n > 0).all()):
            raise ValueError(f"calibration values must be finite (noise > 0), got nominal={self.nominal}, "
                             f"noise={self.noise}, effective={self.effective}.")
        if g[0] != 0 or (e[:, 0] != 0).any() or not (np.diff(g) > 0).all():
            raise ValueError(f"nominal must increase from 0 (effective[:, 0] = 0), got nominal={self.nominal}, "
                             f"effective={self.effective}.")
        if not 0 < self.min_dt <= self.max_dt:
            raise ValueError(f"need 0 < min_dt <= max_dt, got min_dt={self.min_dt}, max_dt={self.max_dt}.")

    def curve(self, noise: float | None = None) -> np.ndarray:
        """The removal after each nominal gap, (G,), at input noise ``noise`` (None: the points' geometric mean)."""
        logs, e = np.log(np.asarray(self.noise, float)), np.asarray(self.effective, float)
        x = logs.mean() if noise is None or not noise > 0 else np.clip(math.log(noise), logs.min(), logs.max())
        centred = logs - logs.mean()
        if np.ptp(logs) < 1e-6:  # one noise level: the mean
            return e.mean(axis=0)
        slope = (centred[:, None] * (e - e.mean(axis=0))).sum(axis=0) / (centred**2).sum()
        return e.mean(axis=0) + slope * (x - logs.mean())

    def reach(self, noise: float | None = None) -> float:
        """The largest removal measured (at input noise ``noise``): ``auto`` cannot promise more."""
        return float(self.curve(noise).max())

    def nominal_gap(self, gap: float, noise: float | None = None) -> float:
        """The nominal gap whose schedule removes ``gap`` (in ``ln`` std) from an input of noise ``noise``, by
        linear interpolation of the running maximum of :meth:`curve`; beyond :meth:`reach`, the nominal gap
        that reached it."""
        if gap <= 0:
            return 0.0
        envelope = np.maximum.accumulate(self.curve(noise))
        rising = np.concatenate([[True], np.diff(envelope) > 0])  # strictly increasing points for np.interp
        return float(np.interp(gap, envelope[rising], np.asarray(self.nominal, float)[rising]))

    def save(self, path: str | os.PathLike) -> Path:
        """Write as JSON, atomically."""
        text = json.dumps(asdict(self), indent=1)
        return write_atomically(path, lambda tmp: Path(tmp).write_text(text))

    @classmethod
    def load(cls, path: str | os.PathLike) -> QualityTimeCalibration:
        """Read a file written by :meth:`save`; a clear error names the file if it is not one."""
        try:
            data = json.loads(Path(path).read_text())
            return cls(nominal=tuple(data["nominal"]), noise=tuple(data["noise"]),
                       effective=tuple(tuple(row) for row in data["effective"]),
                       max_dt=float(data["max_dt"]), min_dt=float(data["min_dt"]))
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{path}: not a quality-time calibration ({type(err).__name__}: {err}).") from err

    @classmethod
    def load_if_present(cls, path: str | os.PathLike | None) -> QualityTimeCalibration | None:
        """:meth:`load`, or None when there is no such file (a model trained before calibrations)."""
        return cls.load(path) if path is not None and Path(path).is_file() else None


def calibration_path(weights: str | os.PathLike) -> Path:
    """Where the calibration of a weights file lives: ``model.pt`` -> ``model.quality_time.json``."""
    weights = Path(weights)
    return weights.with_name(weights.stem + ".quality_time.json")


def flat_foreground_mask(reference: torch.Tensor, smoothing: float = 2.0,
                         window: Sequence[float] | None = None) -> torch.Tensor:
    """The flattest half of the foreground of a reference (C, *spatial), as a bool mask (*spatial).

    The reference (its first channel) is smoothed with a Gaussian of ``smoothing`` pixels; the
    foreground is where it lies inside ``window`` (low, high; in the reference's units), e.g. soft tissue,
    or without a window where it exceeds a quarter of its 99th percentile (images whose background is
    about 0, such as normalised CT or MR magnitude); the flat half is the half of the foreground
    with the smaller smoothed gradient magnitude: where noise is measured in practice, away from
    the edges a denoiser keeps sharp.
    """
    image = ndimage.gaussian_filter(reference[0].detach().float().cpu().numpy(), smoothing)
    gradient = np.sqrt(sum(g**2 for g in np.gradient(image)))
    if window is not None:
        low, high = (float(v) for v in window)
        foreground = (image > low) & (image < high)
    else:
        foreground = image > 0.25 * np.percentile(image, 99)
    if foreground.sum() < 64:
        raise ValueError(f"the reference has {int(foreground.sum())} foreground pixels"
                         f"{f' inside the window {tuple(window)}' if window is not None else ''}; at least 64 are "
                         "needed to measure noise.")
    return torch.from_numpy(foreground & (gradient <= np.median(gradient[foreground])))


def _noise_std(difference: torch.Tensor, masks: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per sample: ``std(difference[mask]) / sqrt(2)`` (the std of one realization's noise)."""
    return torch.stack([d[0][m.to(d.device)].double().std().cpu() / math.sqrt(2) for d, m in zip(difference, masks)])


@torch.no_grad()
def measure_quality_time(
    network: Callable[..., torch.Tensor],
    references: Iterable[torch.Tensor | tuple[torch.Tensor, Mapping[str, Any]]],
    add_noise: Callable[..., torch.Tensor],
    max_dt: float,
    min_dt: float,
    nominal_gaps: Sequence[float] = DEFAULT_CALIBRATION_GAPS,
    noise_scales: Sequence[float] = (1.0,),
    clean_gap: float = 4.0,
    mask: Callable[[torch.Tensor], torch.Tensor] = flat_foreground_mask,
    noise_estimator: Callable[[torch.Tensor], torch.Tensor] | None = None,
    seeds: tuple[int, int] = (1, 2),
    progress: bool = True,
) -> QualityTimeCalibration:
    """Measure a RelativeFlow network's removal for each nominal gap of the ``auto`` template.

    Each reference is first made nearly clean by the network itself (the template schedule of
    ``clean_gap``), then ``add_noise`` gives two independent noisy scans of that image at each noise
    scale. Noise must be added to a (nearly) clean image: added to a noisy reference, the two scans
    would share the reference's noise, and for a nonlinear denoiser the difference of the outputs no
    longer measures the output noise (it shrank by e^{-0.7 dt} per step where scans of a clean image gave e^{-0.95 dt}).

    Args:
        network: ``network(x, dt)``, the velocity network the inferer will run.
        references: batches (B, C, *spatial) in the network's units, not used in training, or
            ``(batch, kwargs)`` pairs whose ``kwargs`` go to ``add_noise`` (e.g. the pixel spacing).
        add_noise: ``add_noise(clean, reference, generator, noise_scale=s, **kwargs)``, a noisy scan of
            ``clean`` with ``s`` times the noise std of a scan like ``reference``.
        max_dt, min_dt: the inferer's template (see :func:`~monai_flow.inferers.relative_dt_schedule`).
        nominal_gaps: increasing gaps > 0 to measure.
        noise_scales: the input noise levels, relative to each reference's own; one point per
            reference sample and scale.
        clean_gap: nominal gap of the schedule that cleans the references (0: use them as they are); what
            noise it leaves is seen by ``noise_estimator`` (about 2 % on CT with the default).
        mask: ``mask(clean (C, *spatial)) -> bool (*spatial)``, where noise is measured.
        noise_estimator: the ``auto`` inferer's estimator (B, C, *spatial) -> (B,). Given, the input
            noise is its reading of the noisy scans (the noise ``auto`` starts its gap from), so the
            calibration maps the estimator's reading to the noise reached and absorbs the estimator's
            bias against the measure in ``mask`` (e.g. 1.02 - 1.06x on CT, where it also counts
            pixel-scale anatomy as noise). Without it, both ends are measured in ``mask``.
        seeds: the two scans' generator seeds.
        progress: tqdm bar over references x scales x gaps.
    """
    from monai_flow.inferers.relative import RelativeFlowInferer

    gaps = [float(g) for g in nominal_gaps]
    if not gaps or gaps[0] <= 0 or any(b <= a for a, b in zip(gaps, gaps[1:])):
        raise ValueError(f"nominal_gaps must increase from > 0, got {nominal_gaps!r}.")
    scales = [float(v) for v in noise_scales]
    if not scales or any(not v > 0 for v in scales):
        raise ValueError(f"noise_scales must be a non-empty sequence of values > 0, got {noise_scales!r}.")

    def schedule(gap: float) -> RelativeFlowInferer:
        return RelativeFlowInferer(dt_schedule=relative_dt_schedule(gap, max_dt, min_dt), max_dt=max_dt, min_dt=min_dt)

    inferers = [schedule(g) for g in gaps]
    noise: list[float] = []
    removed: list[list[float]] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        total = len(references) * len(scales) * len(gaps) if hasattr(references, "__len__") else None
        bar = tqdm(desc="Calibrating quality time", unit="schedule", total=total)
    for item in references:
        reference, kwargs = item if isinstance(item, tuple) else (item, {})
        reference = torch.as_tensor(reference).float()
        clean = schedule(clean_gap)(reference, network) if clean_gap > 0 else reference
        masks = [mask(sample) for sample in clean]
        for scale in scales:
            scans = [add_noise(clean, reference, torch.Generator(device=clean.device).manual_seed(s),
                               noise_scale=scale, **kwargs) for s in seeds]
            if noise_estimator is None:
                sigma_in = _noise_std(scans[0] - scans[1], masks)
            else:  # the mean reading of the two scans
                sigma_in = sum(torch.as_tensor(noise_estimator(y)).double().reshape(-1).cpu().expand(y.shape[0])
                               for y in scans) / 2
            rows = []
            for inferer in inferers:
                outs = [inferer(y, network) for y in scans]
                rows.append(torch.log(sigma_in / _noise_std(outs[0] - outs[1], masks)))
                if bar is not None:
                    bar.update()
            noise += [float(v) for v in sigma_in]
            removed += [[0.0, *(float(v) for v in column)] for column in torch.stack(rows).T]
    if bar is not None:
        bar.close()
    if not removed:
        raise ValueError("measure_quality_time needs at least one reference batch, got none.")
    return QualityTimeCalibration(nominal=(0.0, *gaps), noise=tuple(noise), effective=tuple(map(tuple, removed)),
                                  max_dt=float(max_dt), min_dt=float(min_dt))
