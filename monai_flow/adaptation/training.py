"""Fine-tuning a RelativeFlow network on the input volume itself, within a time budget.

RelativeFlow needs no clean image: every noisy scan is a training reference, so the user's own
scan trains the denoiser at its own resolution, texture and noise. :class:`VolumeAdaptation` is the
modality-independent part (the objective, the time-budgeted training loop with its progress bar,
the bad-input checks); :class:`~monai_flow.adaptation.CTAdaptation` and
:class:`~monai_flow.adaptation.MRAdaptation` say how a volume becomes training batches.
"""

from __future__ import annotations

import copy
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from tqdm import tqdm

from monai_flow.checkpoints import unwrap_network
from monai_flow.flows import DtCurriculum, RelativeFlow

__all__ = ["AdaptationError", "AdaptationResult", "VolumeAdaptation"]


class AdaptationError(ValueError):
    """The input cannot be adapted on (too small, noise not measurable, wrong modality)."""


class AdaptationResult(dict):
    """What an adaptation did: ``iterations``, ``seconds``, ``loss`` (last smoothed loss), ``noise``."""


def learning_rate_factor(done: float, warmup: float) -> float:
    """The learning rate's fraction of its peak when ``done`` (0..1) of the budget is spent: a linear rise
    over ``warmup``, then a cosine decay to 0 at the end."""
    if done < warmup:
        return done / warmup
    return 0.5 * (1 + math.cos(math.pi * (done - warmup) / (1 - warmup)))


