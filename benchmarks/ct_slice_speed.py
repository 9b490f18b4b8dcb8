"""ct_denoise inference per axial slice: seconds per 512 x 512 slice with 3 RelativeFlow steps, and how
the time scales with the pixel count (128^2 to 1024^2), for the network choices that decide it.

Every row runs the bundle's own inference pieces (``bundles/ct_denoise/configs/inference.json``:
``network_def`` at the bundle's widths, ``SliceWise`` with ``slice_batch``, a 3-step ``RelativeFlowInferer``)
on a volume of ``--slices`` slices of side S, and reports the median wall time per slice over ``--repeats``
runs, the process CPU time per slice, and ms per megapixel (constant when the time is linear in the pixels).
Network choices (``--variants``):

* ``mid_attention``: MONAI ``DiffusionModelUNet``'s middle self-attention kept (the network before issue 15):
  attention over (S/4)^2 tokens, so the time grows with the square of the pixel count;
* ``no_mid_attention``: ``VelocityUNet(mid_attention=False)`` (the bundle now): convolutions only, linear;
* ``+channels_last``: the same weights in channels-last memory format (``VelocityUNet.to_channels_last``);
* ``+bf16``: the same under bf16 autocast (``amp="bf16"``; fast on CPUs with AVX512-BF16 / AMX);
* ``+channels_last+bf16``: both;
* ``default``: ``inference.json`` as it is (channels-last, ``amp`` ``"auto"``: bf16 on CPUs with native bf16).

    python benchmarks/ct_slice_speed.py                     # 128..1024, all variants, 2 threads (~10 min idle)
    python benchmarks/ct_slice_speed.py --quick             # 64 and 128 only: a smoke run in seconds
    python benchmarks/ct_slice_speed.py --out docs/results/ct_slice_speed.md

The goal of issue 15: at most 1 s per 512^2 slice with 3 steps on 2 CPU cores, time linear in the pixels.
Run it on an idle machine (``uptime`` load < 0.5): the load average is recorded with every row.
"""

from __future__ import annotations

import os

# OpenMP threads that spin while they wait (the default) lose most of their time on a machine shared with
# other jobs: at load 7 on 2 cores a 2-thread run of this network was 10x slower than with PASSIVE waiting
# (measured, see docs/benchmarks.md). Set before torch loads OpenMP; an explicit setting is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
VARIANTS = ("mid_attention", "no_mid_attention", "+channels_last", "+bf16", "+channels_last+bf16", "default")
# mid-attention cost grows like S^4: skip sizes where one run would take minutes
MID_ATTENTION_MAX_SIDE = 512


def load_average() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def build(variant: str, slice_batch: int, steps: int):
    """(network, inferer) of the bundle's inference.json for one variant."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(REPO / "bundles" / "ct_denoise" / "configs" / "inference.json"))
    parser["device"] = "$torch.device('cpu')"
    parser["slice_batch"] = slice_batch
    parser["dt_schedule"] = [0.2] * steps  # exactly `steps` network passes (the bundle's `auto` depends on the noise)
    parser["num_steps"] = None
    if variant != "default":
        parser["network_def#mid_attention"] = variant == "mid_attention"
        parser["network_def#channels_last"] = "channels_last" in variant
        parser["amp"] = "bf16" if "bf16" in variant else None
    torch.manual_seed(0)
    net = parser.get_parsed_content("network_def")
    with torch.no_grad():  # untrained output layer is zero: perturb so that the work is real
        for p in net.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return parser.get_parsed_content("network").eval(), parser.get_parsed_content("inferer")


def measure(network, inferer, side: int, slices: int, repeats: int, warm_up: bool = True) -> tuple[float, float]:
    """(median wall seconds per slice, median process CPU seconds per slice)."""
    x = 1.0 + 0.02 * torch.randn(1, 1, side, side, slices, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        if warm_up:
            inferer(x, network)  # oneDNN primitive creation
        walls, cpus = [], []
        for _ in range(repeats):
            w, c = time.perf_counter(), time.process_time()
            inferer(x, network)
            walls.append(time.perf_counter() - w)
            cpus.append(time.process_time() - c)
    return statistics.median(walls) / slices, statistics.median(cpus) / slices


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sides", type=int, nargs="+", default=None, help="slice sides (default 128 256 512 1024)")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--slices", type=int, default=4, help="slices per volume (and per network call)")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="sides 64 and 128, one repeat")
    p.add_argument("--out", help="also write the table (markdown) and a .json here")
    args = p.parse_args(argv)
    sides = args.sides or ([64, 128] if args.quick else [128, 256, 512, 1024])
    repeats = 1 if args.quick else args.repeats
    torch.set_num_threads(args.threads)
    header = [
        f"ct_denoise inference, {args.steps} steps, {args.slices} slices per call; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {platform.machine()}, {os.cpu_count()} CPUs, median of {repeats}, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}",
        "",
        "| network | side | s / slice (wall) | CPU s / slice | ms / megapixel (wall) | load before / after |",
        "|---|---|---|---|---|---|",
    ]
    print("\n".join(header), flush=True)
    rows, results = [], []
    for variant in args.variants:
        network, inferer = build(variant, args.slices, args.steps)
        for side in sides:
            if variant == "mid_attention" and side > MID_ATTENTION_MAX_SIDE:
                row = f"| {variant} | {side} | skipped (quadratic in the pixels) | | | |"
                print(row, flush=True)
                rows.append(row)
                continue
            load0 = load_average()
            slow = variant == "mid_attention" and side >= 512  # tens of seconds per slice: one run, one slice
            wall, cpu = measure(network, inferer, side, 1 if slow else args.slices, 1 if slow else repeats, not slow)
            load1 = load_average()
            mp = side * side / 1e6
            row = f"| {variant} | {side} | {wall:.3f} | {cpu:.3f} | {1e3 * wall / mp:.0f} | {load0:.1f} / {load1:.1f} |"
            print(row, flush=True)
            rows.append(row)
            results.append({"variant": variant, "side": side, "wall_s_per_slice": wall, "cpu_s_per_slice": cpu,
                            "ms_per_megapixel": 1e3 * wall / mp, "load_before": load0, "load_after": load1})
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("\n".join(header + rows) + "\n")
        out.with_suffix(".json").write_text(json.dumps({"threads": args.threads, "steps": args.steps,
                                                        "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
