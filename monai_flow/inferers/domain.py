"""Run any inferer in the domain a degradation operator trains in (e.g. MR's second-moment domain)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from monai.inferers import Inferer
from monai.utils import convert_to_dst_type

from monai_flow.inferers.base import plain

__all__ = ["DomainInferer"]


class DomainInferer(Inferer):
    """``DomainInferer(inferer, operator)(image, network)``: ``operator.from_domain(inferer(operator.to_domain(image, std), network))``.

    For networks trained on images transformed by their degradation operator, e.g.
    ``MRDegradation(domain="second_moment")`` (``w = M^2 - 2 L s^2``, an unbiased estimate of the
    squared signal): the input's noise std ``s`` (float or (B,), in image units) comes from the call,
    the constructor, or ``noise_estimator`` (default: the operator's ``estimate_noise_std``, applied to
    the input image). The inner inferer runs unchanged (any time convention); time-dependent settings
    that read a noise level (``RelativeFlowInferer("auto")``) see the domain's values.

    Args:
        inferer: the flow inferer, ``inferer(x, network, *args, **kwargs)``.
        operator: has ``to_domain(image, std)`` and ``from_domain(x)``.
        std: the inputs' noise std, or None.
        noise_estimator: ``Callable[[Tensor (B, C, *spatial)], Tensor (B,)]`` used when no std is given.
    """

    def __init__(self, inferer: Callable[..., torch.Tensor], operator, std: float | None = None,
                 noise_estimator: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        super().__init__()
        for name in ("to_domain", "from_domain"):
            if not callable(getattr(operator, name, None)):
                raise ValueError(f"operator must have a callable {name}(), got {type(operator).__name__}.")
        self.inferer, self.operator, self.std = inferer, operator, std
        self.noise_estimator = noise_estimator if noise_estimator is not None else getattr(operator, "estimate_noise_std", None)

    def __call__(self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args, std=None, **kwargs):  # type: ignore[override]
        """Args: inputs (B, C, *spatial) images; std float or (B,) overrides the constructor's."""
        x = plain(inputs)
        std = self.std if std is None else std
        if std is None:
            if self.noise_estimator is None:
                raise ValueError("DomainInferer needs std (constructor or call) or a noise_estimator.")
            std = self.noise_estimator(x)
        out = self.operator.from_domain(self.inferer(self.operator.to_domain(x, std), network, *args, **kwargs))
        return convert_to_dst_type(out, inputs, device=out.device)[0]
