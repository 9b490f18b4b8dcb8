"""argparse value types shared by the subcommands: clear messages for bad numbers and devices."""

from __future__ import annotations

import argparse
import math
import re

from .errors import CLIError

__all__ = ["finite_float", "parse_device", "positive_float", "positive_int"]


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _number(text: str, positive: bool) -> float:
    kind = "a positive number" if positive else "a finite number"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}") from None
    if not math.isfinite(value) or (positive and value <= 0):
        raise argparse.ArgumentTypeError(f"expected {kind}, got {text}")
    return value


def finite_float(text: str) -> float:
    return _number(text, positive=False)


def positive_float(text: str) -> float:
    return _number(text, positive=True)


def parse_device(text: str) -> str:
    """``cpu``, ``cuda`` or ``cuda:N``; CUDA must be available."""
    import torch

    if not re.fullmatch(r"cpu|cuda(:\d+)?", text):
        raise CLIError(f"--device must be cpu, cuda or cuda:N, got {text!r}.")
    if text.startswith("cuda"):
        if not torch.cuda.is_available():
            raise CLIError(f"--device {text}: CUDA is not available on this machine (torch {torch.__version__}); "
                           "use --device cpu.")
        index = int(text.split(":")[1]) if ":" in text else 0
        if index >= torch.cuda.device_count():
            raise CLIError(f"--device {text}: only {torch.cuda.device_count()} CUDA device(s) present.")
    return text
