"""One-command GPU measurement of monai-flow (issue 15), written to ``docs/benchmarks_gpu.md``.

    python benchmarks/gpu_suite.py                       # on one GPU: about 5-8 minutes
    python benchmarks/gpu_suite.py --quick --device cpu  # tiny sizes on the CPU (tested; under half a minute)

Side by side, in one run, on one device (its name is written with the results):

1. **training** iterations / s of each bundle's ``train_gpu.json`` preset: the preset's network, patch size,
   batch (patches per iteration), AMP and ``torch.compile`` setting; one iteration is the network's forward,
   an MSE loss, backward and an AdamW step (the data pipeline and the degradation operators are not
   included: they run in DataLoader workers). ``torch.compile`` is measured against eager for ct_denoise
   and mr_denoise (``--compile-all``: every bundle); compile time is reported apart.
2. **ct_denoise inference**: ms per 512 x 512 slice with 1 and 3 RelativeFlow steps (fp32 and bf16;
   goal: >= 20 slices / s with 3 steps).
3. **3D sliding window**: a 256^3 volume denoised by mr_denoise's network with K steps, ``per_step`` and
   ``per_window``, time and peak GPU memory against K passes of MONAI's ``SlidingWindowInferer`` (goals:
   <= 1.05 x the time of K passes; peak <= one MONAI pass + one volume).
4. **CT projection-domain noise**: ``LowDoseCTNoise`` on 512 x 512 slices with 720 views.
5. **sampling**: MOTFM flow sampling at 1 / 10 / 50 Euler steps against MONAI's ``DiffusionInferer`` with
   ``DDPMScheduler`` (1000 steps) and ``DDIMScheduler`` (50 steps) on the same ``DiffusionModelUNet``.

Robust when run unattended: every measurement runs in its own ``try`` (a failure is written as such and
the others go on), the markdown is rewritten after each section, and ``--budget-s`` (default 450) skips
what no longer fits. Networks have random weights: the figures are about speed, not quality.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
BUNDLE_NAMES = ("ct_denoise", "mr_denoise", "ct_restore", "motfm_generation")


# ---------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------
def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"{props.name} ({props.total_memory / 2**30:.0f} GiB), CUDA {torch.version.cuda}"
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU {model}, {os.cpu_count()} logical CPUs, {torch.get_num_threads()} torch threads"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeats: int, warmup: int = 1) -> float:
    """Median seconds of ``fn()`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def peak_memory(fn, device: torch.device) -> tuple[float, float]:
    """(peak MiB allocated during ``fn()``, MiB allocated before); NaN on the CPU."""
    if device.type != "cuda":
        fn()
        return float("nan"), float("nan")
    sync(device)
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    sync(device)
    return torch.cuda.max_memory_allocated(device) / 2**20, before / 2**20


def parse(name: str, files: list[str], device: torch.device):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(REPO / "bundles" / name / "configs" / f) for f in files])
    parser["device"] = f"$torch.device('{device}')"
    return parser


def randomize(net: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random weights (the output layer of an untrained UNet is zero, which would hide work)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return net


class Suite:
    def __init__(self, args) -> None:
        self.args = args
        self.device = torch.device(args.device)
        self.start = time.perf_counter()
        self.sections: list[tuple[str, list[str]]] = []
        self.records: list[dict] = []

    def left(self) -> float:
        return self.args.budget_s - (time.perf_counter() - self.start)

    def run(self, title: str, fn) -> None:
        lines: list[str] = []
        if self.left() <= 0:
            lines.append(f"skipped: the time budget ({self.args.budget_s:.0f} s) was spent")
        else:
            t0 = time.perf_counter()
            try:
                fn(lines)
            except Exception as e:  # one failure must not lose the other measurements
                lines.append(f"**failed**: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
                traceback.print_exc()
            lines.append(f"\n({time.perf_counter() - t0:.0f} s)")
        self.sections.append((title, lines))
        print(f"\n## {title}\n" + "\n".join(lines), flush=True)
        self.write()

    def write(self) -> None:
        args = self.args
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        mode = "quick (tiny sizes, not representative)" if args.quick else "full"
        head = [
            "# GPU benchmarks (`benchmarks/gpu_suite.py`)",
            "",
            f"- device: **{device_name(self.device)}**",
            f"- torch {torch.__version__}, MONAI {__import__('monai').__version__}, mode: {mode}, "
            f"run {time.strftime('%Y-%m-%d %H:%M')}, {time.perf_counter() - self.start:.0f} s in all",
            f"- command: `python benchmarks/gpu_suite.py {' '.join(sys.argv[1:])}`",
            "",
        ]
        body = []
        for title, lines in self.sections:
            body += [f"## {title}", "", *lines, ""]
        out.write_text("\n".join(head + body))
        out.with_suffix(".json").write_text(json.dumps({"device": device_name(self.device), "quick": args.quick,
                                                         "records": self.records}, indent=1))


# ---------------------------------------------------------------------------------------------------------
# 1. training presets
# ---------------------------------------------------------------------------------------------------------
def preset(name: str, parser, quick: bool) -> tuple[int, int]:
    """(patches per iteration, patch side) of a bundle's GPU preset."""
    size = parser["patch_size"] if "patch_size" in parser else parser["image_size"]
    side = int(size[0])
    if name == "ct_denoise":
        batch = int(parser["volumes_per_batch"]) * int(parser["patches_per_volume"])
    elif "patches_per_volume" in parser:
        batch = int(parser["batch_size"]) * int(parser["patches_per_volume"])
    else:
        batch = int(parser["batch_size"])
    if quick:
        return 2, 8 if len(size) == 3 else 32
    return batch, side


def train_step_rate(net, inputs: dict, amp, device, iterations: int, compile_net: bool,
                    warmup: int = 3) -> tuple[float, float]:
    """(iterations / s, seconds spent in the first ``warmup`` (compiling) iterations)."""
    from monai_flow.networks.precision import AutocastNetwork

    net = net.to(device).train()
    if compile_net:
        net.compile()
    opt = torch.optim.AdamW(net.parameters(), 1e-4)
    run = AutocastNetwork(net, amp)
    inputs = {k: v.to(device) for k, v in inputs.items()}
    x = inputs["x"]
    target = torch.randn(x.shape[0], int(getattr(net, "out_channels", x.shape[1])), *x.shape[2:], device=device)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = F.mse_loss(run(**inputs), target)
        loss.backward()
        opt.step()

    t0 = time.perf_counter()
    for _ in range(warmup):
        step()
    sync(device)
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(iterations):
        step()
    sync(device)
    return iterations / (time.perf_counter() - t0), warm


def section_training(suite: Suite, lines: list[str]) -> None:
    from monai_flow.bundle import network_example_inputs

    args, device = suite.args, suite.device
    lines += ["One iteration: forward, MSE, backward, AdamW step of the preset's network on its patch batch "
              "(data pipeline excluded).", "",
              f"| bundle | patches x size | amp | compile | it / s | patches / s | warm-up: first {1 if args.quick else 3} iteration(s), s |",
              "|---|---|---|---|---|---|---|"]
    for name in BUNDLE_NAMES:
        parser = parse(name, ["train.json", "train_gpu.json"], device)
        batch, side = preset(name, parser, args.quick)
        amp = parser["amp"]
        compiles = [False]
        # inductor on a CPU compiles for minutes: only on a GPU (or with --compile-all)
        wanted = args.compile_all or (device.type == "cuda" and not args.quick and name in ("ct_denoise", "mr_denoise"))
        if parser["compile"] and wanted and not args.no_compile:
            compiles.append(True)
        for compile_net in compiles:
            if suite.left() < 20:
                lines.append(f"| {name} | skipped: time budget | | | | | |")
                break
            net = randomize(parser.get_parsed_content("network_def", instantiate=True))
            inputs = network_example_inputs(net, batch=batch, size=side)
            rate, warm = train_step_rate(net, inputs, amp, device, 1 if args.quick else 20, compile_net,
                                         warmup=1 if args.quick else 3)
            dims = "^3" if net.spatial_dims == 3 else "^2"
            lines.append(f"| {name} | {batch} x {side}{dims} | {amp} | {compile_net} | {rate:.2f} | {rate * batch:.1f} | "
                         f"{warm:.1f} |")
            suite.records.append({"section": "training", "bundle": name, "batch": batch, "side": side, "amp": amp,
                                  "compile": compile_net, "it_per_s": rate, "warmup_s": warm})
            del net
            if device.type == "cuda":
                torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------------------------
# 2. ct_denoise slices
# ---------------------------------------------------------------------------------------------------------
def section_ct_slices(suite: Suite, lines: list[str]) -> None:
    args, device = suite.args, suite.device
    side, slices = (64, 4) if args.quick else (512, 32)
    lines += [f"`ct_denoise` inference.json (its network and `SliceWise` slice batch), a volume of {slices} slices "
              f"of {side}^2; goal with 3 steps: >= 20 slices / s.", "",
              "| steps | amp | ms / slice | slices / s |", "|---|---|---|---|"]
    x = 1.0 + 0.02 * torch.randn(1, 1, side, side, slices, device=device)
    for amp in (None, "bf16"):
        for steps in (1, 3):
            parser = parse("ct_denoise", ["inference.json"], device)
            parser["num_steps"] = steps
            parser["amp"] = amp
            parser["slice_batch"] = slices
            randomize(parser.get_parsed_content("network_def"))
            network, inferer = parser.get_parsed_content("network").eval(), parser.get_parsed_content("inferer")
            for part in (inferer, getattr(inferer, "inferer", None)):
                if hasattr(part, "progress"):
                    part.progress = False
            with torch.no_grad():
                t = timed(lambda: inferer(x, network), device, 1 if args.quick else 5)
            lines.append(f"| {steps} | {amp or 'fp32'} | {1e3 * t / slices:.1f} | {slices / t:.1f} |")
            suite.records.append({"section": "ct_slices", "steps": steps, "amp": amp or "fp32", "side": side,
                                  "ms_per_slice": 1e3 * t / slices})


# ---------------------------------------------------------------------------------------------------------
# 3. 3D sliding window
# ---------------------------------------------------------------------------------------------------------
def section_sliding(suite: Suite, lines: list[str]) -> None:
    from monai.inferers import SlidingWindowInferer

    from monai_flow.inferers import RelativeFlowInferer, SlidingWindowFlowInferer

    args, device = suite.args, suite.device
    size, k = (16, 2) if args.quick else (256, 4)
    parser = parse("mr_denoise", ["inference.json"], device)
    roi = [min(int(r), size) for r in parser["roi_size"]]
    overlap, sw_batch = float(parser["overlap"]), int(parser["sw_batch_size"])
    net = randomize(parser.get_parsed_content("network_def")).to(device).eval()
    x = torch.rand(1, 1, size, size, size, device=device)
    vol_mib = x.numel() * 4 / 2**20
    lines += [f"`mr_denoise`'s network, a {size}^3 volume ({vol_mib:.0f} MiB), roi {roi}, overlap {overlap}, "
              f"sw_batch_size {sw_batch}, K = {k} Euler steps. Goals: time <= 1.05 x K MONAI passes; peak <= one "
              "MONAI pass + one volume.", "",
              "| method | seconds | / (K x one pass) | peak MiB | peak - MONAI pass peak, in volumes |",
              "|---|---|---|---|---|"]
    t_one = torch.full((1,), 0.1, device=device)
    monai_sw = SlidingWindowInferer(roi, sw_batch, overlap, mode="gaussian")
    with torch.no_grad():
        one = timed(lambda: monai_sw(x, lambda w: net(w, t_one)), device, 1 if args.quick else 2)
        peak_monai, _ = peak_memory(lambda: monai_sw(x, lambda w: net(w, t_one)), device)
        lines.append(f"| MONAI SlidingWindowInferer, 1 pass | {one:.2f} | - | {peak_monai:.0f} | - |")
        suite.records.append({"section": "sliding", "method": "monai_one_pass", "seconds": one, "peak_mib": peak_monai})
        for strategy in ("per_step", "per_window"):
            flow = RelativeFlowInferer([0.1] * k)
            sw = SlidingWindowFlowInferer(flow, roi, sw_batch, overlap, mode="gaussian", strategy=strategy)
            t = timed(lambda: sw(x, net), device, 1)
            peak, _ = peak_memory(lambda: sw(x, net), device)
            extra = (peak - peak_monai) / vol_mib if device.type == "cuda" else float("nan")
            lines.append(f"| SlidingWindowFlowInferer {strategy}, K = {k} | {t:.2f} | {t / (k * one):.3f} | "
                         f"{peak:.0f} | {extra:+.2f} |")
            suite.records.append({"section": "sliding", "method": strategy, "steps": k, "seconds": t,
                                  "ratio_to_k_passes": t / (k * one), "peak_mib": peak, "extra_volumes": extra})


# ---------------------------------------------------------------------------------------------------------
# 4. CT projection-domain noise
# ---------------------------------------------------------------------------------------------------------
def section_ct_noise(suite: Suite, lines: list[str]) -> None:
    from monai_flow.transforms import LowDoseCTNoise

    args, device = suite.args, suite.device
    side, views = (64, 90) if args.quick else (512, 720)
    noise = LowDoseCTNoise(dose_fraction=0.25, num_views=views, spacing=(0.7, 0.7))
    img = torch.full((1, side, side), 40.0, device=device)
    img[:, side // 4: 3 * side // 4, side // 4: 3 * side // 4] = 300.0
    first = timed(lambda: noise(img), device, 1, warmup=0)
    per = timed(lambda: noise(img), device, 3 if args.quick else 10)
    lines += [f"`LowDoseCTNoise` (projection domain, parallel beam) on one {side}^2 slice, {views} views, dose 0.25.", "",
              "| call | ms |", "|---|---|", f"| first (geometry plan) | {1e3 * first:.1f} |", f"| then, per slice | {1e3 * per:.1f} |"]
    suite.records.append({"section": "ct_noise", "side": side, "views": views, "first_ms": 1e3 * first, "ms": 1e3 * per})


# ---------------------------------------------------------------------------------------------------------
# 5. sampling
# ---------------------------------------------------------------------------------------------------------
def section_sampling(suite: Suite, lines: list[str]) -> None:
    from monai.inferers import DiffusionInferer
    from monai.networks.schedulers import DDIMScheduler, DDPMScheduler

    from monai_flow.inferers import FlowInferer
    from monai_flow.networks import VelocityUNet

    args, device = suite.args, suite.device
    side, batch = (16, 1) if args.quick else (256, 8)
    ddpm_steps = 20 if args.quick else 1000
    parser = parse("motfm_generation", ["inference.json"], device)
    spec = parser["network_def"]
    torch.manual_seed(0)  # MOTFM's UNet widths and attention, without the conditioning (MONAI's schedulers take none)
    net = randomize(VelocityUNet(2, channels=spec["channels"], attention_levels=spec["attention_levels"],
                                 num_res_blocks=spec["num_res_blocks"], norm_num_groups=spec["norm_num_groups"],
                                 num_head_channels=spec["num_head_channels"])).to(device).eval()
    noise = torch.randn(batch, 1, side, side, device=device)
    lines += [f"MOTFM's `DiffusionModelUNet` widths (channels {spec['channels']}, attention {spec['attention_levels']}), "
              f"batch {batch} x {side}^2, the same network for every sampler.", "",
              "| sampler | network calls | seconds | ms / image |", "|---|---|---|---|"]
    runs = [(f"flow (MOTFM), Euler {n} step{'s' if n > 1 else ''}", n, FlowInferer(num_steps=n, solver="euler"))
            for n in (1, 10, 50)]
    with torch.no_grad():
        for label, n, inferer in runs:
            t = timed(lambda: inferer(noise, net), device, 1 if args.quick else 3)
            lines.append(f"| {label} | {n} | {t:.3f} | {1e3 * t / batch:.1f} |")
            suite.records.append({"section": "sampling", "sampler": label, "nfe": n, "seconds": t})
        ddim = DDIMScheduler(num_train_timesteps=1000)
        ddim.set_timesteps(50)
        ddpm = DDPMScheduler(num_train_timesteps=1000)
        if args.quick:
            ddpm.set_timesteps(ddpm_steps)
        for label, sched, n in ((f"MONAI DDIM, 50 steps", ddim, 50),
                                (f"MONAI DDPM, {ddpm_steps} steps" + (" (quick: of 1000)" if args.quick else ""), ddpm,
                                 ddpm_steps)):
            if suite.left() < 10:
                lines.append(f"| {label} | skipped: time budget | | |")
                continue
            t = timed(lambda: DiffusionInferer(sched).sample(noise, net.unet, verbose=False), device, 1, warmup=0)
            lines.append(f"| {label} | {n} | {t:.3f} | {1e3 * t / batch:.1f} |")
            suite.records.append({"section": "sampling", "sampler": label, "nfe": n, "seconds": t})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="tiny sizes (runs on a CPU in under a minute)")
    p.add_argument("--out", default=str(REPO / "docs" / "benchmarks_gpu.md"))
    p.add_argument("--budget-s", type=float, default=450.0, help="skip what no longer fits in this many seconds")
    p.add_argument("--compile-all", action="store_true", help="measure torch.compile for every bundle's preset")
    p.add_argument("--no-compile", action="store_true", help="measure eager training only")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    p.add_argument("--only", nargs="+", default=["1", "2", "3", "4", "5"], choices=["1", "2", "3", "4", "5"])
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if str(args.device).startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda: CUDA is not available; use --device cpu (with --quick)")
    suite = Suite(args)
    sections = {
        "1": ("1. Training iterations per second (train_gpu.json presets)", section_training),
        "2": ("2. ct_denoise inference per 512 x 512 slice", section_ct_slices),
        "3": ("3. 3D sliding-window denoising (256^3)", section_sliding),
        "4": ("4. CT projection-domain noise (512 x 512, 720 views)", section_ct_noise),
        "5": ("5. Sampling: MOTFM flow against MONAI DDPM and DDIM", section_sampling),
    }
    for key in args.only:
        title, fn = sections[key]
        suite.run(title, lambda lines, fn=fn: fn(suite, lines))
    print(f"\nwrote {args.out} ({time.perf_counter() - suite.start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
