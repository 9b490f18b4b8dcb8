"""mr_denoise on one 1 mm adult brain volume: time, network passes and quality of inference settings.

The volume is the MNI152 (ICBM 2009a) 1 mm T1 template that nilearn's wheel carries, centre-cropped or
padded to ``--shape`` (default 180 x 220 x 180, a 1 mm adult head), scaled to a maximum of 1, with Rician
noise of std ``--noise`` (default 3% of the maximum; seeded). Without nilearn a smooth synthetic head of
the same size is used (and said so). Each setting runs the bundle's own pieces (``inference.json``:
``network_def`` with ``--checkpoint``, the 99th-percentile scaling, the ``auto`` RelativeFlow schedule and
``SlidingWindowFlowInferer``) with overrides, and is reported with:

* wall time (median of ``--repeats``) and the number K of flow steps the ``auto`` schedule took;
* the floor: one pass of the same network over the whole volume with MONAI's ``SlidingWindowInferer``
  at the same roi / overlap / batch, and the ratio time / (K x one pass);
* PSNR against the noise-free volume (foreground: reference > 10% of the maximum, peak 1), and the
  PSNR difference to the ``before`` setting (the settings of ``inference.json`` before issue 15).

    python benchmarks/mr_volume_speed.py --checkpoint bundles/mr_denoise/models/model.pt
    python benchmarks/mr_volume_speed.py --checkpoint model.pt --settings before default --out docs/results/mr_volume_speed.md
    python benchmarks/mr_volume_speed.py --quick            # 64 x 72 x 64 crop, untrained weights: runs in seconds

Run it on an idle machine (``uptime`` load < 0.5) for figures to quote: the load average seen before and
after every setting is recorded. Threads: ``--threads`` (default 2, ``torch.set_num_threads``).
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

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent

# name -> overrides of inference.json ids (and network speed options: fused_attention, channels_last)
SETTINGS = {
    # inference.json as it was before issue 15's speed work (32^3 windows, overlap 0.25, float32, steps of 0.05
    # to 0.5: 7 for 3 % noise)
    "before": {"roi_size": [32, 32, 32], "overlap": 0.25, "sw_batch_size": 4, "sw_strategy": "per_step",
               "fused_attention": False, "amp": None, "channels_last": False, "max_dt": 0.5, "min_dt": 0.05},
    "default": {},  # inference.json as it is
    "default_fp32": {"amp": None},  # the defaults on a CPU without native bf16
    "roi64": {"roi_size": [64, 64, 64], "overlap": 0.125, "sw_batch_size": 1},
    "roi96": {"roi_size": [96, 96, 96], "overlap": 0.125, "sw_batch_size": 1},
    "roi96_per_window": {"roi_size": [96, 96, 96], "overlap": 0.125, "sw_batch_size": 1, "sw_strategy": "per_window"},
    "roi128": {"roi_size": [128, 128, 128], "overlap": 0.125, "sw_batch_size": 1},
    "default_bf16": {"amp": "bf16"},
}


def load_average() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def brain_volume(shape: tuple[int, int, int], noise: float, seed: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(noisy, reference) as (1, 1, *shape) float32 tensors (max of the reference 1) and a description."""
    from importlib.util import find_spec

    spec = find_spec("nilearn")
    path = None
    if spec is not None and spec.submodule_search_locations:
        path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
    if path is not None and path.exists():
        import nibabel as nib

        data = np.asarray(nib.load(str(path)).get_fdata(), dtype=np.float32)
        what = "MNI152 2009a T1 1 mm (nilearn)"
    else:  # a smooth synthetic head: ellipsoid brain with grey / white contrast in air
        grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
        r = np.sqrt(((grid / np.array([0.8, 0.85, 0.8])[:, None, None, None]) ** 2).sum(0))
        data = np.where(r < 1, 0.6 + 0.4 * (np.sin(9 * grid[0]) * np.sin(7 * grid[1]) > 0), 0.0).astype(np.float32)
        what = "synthetic ellipsoid head (nilearn not installed)"
    out = np.zeros(shape, np.float32)  # centre crop / pad to shape
    src, dst = [], []
    for n, s in zip(data.shape, shape):
        if n >= s:
            a = (n - s) // 2
            src.append(slice(a, a + s))
            dst.append(slice(0, s))
        else:
            a = (s - n) // 2
            src.append(slice(0, n))
            dst.append(slice(a, a + n))
    out[tuple(dst)] = data[tuple(src)]
    ref = torch.from_numpy(out / out.max())[None, None]
    g = torch.Generator().manual_seed(seed)
    n = torch.randn((2, *ref.shape), generator=g) * noise
    noisy = ((ref + n[0]) ** 2 + n[1] ** 2).sqrt()
    return noisy, ref, f"{what}, {'x'.join(map(str, shape))}, Rician std {noise:g} of the maximum"


def psnr(x: torch.Tensor, ref: torch.Tensor, mask: torch.Tensor) -> float:
    mse = float(((x - ref)[mask] ** 2).mean())
    return 10 * np.log10(1.0 / max(mse, 1e-20))


