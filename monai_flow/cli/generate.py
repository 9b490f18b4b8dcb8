"""``monai-flow generate``: MOTFM images from anatomy masks and a class label.

Thin over ``bundles/motfm_generation/configs/inference.json``: the masks and label go in as the
bundle's ``mask_path`` / ``label`` (``monai_flow.bundle.generation_items``), the sampler
settings as ``num_steps`` / ``guidance_scale`` / ``seed`` / ``solver``, and the bundle's evaluator
runs with a hidden staging folder as ``output_dir``; the finished files are then renamed into
OUTPUT, so a failure leaves nothing behind.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from monai_flow.atomic import commit, temporary_sibling
from monai_flow.bundle import Bundle

from .arguments import finite_float, parse_device, positive_int
from .pipeline import add_bundle_options
from .errors import EXIT_OK, CLIError, InputError
from .inputs import check_volume, input_paths, load_volume, single_volume, strip_ext
from .safe_io import OutputFolder, refuse_existing, refuse_inputs

__all__ = ["add_parser", "run"]

DESCRIPTION = """\
Generate CT images from anatomy masks and a class label with the motfm_generation bundle
(MOTFM: conditional optimal-transport flow matching, mask through a ControlNet, class through an
embedding, classifier-free guidance).

Masks are label images on the training grid (default 64x64, 2D; labels 0 air, 1 body, 2 lung,
3 bone, 4 lesion), NIfTI or DICOM. For every mask OUTPUT receives, as the bundle writes them:
<mask>_generated_label<K>.nii.gz (HU, the mask's grid and affine),
<mask>_generated_label<K>_mask.nii.gz (the conditioning mask) and
<mask>_generated_label<K>.json (label, sampler settings, seed, checkpoint)."""

EPILOG = """\
examples:
  monai-flow generate --bundle motfm_generation --mask mask.nii.gz --label 1 out/
  monai-flow generate --mask m1.nii.gz m2.nii.gz --label 0 --steps 20 --guidance 2 --seed 7 out/"""


def add_parser(subparsers, parents) -> None:
    p = subparsers.add_parser("generate", parents=parents, help="generate CT images from masks and a class (MOTFM)",
                              description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("output", metavar="OUTPUT", help="output folder (created if missing)")
    p.add_argument("--bundle", default="motfm_generation", choices=("motfm_generation",), help="generation bundle")
    p.add_argument("--mask", required=True, nargs="+", metavar="MASK", help="mask file(s) (NIfTI or a DICOM series)")
    p.add_argument("--label", required=True, type=int, metavar="K",
                   help="class to generate for every mask (0..num_classes-1)")
    p.add_argument("--steps", type=positive_int, metavar="N", help="ODE steps (bundle default 50)")
    p.add_argument("--guidance", type=finite_float, metavar="W",
                   help="classifier-free guidance weight (bundle default 2.0; 1 = none)")
    p.add_argument("--seed", type=int, metavar="S", help="noise seed (bundle default 0)")
    p.add_argument("--solver", choices=("euler", "heun", "midpoint", "rk4"), help="ODE solver (bundle default euler)")
    add_bundle_options(p)
    p.set_defaults(func=run)


def _check_masks(items: list[dict], spatial_dims: int, num_labels: int) -> None:
    for item in items:
        try:
            mask = load_volume(item)
            check_volume(mask, need_3d=spatial_dims == 3, what=f"a {spatial_dims}D generation bundle")
        except InputError as e:
            raise CLIError(f"mask {item['image']}: {e}") from e
        if mask.ndim - 1 != spatial_dims:
            raise CLIError(f"mask {item['image']} is {mask.ndim - 1}D (shape {tuple(mask.shape[1:])}) but the bundle "
                           f"generates {spatial_dims}D images.")
        values = mask.unique()
        bad = [float(v) for v in values if float(v) != int(v) or not 0 <= int(v) < num_labels]
        if bad:
            raise CLIError(f"mask {item['image']} holds values {bad[:5]} outside the labels 0..{num_labels - 1}.")


def run(args: argparse.Namespace) -> int:
    device = parse_device(args.device) if args.device else None
    bundle = Bundle(args.bundle, args.bundle_root)
    items = [single_volume(m) for m in args.mask]
    num_classes = int(bundle.get("num_classes"))
    if not 0 <= args.label < num_classes:
        raise CLIError(f"--label {args.label} is out of range: bundle {bundle.name} has classes 0..{num_classes - 1}.")
    checkpoint = bundle.checkpoint(args.checkpoint)
    out = OutputFolder(args.output)
    postfix = f"generated_label{args.label}"
    stems = [strip_ext(Path(it["image"]).name) for it in items]
    if len(set(stems)) != len(stems):
        raise CLIError(f"masks with the same name would write the same outputs: {stems}; rename them or run "
                       "them separately.")
    targets = [out.path / f"{s}_{postfix}{suffix}" for s in stems for suffix in (".nii.gz", "_mask.nii.gz", ".json")]
    refuse_inputs([out.path, *targets], [p for it in items for p in input_paths(it)], root=out.path)
    refuse_existing(targets, args.overwrite)
    _check_masks(items, int(bundle.get("spatial_dims")), int(bundle.get("num_mask_labels")))
    out.prepare()
    staging = temporary_sibling(out.path / "monai-flow-generate")
    try:
        staging.mkdir()
        device = device or bundle.get("device").type
        bundle.set_device(device)
        overrides = {"mask_path": [str(it["image"]) for it in items], "label": args.label, "output_dir": str(staging),
                     "ckpt_path": str(checkpoint), "handlers": [], "num_steps": args.steps,
                     "guidance_scale": args.guidance, "seed": args.seed, "solver": args.solver}
        for key, value in overrides.items():
            if value is not None:
                bundle.set(key, value)
        bundle.load_network(checkpoint, device)
        bundle.get("initialize")
        bundle.get("evaluator").run()
        produced = sorted(p for p in staging.iterdir() if not p.name.startswith("."))
        finals = [out.path / p.name for p in produced]
        refuse_existing(finals, args.overwrite)
        for src, dst in zip(produced, finals):
            commit(src, dst)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        out.cleanup()
    for path in finals:
        print(f"wrote {path}")
    return EXIT_OK
