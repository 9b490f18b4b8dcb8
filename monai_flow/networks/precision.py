"""Mixed precision (AMP) for flow networks, in one place.

``amp`` is spelled the same everywhere (bundle configs, :class:`monai_flow.engines.FlowTrainer`,
the inferers, ``monai-flow denoise --amp``):

* ``None`` / ``False`` / ``"fp32"`` / ``"none"``: full precision (the default);
* ``"bf16"``: ``torch.autocast`` with bfloat16 (same exponent range as float32: no loss scaling;
  fast on GPUs since Ampere and on CPUs with AVX512-BF16 / AMX);
* ``"fp16"``: ``torch.autocast`` with float16 (training needs a ``GradScaler``, which
  ``FlowTrainer`` adds);
* ``"auto"``: bf16 where the device computes it natively (:func:`native_bf16`: CUDA GPUs with bf16,
  CPUs with AVX512-BF16 or AMX-BF16), full precision elsewhere: the denoising bundles' inference
  default (measured on real scans: the same PSNR as float32, 1.9x faster on an AVX512-BF16 CPU);
* ``True``: what MONAI's ``amp=True`` means, float16.

Only the network runs under autocast. Times never pass through a 16-bit float: ``VelocityUNet``
scales t (or dt) in float32, computes the sinusoidal embedding and its MLP in float32
(:class:`Float32Module`), and returns its output in the dtype of its input, so the solver's
state and every update stay float32. (MONAI's ``RFlowScheduler`` stores its timesteps as float16:
at t = 500 of 1000 float16 resolves steps of 0.25, bfloat16 of 2.)
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn

__all__ = ["AMP_CHOICES", "AutocastNetwork", "Float32Module", "amp_dtype", "amp_name", "autocast", "device_type",
           "native_bf16"]

AMP_CHOICES = ("fp32", "bf16", "fp16", "auto")
_ALIASES = {
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
}
_OFF = {"", "none", "fp32", "float32", "off", "no", "false"}


_CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def _cpu_flags() -> set[str]:
    """Which of :data:`_CPU_BF16_FLAGS` this CPU has, from the cpuinfo library torch ships (any OS);
    AMX tiles always come with AMX-BF16. A torch without these queries reports none (full precision)."""
    checks = {"avx512_bf16": getattr(torch.cpu, "_is_avx512_bf16_supported", None),
              "amx_bf16": getattr(torch.cpu, "_is_amx_tile_supported", None)}
    return {name for name, check in checks.items() if check is not None and check()}


@functools.lru_cache(maxsize=None)
def _native_bf16(kind: str, index: int | None) -> bool:
    if kind == "cuda":
        if not torch.cuda.is_available():
            return False
        try:
            return bool(torch.cuda.is_bf16_supported(including_emulation=False))
        except TypeError:  # older torch: no emulation argument
            return bool(torch.cuda.is_bf16_supported())
    if kind == "cpu":
        return bool(_cpu_flags() & set(_CPU_BF16_FLAGS))
    return False


def native_bf16(device: torch.device | str | torch.Tensor | None = None) -> bool:
    """Whether ``device`` computes bfloat16 natively, so that bf16 autocast is faster than float32: a
    CUDA GPU with bf16 (Ampere and later), or a CPU with AVX512-BF16 or AMX-BF16 instructions (torch's
    cpuinfo). Without them bf16 is emulated and slower."""
    if isinstance(device, torch.Tensor):
        device = device.device
    device = torch.device("cpu" if device is None else device)
    return _native_bf16(device.type, device.index)


def amp_dtype(amp: Any, device: torch.device | str | torch.Tensor | None = None) -> torch.dtype | None:
    """The autocast dtype of an ``amp`` setting on ``device`` (default CPU), or None for full precision.

    Accepts None / False / ``"fp32"`` / ``"none"`` (off), ``"bf16"`` / ``"bfloat16"``, ``"fp16"`` /
    ``"float16"``, ``torch.bfloat16`` / ``torch.float16``, ``"auto"`` (bf16 where :func:`native_bf16`,
    else off) and True (float16, as MONAI's ``amp=True``).
    """
    if isinstance(amp, str) and amp.strip().lower() == "auto":
        return torch.bfloat16 if native_bf16(device) else None
    if amp is None or amp is False:
        return None
    if amp is True:
        return torch.float16
    if isinstance(amp, torch.dtype):
        if amp in (torch.bfloat16, torch.float16):
            return amp
        if amp == torch.float32:
            return None
    if isinstance(amp, str):
        key = amp.strip().lower()
        if key in _OFF:
            return None
        if key in _ALIASES:
            return _ALIASES[key]
    raise ValueError(f"amp must be one of None, 'fp32', 'bf16', 'fp16', 'auto' (or True for fp16), got {amp!r}.")


def amp_name(amp: Any) -> str:
    """``"fp32"``, ``"bf16"``, ``"fp16"`` or ``"auto"`` (resolved per device when the network runs)."""
    if isinstance(amp, str) and amp.strip().lower() == "auto":
        return "auto"
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[amp_dtype(amp)]


def device_type(device: torch.device | str | torch.Tensor | None) -> str:
    """``"cuda"``, ``"cpu"``, ... of a device, a device string or a tensor (None: ``"cpu"``)."""
    if isinstance(device, torch.Tensor):
        return device.device.type
    if device is None:
        return "cpu"
    return torch.device(device).type


def autocast(amp: Any, device: torch.device | str | torch.Tensor | None):
    """``torch.autocast(device_type, dtype)`` for an ``amp`` setting, or a null context when it is off."""
    dtype = amp_dtype(amp, device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type(device), dtype=dtype)


def _autocast_enabled(kind: str) -> bool:
    try:
        return bool(torch.is_autocast_enabled(kind))
    except TypeError:  # torch < 2.4: no device argument
        return bool(torch.is_autocast_enabled()) if kind == "cuda" else bool(torch.is_autocast_cpu_enabled())


class Float32Module(nn.Sequential):
    """An ``nn.Sequential`` that always runs in the dtype of its own weights (float32 for a float32
    model), also under autocast: the time embedding's MLP. Being a ``Sequential`` of the same layers,
    its ``state_dict`` keys are those of the ``Sequential`` it replaces."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        param = next(self.parameters(), None)
        dtype = param.dtype if param is not None else torch.float32
        kind = x.device.type
        if _autocast_enabled(kind):
            with torch.autocast(kind, enabled=False):
                return super().forward(x.to(dtype))
        return super().forward(x.to(dtype))


class AutocastNetwork(nn.Module):
    """``AutocastNetwork(network, amp)(x, *args, **kwargs)``: the network under ``torch.autocast`` and
    its output in the dtype of ``x``, for callers that hold the state in float32 (inferers, solvers).

    Attributes such as ``null_class`` and ``spatial_divisor`` are read through from ``network``.
    ``amp`` off returns ``network``'s output unchanged.
    """

    def __init__(self, network: Callable[..., torch.Tensor], amp: Any) -> None:
        super().__init__()
        self.amp = amp_name(amp)
        if isinstance(network, nn.Module):
            self.network = network
        else:
            self._callable = network

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            inner = self._modules.get("network") or self.__dict__.get("_callable")
            return getattr(inner, name)

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        network = self._modules.get("network") or self.__dict__["_callable"]
        with autocast(self.amp, x):
            out = network(x, *args, **kwargs)
        return out.to(x.dtype) if isinstance(out, torch.Tensor) and out.is_floating_point() else out