class VolumeAdaptation(ABC):
    """Fine-tune a copy of a RelativeFlow network on one volume (B = 1, channel-first).

    Training: random patches of the volume, degraded by the modality's operator for a step of
    quality time dt ~ U[dt_range] (:class:`~monai_flow.flows.RelativeFlow`, calibrated), AdamW with
    a linear warm-up over the first ``warmup`` of the budget, then a cosine decay. Without the
    warm-up, Adam's first updates move every weight of a trained network by about the learning rate
    whatever its gradient, and a short adaptation never recovers from that jolt. The network keeps its architecture, so the adapted
    weights load into the bundle's ``network_def``.

    Args:
        patch_size: training patch size (spatial, per axis; 2D for slice networks).
        batch_size: patches per step.
        budget_seconds: wall-clock budget of the adaptation: the preparation (e.g. the projection-domain
            set-up of a CT volume) and the training loop; the learning-rate schedule spans the time the
            preparation leaves. A budget that the preparation uses up raises :class:`AdaptationError`.
        learning_rate: AdamW peak learning rate.
        warmup: fraction of the training time (or of ``max_iterations``) over which the learning rate rises
            linearly from 0 to ``learning_rate``.
        dt_range: (min, max) quality-time steps to train (should cover the inference schedule).
        seed: seed of the patch sampling, degradations and step sizes.
        progress: show a progress bar with the loss and the time left.
        max_iterations: also stop after this many steps (``None``: the budget alone). With a budget
            that is never reached, the result no longer depends on the machine's speed: the same
            input, seed and settings give the same weights.
    """

    def __init__(
        self,
        patch_size: Sequence[int],
        batch_size: int = 8,
        budget_seconds: float = 240.0,
        learning_rate: float = 5e-4,
        dt_range: Sequence[float] = (0.05, 0.6),
        seed: int = 0,
        progress: bool = True,
        max_iterations: int | None = None,
        warmup: float = 0.0,
    ) -> None:
        if not budget_seconds > 0:
            raise ValueError(f"budget_seconds must be > 0, got {budget_seconds}.")
        if batch_size < 1 or any(int(p) < 8 for p in patch_size):
            raise ValueError(f"need batch_size >= 1 and patches of at least 8 per axis, got {batch_size}, {tuple(patch_size)}.")
        if len(dt_range) != 2 or not 0 < dt_range[0] <= dt_range[1]:
            raise ValueError(f"dt_range must be (min, max) with 0 < min <= max, got {tuple(dt_range)}.")
        self.patch_size = tuple(int(p) for p in patch_size)
        self.batch_size, self.budget_seconds, self.learning_rate = int(batch_size), float(budget_seconds), float(learning_rate)
        self.dt_range, self.seed, self.progress = (float(dt_range[0]), float(dt_range[1])), int(seed), progress
        if max_iterations is not None and max_iterations < 1:
            raise ValueError(f"max_iterations must be >= 1 or None, got {max_iterations}.")
        self.max_iterations = max_iterations
        if not 0.0 <= warmup < 1.0:
            raise ValueError(f"warmup must be a fraction of the budget in [0, 1), got {warmup}.")
        self.warmup = float(warmup)

    # -- what a modality defines ------------------------------------------------------------------
    @abstractmethod
    def prepare(self, volume: torch.Tensor, meta: Mapping[str, Any] | None = None) -> Any:
        """Everything the batches need from ``volume`` (1, C, *spatial), computed once."""

    @abstractmethod
    def batches(self, prepared: Any, generator: torch.Generator) -> Iterator[dict[str, torch.Tensor]]:
        """Endless training batches ``{"image": (B, C, *patch), ...}`` in network units."""

    @abstractmethod
    def objective(self) -> RelativeFlow:
        """The RelativeFlow objective the batches are made for (degradation and its batch keys)."""

    def settings(self) -> dict[str, Any]:
        """What determines the adapted weights besides the input and the starting network (cache key)."""
        return {"type": type(self).__name__, "patch_size": self.patch_size, "batch_size": self.batch_size,
                "budget_seconds": self.budget_seconds, "learning_rate": self.learning_rate,
                "dt_range": self.dt_range, "seed": self.seed, "max_iterations": self.max_iterations,
                **({"warmup": self.warmup} if self.warmup else {})}  # keys of adaptations cached before it existed

    # -- the shared training loop -----------------------------------------------------------------
    def check_size(self, spatial: Sequence[int]) -> None:
        """Refuse volumes smaller than one training patch."""
        small = [s for s, p in zip(spatial, self.patch_size) if s < p]
        if small:
            raise AdaptationError(f"input of size {tuple(spatial)} is too small to adapt on: training patches are "
                                  f"{self.patch_size}; give a larger image or a smaller patch size.")

    def __call__(self, network: torch.nn.Module, volume: torch.Tensor,
                 meta: Mapping[str, Any] | None = None) -> tuple[torch.nn.Module, AdaptationResult]:
        """A fine-tuned copy of ``network`` (its unwrapped core, e.g. the 2D network of a ``SliceWise``)
        and what was done. ``volume``: (1, C, *spatial) in network units."""
        if volume.ndim < 4 or volume.shape[0] != 1:
            raise AdaptationError(f"adaptation takes one volume (1, C, *spatial), got shape {tuple(volume.shape)}.")
        start, smoothed, iterations = time.perf_counter(), None, 0  # the budget covers the preparation too
        core = copy.deepcopy(unwrap_network(network)).train()
        device = next(core.parameters()).device
        generator = torch.Generator().manual_seed(self.seed)
        prepared = self.prepare(volume.detach().float().cpu(), meta)
        objective = self.objective().set_random_state(self.seed)
        optimizer = torch.optim.AdamW(core.parameters(), lr=self.learning_rate, weight_decay=1e-4)
        training_start = time.perf_counter()  # the learning-rate schedule spans what the preparation left
        training_budget = self.budget_seconds - (training_start - start)
        bar = tqdm(total=round(self.budget_seconds), unit="s", desc="adapting", disable=not self.progress, mininterval=1.0,
                   bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s, {remaining} left{postfix}")
        for batch in self.batches(prepared, generator):
            elapsed = time.perf_counter() - start
            if elapsed >= self.budget_seconds or iterations == self.max_iterations:
                break
            done = min(1.0, (time.perf_counter() - training_start) / training_budget)
            if self.max_iterations:
                done = max(done, iterations / self.max_iterations)
            for group in optimizer.param_groups:
                group["lr"] = self.learning_rate * learning_rate_factor(done, self.warmup)
            batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            loss = objective.loss(core, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(core.parameters(), 1.0)
            optimizer.step()
            iterations += 1
            value = float(loss.detach())
            smoothed = value if smoothed is None else 0.95 * smoothed + 0.05 * value
            bar.set_postfix_str(f"loss {smoothed:.4g}, {iterations} it", refresh=False)
            bar.update(min(round(time.perf_counter() - start), bar.total) - bar.n)
        bar.close()
        if iterations == 0:
            raise AdaptationError(f"the adaptation budget of {self.budget_seconds:g} s was spent before the first training "
                                  f"step ({time.perf_counter() - start:.1f} s, preparing the input): nothing was adapted; "
                                  "give a larger budget.")
        result = AdaptationResult(iterations=iterations, seconds=round(time.perf_counter() - start, 1),
                                  loss=smoothed, noise=getattr(prepared, "noise", None))
        return core.eval(), result
