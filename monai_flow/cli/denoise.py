"""``monai-flow denoise``: run a denoising bundle's inference on NIfTI files and DICOM series.

Thin over ``bundles/<name>/configs/inference.json``: the network, preprocessing, inferer and
postprocessing come from the config; this module loops over the inputs one at a time so that
a failing input is reported and skipped while the others complete, and writes every output
atomically (:mod:`monai_flow.cli.safe_io`).
"""

from __future__ import annotations

import argparse
import sys

from .arguments import parse_device, positive_float, positive_int
from .errors import EXIT_FAILED, EXIT_OK, CLIError
from .inputs import discover
from .pipeline import ADAPTABLE, BUNDLES, Denoiser, add_bundle_options, denoise_items, output_naming, output_targets, plan_outputs, report
from .safe_io import OutputFolder

__all__ = ["add_parser", "run"]

DESCRIPTION = """\
Denoise (ct_denoise, mr_denoise) or restore (ct_restore) CT/MR volumes with a trained bundle.

INPUT is a NIfTI file (.nii, .nii.gz), a DICOM series folder, or a folder holding any number
of them (DICOM files are grouped by SeriesInstanceUID). OUTPUT is a folder: every input gets
<name>_denoised.nii.gz (ct_restore: <name>_restored.nii.gz) in HU / the input's units with the
input's grid and affine, and with --dicom-out also a derived DICOM series folder
<name>_denoised_dicom/ (new series of the same study when the input is DICOM).

Inputs are processed one at a time: a failing input is reported and skipped, the others are
written. Outputs are written under temporary names and renamed when complete; inputs are never
written and existing outputs are kept unless --overwrite.

Many volumes on several GPUs or CPU processes: run the same command under torchrun
(torchrun --nproc_per_node=N -m monai_flow.cli denoise ...). Each process takes every N-th input,
inputs whose outputs exist are skipped (so a rerun finishes an interrupted job), a failing process
reports its inputs without stopping the others, and rank 0 prints the summary.

Exit status: 0 all inputs written, 1 some inputs failed (listed), 2 usage or setup error."""

EPILOG = """\
examples:
  monai-flow denoise scan.nii.gz out/ --bundle ct_denoise
  monai-flow denoise /data/dicom_study out/ --bundle ct_denoise --dicom-out --device cuda
  monai-flow denoise head.nii.gz out/ --bundle mr_denoise --roi 64 64 64 --steps 4
  monai-flow denoise low_dose/ out/ --bundle ct_restore --steps 1 --checkpoint my_model.pt
  monai-flow denoise archive/ out/ --bundle mr_denoise --amp bf16 --device cuda
  torchrun --nproc_per_node=4 -m monai_flow.cli denoise archive/ out/ --bundle ct_denoise   # 4 GPUs

--steps N: ct_restore integrates its flow from t=0 to t=1 in N uniform steps (1-4 typical).
ct_denoise / mr_denoise keep the bundle's total denoising amount (the sum of dt_schedule, or,
for dt_schedule "auto", the per-volume gap ln(noise / target_std)) and split it into N
coarse-to-fine steps of quality time (the inferer's template shape: 3 steps of a total 0.35 are
0.2, 0.1, 0.05): more steps follow the flow more closely, the amount of noise removed stays the
same. Without --steps the bundle's schedule is used as is."""


