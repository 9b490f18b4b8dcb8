"""Common base of the flow inferers: a step sequence plus a one-step update.

Every flow inferer is described by two pieces that :class:`SlidingWindowFlowInferer` reuses:

* ``step_sequence(inputs) -> list[Step]``: the steps to take; a step is a tuple of tensors,
  each 0-d (same for the whole batch) or of shape (B,) (per sample);
* ``apply_step(f, x, step) -> x_new``: one update of the state given a field callable
  ``f(x, t) -> Tensor`` (the network output for state ``x`` at time ``t``, with classifier-free
  guidance already applied, see :meth:`FlowInfererBase.velocity`).

Conditioning follows :class:`monai_flow.networks.VelocityUNet`: ``class_labels=None`` /
``mask=None`` mean the null class / null (zero) mask; ``condition`` (e.g. a degraded image) is
always passed and never guided. Only arguments that are not None are forwarded to the network,
so any ``network(x, t)`` callable works when unconditioned.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.data import MetaTensor
from monai.inferers import Inferer
from monai.utils import convert_to_dst_type
from tqdm import tqdm

from monai_flow.checkpoints import unwrap_network
from monai_flow.networks.precision import AutocastNetwork, amp_dtype, amp_name

__all__ = ["AutocastInferer", "FlowInfererBase", "Step", "WrappingInferer", "make_noise", "select_batch"]

Step = tuple[torch.Tensor, ...]
Field = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def make_noise(
    shape: Sequence[int],
    seed: int | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Standard normal initial noise of ``shape`` (B, C, *spatial), reproducible from ``seed``.

    With ``seed`` the noise is drawn on the CPU from ``torch.Generator().manual_seed(seed)`` and
    moved to ``device``, so a seed gives the same sample on every device. ``generator`` (on any
    device) is used as is; with neither, the global RNG is used.
    """
    if seed is not None and generator is not None:
        raise ValueError("give either seed or generator, not both.")
    if seed is not None:
        generator = torch.Generator().manual_seed(int(seed))
    draw_device = generator.device if generator is not None else device
    noise = torch.randn(tuple(shape), generator=generator, device=draw_device, dtype=dtype)
    return noise.to(device) if device is not None else noise


def plain(x: Any) -> Any:
    """Drop MetaTensor metadata for computation (MetaTensor ops are slower and carry meta around)."""
    return x.as_tensor() if isinstance(x, MetaTensor) else x


def select_batch(value: torch.Tensor | None, index: torch.Tensor) -> torch.Tensor | None:
    """Pick batch entries ``index`` from a per-sample (B, ...) tensor; 0-d tensors and None pass."""
    if value is None or value.ndim == 0:
        return value
    return value.to(index.device)[index]


