"""Does ``dt_schedule="auto"`` meet its ``target_std`` with a trained model, on held-out data?

For each held-out demo volume of a bundle (its noise-free reference), two independent scans are
simulated at each dose, both are denoised with the ``auto`` schedule for each target, and the
output's noise std is measured where the noise is removable, in flat soft tissue:
``std(out_1 - out_2) / sqrt(2)`` (the difference of two realizations holds the noise only; the
structure and any bias cancel). The table gives it against the target.

    python benchmarks/quality_time.py --bundle-root /path/to/trained/ct_denoise --targets 8 12 16
    python benchmarks/quality_time.py --bundle-root ... --per-step 0.2 --steps 8 --slices 4   # where it drifts

``--per-step DT`` instead takes ``--steps`` fixed steps of DT and gives the measured noise after each
against the calibrated prediction ``input noise x e^{-tau}`` (``docs/results/quality_time_steps.md`` holds
two such runs, steps of 0.2 and of 0.6, one after the other: give the second its own ``--out``).

The bundle folder must hold a trained ``models/model.pt`` and its demo data (``demo/``, written by
the main job). The ``auto`` schedule uses the quality-time calibration that training wrote beside the
weights (``models/model.quality_time.json``) when there is one; ``--uncalibrated`` ignores it.
Results: ``docs/results/quality_time.md``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

ROOT = Path(__file__).resolve().parent.parent


def flat_soft_tissue(reference_hu: np.ndarray) -> np.ndarray:
    """Voxels of soft tissue (-100..150 HU) whose 7 x 7 neighbourhood varies by less than 30 HU."""
    local_range = ndimage.maximum_filter(reference_hu, size=(7, 7, 1)) - ndimage.minimum_filter(reference_hu, size=(7, 7, 1))
    return (reference_hu > -100) & (reference_hu < 150) & (local_range < 30)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle-root", required=True, help="a trained ct_denoise bundle folder (models/, demo/)")
    parser.add_argument("--targets", type=float, nargs="+", default=[8.0, 12.0, 16.0], help="target noise std, HU")
    parser.add_argument("--doses", type=float, nargs="+", default=[0.5, 0.25], help="simulated dose fractions")
    parser.add_argument("--cases", type=int, default=2, help="held-out volumes")
    parser.add_argument("--per-step", type=float, metavar="DT", help="measure after each of --steps fixed steps of DT")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--slices", type=int, default=None, help="only the first N slices of each volume")
    parser.add_argument("--uncalibrated", action="store_true", help="ignore models/model.quality_time.json")
    parser.add_argument("--out", default=None, help="default: docs/results/quality_time.md (quality_time_steps.md)")
    args = parser.parse_args(argv)
    if args.per_step is not None and not args.per_step > 0:
        parser.error(f"--per-step must be a step size > 0, got {args.per_step}")
    name = "quality_time_steps.md" if args.per_step else "quality_time.md"
    args.out = args.out or str(ROOT / "docs" / "results" / name)

    from monai.transforms import LoadImage

    from monai_flow.bundle import Bundle
    from monai_flow.data import build_datalist
    from monai_flow.physics import CTScan, low_dose_ct_noise

    bundle = Bundle("ct_denoise", args.bundle_root)
    bundle.set_device("cpu")
    if args.uncalibrated:
        bundle.set("quality_calibration", None)
    calibrated = bundle.get("quality_calibration") is not None
    network = bundle.load_network(bundle.checkpoint(), "cpu")
    scale, offset = float(bundle.get("hu_scale")), float(bundle.get("hu_offset"))
    info = build_datalist(str(Path(args.bundle_root) / "demo"))
    import json

    demo_info = json.loads((Path(args.bundle_root) / "demo" / "demo_info.json").read_text())
    scan = CTScan(i0=float(demo_info["i0_full_dose"]), electronic_std=float(demo_info["electronic_std"]))
    rows = []
    start = time.perf_counter()
    for item in info["testing"][: args.cases]:
        reference = LoadImage(image_only=True, ensure_channel_first=True)(item["reference"])
        spacing = tuple(float(s) for s in reference.pixdim[:2])
        hu = reference.as_tensor()[None].float()
        if args.slices:
            hu = hu[..., : args.slices]
        mask = flat_soft_tissue(hu[0, 0].numpy())
        for dose in args.doses:
            scans = [hu + low_dose_ct_noise(hu, dose, spacing, scan, input_noise="none",
                                            generator=torch.Generator().manual_seed(seed)) for seed in (1, 2)]
            input_std = float((scans[0] - scans[1])[0, 0].numpy()[mask].std() / math.sqrt(2))
            if args.per_step:
                bundle.set("dt_schedule", [args.per_step])
                inferer = bundle.get("flow_inferer")
                states = [(s - offset) / scale for s in scans]
                for k in range(1, args.steps + 1):
                    with torch.no_grad():
                        states = [inferer(v, network) for v in states]
                    out_std = float(((states[0] - states[1]) * scale)[0, 0].numpy()[mask].std() / math.sqrt(2))
                    predicted = input_std * math.exp(-k * args.per_step)
                    rows.append((item["name"], dose, input_std, k * args.per_step, out_std, predicted))
                    print(f"{item['name']} dose {dose:g}: tau {k * args.per_step:.2f}: {out_std:.2f} HU, "
                          f"predicted {predicted:.2f} ({out_std / predicted:.2f})", flush=True)
                continue
            for target in args.targets:
                bundle.set("dt_schedule", "auto")
                bundle.set("target_std_hu", float(target))  # a set resets the parsed components
                inferer = bundle.get("flow_inferer")
                with torch.no_grad():
                    outs = [inferer((s - offset) / scale, network) * scale + offset for s in scans]
                out_std = float((outs[0] - outs[1])[0, 0].numpy()[mask].std() / math.sqrt(2))
                steps = int((inferer.dt_table((scans[0] - offset) / scale) > 0).sum())
                rows.append((item["name"], dose, input_std, target, out_std, steps))
                print(f"{item['name']} dose {dose:g}: input {input_std:.1f} HU, target {target:g} -> {out_std:.1f} HU "
                      f"({out_std / target:.2f}), {steps} steps", flush=True)
    if args.per_step:
        return write_per_step(args, rows, time.perf_counter() - start)
    lines = ["# `auto` schedule: output noise against its target (ct_denoise, held-out demo volumes)", "",
             f"`python benchmarks/quality_time.py --bundle-root ... --targets {' '.join(f'{t:g}' for t in args.targets)}"
             f"{f' --slices {args.slices}' if args.slices else ''}{' --uncalibrated' if args.uncalibrated else ''}` "
             f"({time.perf_counter() - start:.0f} s), {'with' if calibrated else 'without'} the model's quality-time "
             "calibration. Noise std in flat soft tissue from two independent scans: std(out_1 - out_2) / sqrt(2).", "",
             "| case | dose | input noise (HU) | target (HU) | output noise (HU) | output / target | steps |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {c} | {d:g} | {i:.1f} | {t:g} | {o:.1f} | {o / t:.2f} | {k} |" for c, d, i, t, o, k in rows]
    ratios = np.array([o / t for *_, t, o, _ in rows])
    lines += ["", f"Output / target: mean {ratios.mean():.3f}, range {ratios.min():.3f} - {ratios.max():.3f}."]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(lines[-1])
    return 0


def write_per_step(args, rows, seconds: float) -> int:
    lines = [f"# Quality time step by step: the noise after k steps of dt = {args.per_step:g} (ct_denoise, held-out demo volumes)",
             "", f"`python benchmarks/quality_time.py --bundle-root ... --per-step {args.per_step:g} --steps {args.steps}"
             f"{f' --slices {args.slices}' if args.slices else ''}` ({seconds:.0f} s). Noise std in flat soft tissue "
             "from two independent scans, std(out_1 - out_2) / sqrt(2), against the calibrated prediction "
             "input noise x e^{-tau}.", "",
             "| case | dose | input noise (HU) | tau | output noise (HU) | predicted (HU) | output / predicted |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {c} | {d:g} | {i:.1f} | {t:.2f} | {o:.2f} | {p:.2f} | {o / p:.2f} |" for c, d, i, t, o, p in rows]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
