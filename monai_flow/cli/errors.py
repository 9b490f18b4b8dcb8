"""Errors and exit codes of the ``monai-flow`` command line.

Exit codes: 0 success; 1 some inputs failed (the others were written) or an unexpected error;
2 usage or setup error found before any work (bad arguments, missing input, unwritable output,
unusable checkpoint); 130 interrupted.
"""

from __future__ import annotations

import sys

__all__ = ["EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "CLIError", "InputError", "print_error"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
PROG = "monai-flow"


class CLIError(Exception):
    """A problem the user can fix, reported as ``monai-flow: error: <message>`` (no traceback)."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


class InputError(Exception):
    """One input cannot be processed; batch commands report it, skip it and go on."""


def print_error(message: str) -> None:
    """``monai-flow: error: <message>`` on stderr."""
    print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)