def add_parser(subparsers, parents) -> None:
    p = subparsers.add_parser("denoise", parents=parents, help="denoise or restore CT/MR volumes with a bundle",
                              description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", metavar="INPUT", help="NIfTI file, DICOM series folder, or a folder of them")
    p.add_argument("output", metavar="OUTPUT", help="output folder (created if missing)")
    p.add_argument("--bundle", required=True, choices=BUNDLES, help="which bundle's model and settings to use")
    p.add_argument("--steps", type=positive_int, metavar="N", help="number of solver steps (see below)")
    p.add_argument("--roi", type=positive_int, nargs=3, metavar=("X", "Y", "Z"),
                   help="sliding-window inference with this window size (divisible by the network's "
                        "downsampling factor, e.g. 4 in-plane for the default networks)")
    p.add_argument("--dicom-out", action="store_true", help="also write a derived DICOM series per input")
    p.add_argument("--force-modality", action="store_true",
                   help="process DICOM series whose Modality tag differs from the bundle's (CT/MR)")
    adapt = p.add_argument_group("adapting to the input (ct_denoise, mr_denoise)")
    adapt.add_argument("--adapt", action="store_true",
                       help="first fine-tune the denoiser on each input itself (no clean data needed), starting "
                            "from the bundle's weights when it has them; adapted weights are cached by the input's "
                            "content (see 'monai-flow cache')")
    adapt.add_argument("--adapt-budget", type=positive_float, metavar="SECONDS",
                       help="adaptation time per input, preparation and training (default: the bundle's adapt.json: "
                            "ct_denoise 220 s, mr_denoise 240 s)")
    adapt.add_argument("--no-cache", action="store_true", help="neither reuse nor store adapted weights")
    speed = p.add_argument_group("speed")
    speed.add_argument("--amp", choices=("fp32", "bf16", "fp16", "auto"),
                       help="mixed precision of the network (default: the bundle's amp; ct_denoise and mr_denoise: auto, "
                            "bf16 on GPUs and CPUs that compute it natively (AVX512-BF16 / AMX), else fp32); "
                            "times and solver state stay fp32")
    speed.add_argument("--flip-ensemble", action=argparse.BooleanOptionalAction, default=None,
                       help="average the outputs over the input's mirror images (ct_denoise: 4 in-plane, mr_denoise: 8; "
                            "that many times the inference time; on real CT slices +0.15 to +0.3 dB for the main model, "
                            "+0.3 to +0.7 dB adapted; default: the bundle's "
                            "flip_ensemble: off)")
    speed.add_argument("--threads", type=positive_int, metavar="N",
                       help="CPU threads of this process (torch.set_num_threads; default: torch's, the CPU count)")
    speed.add_argument("--skip-existing", action="store_true",
                       help="skip inputs whose outputs exist instead of refusing them (always on under torchrun)")
    add_bundle_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from monai_flow.bundle import Bundle
    from monai_flow.distributed import ProcessGroup, local_device, rank_info, run_shard, terminate_as_interrupt

    adapt = getattr(args, "adapt", False)
    if not adapt and (args.adapt_budget is not None or args.no_cache):
        raise CLIError("--adapt-budget and --no-cache apply with --adapt.")
    if adapt and args.bundle not in ADAPTABLE:
        raise CLIError(f"--adapt works with the RelativeFlow bundles {ADAPTABLE}, not {args.bundle}.")
    info = rank_info()
    device = parse_device(args.device) if args.device else None
    items = discover(args.input)
    if info.distributed:
        device = local_device(device, info)
        terminate_as_interrupt()  # torchrun stops the others with SIGTERM: leave no temporary output
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    configs = ["inference.json", "adapt.json"] if adapt else "inference.json"
    bundle = Bundle(args.bundle, args.bundle_root, config=configs)
    checkpoint = bundle.checkpoint(args.checkpoint) if (args.checkpoint or not adapt or
                                                         bundle.default_checkpoint.exists()) else None
    out = OutputFolder(args.output)
    postfix, ext = output_naming(bundle)
    skip = args.skip_existing or info.distributed
    plan_outputs(items, out, lambda it: output_targets(it, out.path, postfix, args.dicom_out, ext), args.input,
                 args.overwrite, skip_existing=skip)
    out.prepare()

    def make() -> Denoiser:
        return Denoiser(bundle, checkpoint, device, args.steps, args.roi, amp=args.amp, flip_ensemble=args.flip_ensemble,
                        adapt={"budget": args.adapt_budget, "cache": not args.no_cache} if adapt else None)

    verbose = getattr(args, "verbose", False)
    verb = "restored" if postfix == "restored" else "denoised"
    if not skip:  # one process, every output new: the plain loop
        try:
            denoiser = make()
            written, failed = denoise_items(denoiser, items, out, args.dicom_out, args.overwrite, args.force_modality,
                                            verbose)
        finally:
            out.cleanup()
        return report(written, failed, len(items), out.path, verb)
    with ProcessGroup(info, device or "cpu") as group:
        written, failed, skipped, reports = run_shard(make, items, out, args.dicom_out, args.overwrite,
                                                      args.force_modality, verbose, info, group)
        if info.is_main:
            out.cleanup()  # only once every process is done: an empty folder may still receive outputs
    if not info.distributed:
        code = report(written, failed, len(items) - skipped, out.path, verb)
        if skipped:
            print(f"skipped {skipped} input(s) whose outputs exist")
        return code
    failures = [(rank, name, why) for rank, _, fails, _ in reports for name, why in fails]
    if info.is_main:
        total_written = sum(len(r[1]) for r in reports)
        total_skipped = sum(r[3] for r in reports)
        print(f"{info.world_size} processes: {verb} {len(items) - total_skipped - len(failures)} input(s) "
              f"({total_written} file(s)) into {out.path}, {total_skipped} already done, {len(failures)} failed")
        for rank, name, why in failures:
            print(f"  rank {rank}: {name}: {why}", file=sys.stderr)
    return EXIT_FAILED if failures else EXIT_OK