def build(bundle: str, overrides: dict, checkpoint: str | None, seed: int):
    """(network, inferer, flow_inferer) of ``bundles/<bundle>/configs/inference.json`` with overrides."""
    from monai.bundle import ConfigParser

    from monai_flow.checkpoints import load_network_weights
    from monai_flow.networks import VelocityUNet

    parser = ConfigParser()
    parser.read_config(str(REPO / "bundles" / bundle / "configs" / "inference.json"))
    parser["device"] = "$torch.device('cpu')"
    options = dict(overrides)
    fused, cl = options.pop("fused_attention", None), options.pop("channels_last", None)
    for k, v in options.items():
        parser[k] = v
    torch.manual_seed(seed)
    net = parser.get_parsed_content("network_def")
    if checkpoint:
        load_network_weights(net, checkpoint, map_location="cpu")
    else:  # untrained: perturb so that the zero-initialised output layer does not hide the work
        with torch.no_grad():
            for p in net.parameters():
                p.add_(0.02 * torch.randn_like(p))
    if fused is not None and isinstance(net, VelocityUNet):
        net.set_fused_attention(fused)
    if cl is not None and isinstance(net, VelocityUNet):
        net.to_channels_last(cl)
    network = parser.get_parsed_content("network").eval()
    return network, parser.get_parsed_content("inferer"), parser.get_parsed_content("flow_inferer"), parser


def timed(fn, repeats: int) -> tuple[float, object, float]:
    """(median wall seconds, last result, median process CPU seconds: the work, all threads together)."""
    times, cpus, out = [], [], None
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        times.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return statistics.median(times), out, statistics.median(cpus)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", default="mr_denoise")
    p.add_argument("--checkpoint", help="trained weights (without: untrained weights, timing only)")
    p.add_argument("--settings", nargs="+", default=["before", "default"], choices=list(SETTINGS))
    p.add_argument("--shape", type=int, nargs=3, default=None, help="volume size (default 180 220 180; quick 64 72 64)")
    p.add_argument("--noise", type=float, default=0.03, help="Rician std as a fraction of the maximum")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--no-floor", action="store_true", help="skip the one-pass floor measurement")
    p.add_argument("--quick", action="store_true", help="small crop, untrained weights allowed: a smoke run")
    p.add_argument("--out", help="also write the table (markdown) and a .json of the figures here")
    args = p.parse_args(argv)
    shape = tuple(args.shape or ((64, 72, 64) if args.quick else (180, 220, 180)))
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    from monai.inferers import SlidingWindowInferer

    noisy, ref, what = brain_volume(shape, args.noise, args.seed)
    fg = ref > 0.1
    header = [
        f"mr_denoise inference on {what}; torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}; weights: "
        f"{args.checkpoint or 'untrained (timing only)'}",
        "",
        f"input PSNR (foreground): {psnr(noisy, ref, fg):.2f} dB",
        "",
        "| setting | roi / overlap / sw batch / strategy | amp | K steps | seconds | CPU s | one pass (s) | "
        "seconds / (K x pass) | PSNR (dB) | vs before (dB) | load before / after |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    print("\n".join(header), flush=True)
    rows, results, before = [], [], None
    for name in args.settings:
        overrides = SETTINGS[name]
        network, inferer, flow_inferer, parser = build(args.bundle, overrides, args.checkpoint, args.seed)
        scale = torch.quantile(noisy.flatten(), 0.99).clamp_min(1e-6)  # the bundle: 99th percentile
        x = noisy / scale
        k = int(flow_inferer.dt_table(x).shape[1])
        load0 = load_average()
        seconds, out, cpu = timed(lambda: inferer(x, network), args.repeats)
        out = (out * scale).clamp_min(0.0)
        load1 = load_average()
        roi, ov, sw = parser["roi_size"], parser["overlap"], parser["sw_batch_size"]
        floor = float("nan")
        if not args.no_floor:
            monai_sw = SlidingWindowInferer(roi, sw, ov, mode="gaussian")
            t = torch.full((1,), 0.1)
            from monai_flow.networks.precision import autocast

            amp = parser["amp"] if "amp" in parser else None

            def one_pass():
                with autocast(amp, x):
                    return monai_sw(x, lambda w: network(w, t))

            floor, _, _ = timed(one_pass, 1)
        q = psnr(out, ref, fg)
        if name == "before" or before is None:
            before = (name, q) if name == "before" else before
        diff = q - before[1] if before else float("nan")
        strategy = parser["sw_strategy"]
        amp = parser["amp"] if "amp" in parser else None
        row = (f"| {name} | {roi} / {ov} / {sw} / {strategy} | {amp or 'fp32'} | {k} | {seconds:.1f} | {cpu:.1f} | {floor:.1f} | "
               f"{seconds / (k * floor):.2f} | {q:.2f} | {diff:+.2f} | {load0:.1f} / {load1:.1f} |")
        print(row, flush=True)
        rows.append(row)
        results.append({"setting": name, "overrides": overrides, "roi": roi, "overlap": ov, "sw_batch_size": sw,
                        "strategy": strategy, "amp": amp, "steps": k, "seconds": seconds, "cpu_seconds": cpu,
                        "one_pass_seconds": floor,
                        "psnr_db": q, "psnr_vs_before_db": diff, "load_before": load0, "load_after": load1})
    if args.out:
        out_path = Path(args.out)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text("\n".join(header + rows) + "\n")
        out_path.with_suffix(".json").write_text(json.dumps({"volume": what, "threads": args.threads,
                                                              "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