class FlowInfererBase(Inferer):
    """Integrates a flow from ``inputs`` with ``network``: ``inferer(inputs, network, class_labels=None,
    mask=None, condition=None)`` returns a tensor shaped like ``inputs`` (MetaTensor meta kept).

    Args:
        guidance_scale: classifier-free guidance weight w, ``v = v_u + w (v_c - v_u)``;
            1 = conditional only, 0 = unconditional only.
        progress: show a tqdm bar over the steps.
    """

    def __init__(self, guidance_scale: float = 1.0, progress: bool = False) -> None:
        super().__init__()
        self.guidance_scale = float(guidance_scale)
        self.progress = progress

    # -- the two pieces subclasses define ---------------------------------------------------------
    @abstractmethod
    def step_sequence(self, inputs: torch.Tensor) -> list[Step]:
        """Steps to take for ``inputs`` (B, C, *spatial); tensors on ``inputs.device``."""

    @abstractmethod
    def apply_step(self, f: Field, x: torch.Tensor, step: Step) -> torch.Tensor:
        """One update of state ``x`` using field ``f(x, t)``."""

    # -- shared machinery -------------------------------------------------------------------------
    def velocity(
        self,
        network: Callable[..., torch.Tensor],
        x: torch.Tensor,
        t: torch.Tensor,
        class_labels: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        condition: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Guided network output at (x, t): one network call, or one call on a doubled batch
        (conditional half, null half) when ``guidance_scale`` is not 0 or 1 and a class label or
        mask is given. The null class index is read from ``network.null_class``; a network
        without it gets two calls instead (the second with ``class_labels`` omitted)."""
        cond = {k: v for k, v in (("class_labels", class_labels), ("mask", mask)) if v is not None}
        extra = {} if condition is None else {"condition": condition}
        w = self.guidance_scale
        if not cond or w == 1.0:
            return network(x, t, **cond, **extra)
        if w == 0.0:
            return network(x, t, **extra)
        null_label = getattr(unwrap_network(network, slice_wise=False), "null_class", None)
        if class_labels is not None and null_label is None:
            v_c = network(x, t, **cond, **extra)
            v_u = network(x, t, **extra)
            return v_u + w * (v_c - v_u)
        two = {k: torch.cat([v, v]) for k, v in extra.items()}
        if class_labels is not None:
            two["class_labels"] = torch.cat([class_labels, torch.full_like(class_labels, null_label)])
        if mask is not None:
            two["mask"] = torch.cat([mask, torch.zeros_like(mask)])
        t2 = torch.cat([t, t]) if t.ndim == 1 and t.shape[0] == x.shape[0] else t
        v_c, v_u = network(torch.cat([x, x]), t2, **two).chunk(2)
        return v_u + w * (v_c - v_u)

    def integrate(self, f: Field, x: torch.Tensor, steps: Sequence[Step], progress: bool = False) -> torch.Tensor:
        """Apply ``steps`` in order starting from ``x``; only the current state is kept."""
        for s in tqdm(steps, disable=not progress, desc=type(self).__name__):
            x = self.apply_step(f, x, s)
        return x

    def __call__(  # type: ignore[override]
        self,
        inputs: torch.Tensor,
        network: Callable[..., torch.Tensor],
        class_labels: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        condition: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Args:
            inputs: initial state (B, C, *spatial): noise for generation, the degraded image for
                restoration / denoising.
            network: ``network(x, t, [class_labels=], [mask=], [condition=])``.
            class_labels: (B,) integer labels or None (null class).
            mask: (B, Cm, *spatial) or None (null mask).
            condition: (B, Cc, *spatial) extra input channels or None.
        """
        x = plain(inputs)
        class_labels, mask, condition = plain(class_labels), plain(mask), plain(condition)

        def f(state: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return self.velocity(network, state, t, class_labels, mask, condition)

        out = self.integrate(f, x, self.step_sequence(x), self.progress)
        return convert_to_dst_type(out, inputs, device=out.device)[0]


class WrappingInferer(Inferer):
    """An inferer around another one (``self.inferer``): attributes it does not have itself (``results``,
    ``dt_table``, ``flow_inferer``, ...) are the wrapped inferer's."""

    def __getattr__(self, name: str):
        if name.startswith("__") or name == "inferer":
            raise AttributeError(name)
        return getattr(self.inferer, name)


class AutocastInferer(WrappingInferer):
    """Run any inferer with its network under mixed precision (AMP): ``AutocastInferer(inferer, amp)``.

    ``inferer(inputs, network, *args, **kwargs)`` is called with the network wrapped in
    :class:`~monai_flow.networks.precision.AutocastNetwork`: every network evaluation runs under
    ``torch.autocast`` on the input's device and returns the input's dtype, so the solver's state,
    the step updates, the times and the noise estimates of the inferer stay float32 (a
    ``VelocityUNet`` also keeps its time embedding float32). Works with every monai-flow inferer
    (flow, RelativeFlow, restoration, flow-map, sliding window, adaptive) and with MONAI's.

    Args:
        inferer: the inferer to run.
        amp: None / ``"fp32"`` (off: the inferer runs unchanged), ``"bf16"`` or ``"fp16"``
            (:func:`~monai_flow.networks.precision.amp_dtype`).
    """

    def __init__(self, inferer, amp: str | None = None) -> None:
        super().__init__()
        if not callable(inferer):
            raise ValueError(f"inferer must be callable, got {type(inferer).__name__}.")
        amp_dtype(amp)  # validates
        self.inferer = inferer
        self.amp = amp_name(amp)

    def __call__(self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any, **kwargs: Any):  # type: ignore[override]
        if self.amp != "fp32":
            network = AutocastNetwork(network, self.amp)
        return self.inferer(inputs, network, *args, **kwargs)
