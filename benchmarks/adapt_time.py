"""Wall time of ``monai-flow denoise --adapt`` on a 512 x 512 x 16 CT volume, and of its cached rerun.

Issue 12's budget: adapting a 512 x 512 x 16 CT volume stays within 5 minutes on 2 CPU cores, and a
rerun skips training. The volume is the realistic chest phantom (``ct_phantom``, 0.74 mm) at quarter dose
simulated in the projection domain by ``monai-flow simulate`` (the same commands a user runs); then

1. ``monai-flow denoise low.nii.gz out/ --bundle ct_denoise --adapt`` with a fresh cache (noise bases,
   adaptation within the bundle's ``adapt_budget_seconds``, denoising, writing), and
2. the same command again into another folder: the cache holds the adapted weights.

Each command runs in its own process with ``--threads`` threads; the times include the imports, as a user
sees them. ``--checkpoint`` starts from a trained ``ct_denoise`` model (the README's main job), otherwise the
bundle's ``models/model.pt`` when it exists, else an untrained network.

    python benchmarks/adapt_time.py --checkpoint bundles/ct_denoise/models/model.pt --out docs/results/adapt_time.md
    python benchmarks/adapt_time.py --quick        # 128 x 128 x 4, 10 s budget: a smoke run
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def write_phantom(path: Path, shape: tuple[int, int, int], seed: int) -> None:
    import nibabel as nib
    import numpy as np
    import torch

    from monai_flow.data.phantoms import ct_default_spacing, ct_phantom

    spacing = ct_default_spacing(shape)
    hu = ct_phantom(shape, generator=torch.Generator().manual_seed(seed)).numpy().astype(np.float32)
    nib.save(nib.Nifti1Image(hu, np.diag([*spacing, 1.0])), str(path))


def run(command: list[str], env: dict) -> tuple[float, str]:
    """(wall seconds, combined output) of a command; raises with its output when it fails."""
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return seconds, done.stdout + done.stderr


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="trained ct_denoise weights to start from")
    p.add_argument("--shape", type=int, nargs=3, default=None, help="volume (default 512 512 16)")
    p.add_argument("--dose", type=float, default=0.25)
    p.add_argument("--budget", type=float, default=None, help="--adapt-budget seconds (default: the bundle's)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", help="also write the table (markdown) here")
    args = p.parse_args(argv)
    shape = tuple(args.shape or ((128, 128, 4) if args.quick else (512, 512, 16)))
    budget = args.budget if args.budget is not None else (10.0 if args.quick else None)
    env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    cli = [sys.executable, "-m", "monai_flow.cli"]
    rows = []
    with tempfile.TemporaryDirectory(prefix="monai-flow-adapt-time-") as tmp:
        tmp = Path(tmp)
        env["MONAI_FLOW_CACHE"] = str(tmp / "cache")
        write_phantom(tmp / "phantom.nii.gz", shape, args.seed)
        run([*cli, "simulate", "ct", str(tmp / "phantom.nii.gz"), str(tmp / "low.nii.gz"), "--dose", str(args.dose),
             "--input-noise", "none", "--seed", str(args.seed)], env)
        options = ["--bundle", "ct_denoise", "--adapt", "--threads", str(args.threads)]
        if args.checkpoint:
            options += ["--checkpoint", args.checkpoint]
        if budget is not None:
            options += ["--adapt-budget", str(budget)]
        for name, folder in (("first run (adapts)", "out1"), ("rerun (cache)", "out2")):
            seconds, log = run([*cli, "denoise", str(tmp / "low.nii.gz"), str(tmp / folder), *options], env)
            iterations = re.findall(r"\((\d+) iterations", log)
            rows.append((name, seconds, iterations[-1] if iterations else ("cached" if "cache" in log else "-")))
            print(f"{name}: {seconds:.1f} s", flush=True)
            print(log[-1500:], flush=True)
    header = [
        f"`monai-flow denoise --adapt` (ct_denoise) on a {'x'.join(map(str, shape))} chest phantom at dose {args.dose:g}, "
        f"{args.threads} threads, {platform.machine()}, {os.cpu_count()} CPUs; start: {args.checkpoint or 'bundle default'}; "
        f"budget: {budget if budget is not None else 'the bundle default'}",
        "",
        "| run | wall time (s, incl. imports) | adaptation iterations |",
        "|---|---|---|",
    ]
    table = header + [f"| {n} | {s:.1f} | {i} |" for n, s, i in rows]
    print("\n".join(table))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text("\n".join(table) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
