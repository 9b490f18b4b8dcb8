"""``monai-flow export``: TorchScript of a denoising bundle's network with fixed solver steps.

Thin over ``monai_flow.export.export_denoiser`` (imported when the command runs).
"""

from __future__ import annotations

import argparse

from .arguments import positive_int
from .pipeline import BUNDLES
from .errors import EXIT_OK, CLIError

__all__ = ["add_parser", "run"]

DESCRIPTION = """\
Export a trained denoiser (network + a fixed number of solver steps) as one TorchScript file
that runs without monai-flow on (B, C, H, W) slices in the network's units:
torch.jit.load(OUTPUT)(slices). The file is written under a
temporary name and renamed when complete; an existing OUTPUT is kept unless --overwrite."""

EPILOG = """\
examples:
  monai-flow export --bundle ct_denoise ct_denoiser.ts
  monai-flow export --bundle ct_restore restore_2steps.ts --steps 2 --checkpoint models/model.pt"""


def add_parser(subparsers, parents) -> None:
    p = subparsers.add_parser("export", parents=parents, help="export a denoiser as TorchScript",
                              description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("output", metavar="OUTPUT", help="TorchScript file to write")
    p.add_argument("--bundle", required=True, choices=BUNDLES, help="which bundle's network and settings")
    p.add_argument("--steps", type=positive_int, metavar="N",
                   help="solver steps baked into the export (default: the bundle's)")
    p.add_argument("--checkpoint", metavar="PATH", help="network weights (default: the bundle's models/model.pt)")
    p.add_argument("--bundle-root", metavar="PATH", help="bundle folder holding configs/ (default: this repository's)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUTPUT")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        from monai_flow.export import export_denoiser
    except ImportError as e:
        raise CLIError(f"export is not available in this installation: {e}.", code=1) from e
    try:
        path = export_denoiser(bundle=args.bundle, output=args.output, checkpoint=args.checkpoint, steps=args.steps,
                               bundle_root=args.bundle_root, overwrite=args.overwrite)
    except (ValueError, OSError) as e:  # CheckpointError is a ValueError; FileExistsError etc. are OSErrors
        raise CLIError(str(e)) from e
    print(f"wrote {path}")
    return EXIT_OK
