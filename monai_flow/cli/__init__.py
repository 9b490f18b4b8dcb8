"""The ``monai-flow`` command line (also ``python -m monai_flow.cli``).

Subcommands: ``denoise`` (a denoising bundle on NIfTI / DICOM inputs, optionally adapted to each
input first), ``simulate`` (low-dose CT or MR noise on a volume), ``generate`` (MOTFM images from a
mask and a class), ``demo`` (train ct_denoise on its demo data, denoise, write a comparison PNG),
``export`` (TorchScript of a denoiser) and ``cache`` (the adapted weights). See docs/cli.md.
"""

from __future__ import annotations

import argparse
import re
import sys
import traceback

from .errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, CLIError, print_error

__all__ = ["build_parser", "main"]

DESCRIPTION = """\
Flow-matching denoising and generation for CT and MR (monai-flow).

Every command reads NIfTI files and DICOM series, never writes to its inputs, writes each
output under a temporary name and renames it when complete, and refuses to replace existing
outputs unless --overwrite."""

EPILOG = """\
examples:
  monai-flow demo --quick                                     # train + denoise + PNG, a few minutes
  monai-flow denoise scan_dicom/ out/ --bundle ct_denoise --dicom-out
  monai-flow simulate ct full_dose.nii.gz low_dose.nii.gz --dose 0.25 --seed 0
  monai-flow simulate mr brain.nii.gz noisy.nii.gz --std 3%
  monai-flow generate --bundle motfm_generation --mask mask.nii.gz --label 1 out/
  monai-flow export --bundle ct_denoise denoiser.ts
  monai-flow denoise scan_dicom/ out/ --bundle ct_denoise --adapt   # fine-tune on the scan itself first
  monai-flow cache list

exit status: 0 success, 1 some inputs failed (the others were written), 2 usage or setup error.
Run 'monai-flow COMMAND --help' for the options of a command; --verbose shows tracebacks."""


class _Parser(argparse.ArgumentParser):
    """Usage errors as ``monai-flow: error: <message>`` with exit status 2."""

    def error(self, message: str):  # type: ignore[override]
        self.print_usage(sys.stderr)
        print_error(message)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    from . import cache, demo, denoise, export, generate, simulate

    parser = _Parser(prog="monai-flow", description=DESCRIPTION, epilog=EPILOG,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="show tracebacks of errors")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks of errors")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", dest="command", parser_class=_Parser)
    sub.required = True
    for module in (denoise, simulate, generate, demo, export, cache):
        module.add_parser(sub, [common])
    return parser


_NEGATIVE = re.compile(r"-(\d+\.?\d*|\.\d+)(e[+-]?\d+)?%?|-inf(inity)?", re.IGNORECASE)
_ONE_VALUE = {"--std", "--dose", "--guidance", "--seed", "--steps", "--epochs", "--label", "--electronic-std", "--i0",
              "--percentile", "--num-coils", "--num-images"}


def _join_negative_values(argv: list[str]) -> list[str]:
    """``--std -3%`` -> ``--std=-3%``: argparse takes '-3%' for an option and would only say
    "expected one argument"; joined, the value reaches its check and gets a clear message."""
    out: list[str] = []
    for arg in argv:
        if out and out[-1] in _ONE_VALUE and _NEGATIVE.fullmatch(arg):
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (the console script exits with it)."""
    parser = build_parser()
    try:
        args = parser.parse_args(_join_negative_values(list(sys.argv[1:] if argv is None else argv)))
    except SystemExit as e:  # --help (0) and usage errors (2)
        return int(e.code or 0) if not isinstance(e.code, str) else 2
    verbose = getattr(args, "verbose", False)
    try:
        return int(args.func(args))
    except CLIError as e:
        if verbose:
            traceback.print_exc()
        print_error(str(e))
        return e.code
    except KeyboardInterrupt:
        print_error("interrupted; finished outputs were kept, no partial output was left behind.")
        return EXIT_INTERRUPTED
    except Exception as e:
        if verbose:
            traceback.print_exc()
        if _is_setup_error(e):  # a bundle or checkpoint that cannot be used, found before any work
            print_error(str(e))
            return EXIT_USAGE
        print_error(f"{type(e).__name__}: {e}" + ("" if verbose else " (run with --verbose for the traceback)"))
        return EXIT_FAILED


def _is_setup_error(error: Exception) -> bool:
    from monai_flow.bundle import BundleError
    from monai_flow.checkpoints import CheckpointError

    return isinstance(error, (BundleError, CheckpointError))
