"""argparse value types shared by the subcommands: clear messages for bad numbers."""

from __future__ import annotations

import argparse
import math

__all__ = ["finite_float", "positive_float", "positive_int"]


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
