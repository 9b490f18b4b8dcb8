"""Speed and memory of monai-flow inference (not run in CI).

(a) sliding-window flow inference with K Euler steps on a 3D volume, divided by K times one
    ``monai.inferers.SlidingWindowInferer`` pass of the same network (goal <= 1.10), both strategies;
(b) wall time of a K-step flow sample vs ``monai.inferers.DiffusionInferer`` with ``DDPMScheduler``
    (1000 steps) and ``DDIMScheduler`` (50 steps) on the same ``DiffusionModelUNet``;
(c) peak memory of sliding-window inference on a large volume (default 256^3), each configuration in a
    fresh subprocess: on CPU the peak RSS after resetting the high-water mark (``/proc/self/clear_refs``,
    falling back to ``resource`` max RSS), on GPU ``torch.cuda.max_memory_allocated``.

    python benchmarks/flow_speed.py --quick            # ~1-2 min on 2 CPU cores
    python benchmarks/flow_speed.py --device cuda      # full sizes
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch
from monai.inferers import DiffusionInferer, SlidingWindowInferer
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler

from monai_flow.inferers import FlowInferer, SlidingWindowFlowInferer, make_noise
from monai_flow.networks import VelocityUNet


def build_net(spatial_dims: int, channels: tuple[int, ...], device: str) -> VelocityUNet:
    torch.manual_seed(0)
    net = VelocityUNet(
        spatial_dims,
        channels=channels,
        attention_levels=(False,) * len(channels),
        norm_num_groups=min(8, min(channels)),
        num_res_blocks=1,
    )
    return net.to(device).eval()


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def best_time(fn, device: str, repeats: int) -> float:
    """Minimum wall time over ``repeats`` runs after one warm-up run (robust on a shared CPU)."""
    fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return min(times)


def sliding_window_flow(args, strategy: str) -> SlidingWindowFlowInferer:
    return SlidingWindowFlowInferer(
        FlowInferer(num_steps=args.steps, solver="euler"),
        roi_size=args.roi,
        sw_batch_size=args.sw_batch_size,
        overlap=args.overlap,
        mode="gaussian",
        strategy=strategy,
    )


def bench_sliding(args) -> list[str]:
    net = build_net(3, args.channels, args.device)
    x = make_noise((1, 1, *[args.size] * 3), seed=0, device=args.device)
    monai_sw = SlidingWindowInferer(args.roi, args.sw_batch_size, args.overlap, mode="gaussian")
    one_pass = best_time(lambda: monai_sw(x, lambda w: net(w, 0.5)), args.device, args.repeats)
    rows = [
        f"| MONAI SlidingWindowInferer, 1 pass | {one_pass:.3f} | - |",
    ]
    for strategy in ("per_step", "per_window"):
        sw = sliding_window_flow(args, strategy)
        t = best_time(lambda: sw(x, net), args.device, args.repeats)
        ratio = t / (args.steps * one_pass)
        rows.append(f"| SlidingWindowFlowInferer {strategy}, K={args.steps} | {t:.3f} | {ratio:.3f} |")
    head = [
        f"### (a) sliding window: volume {args.size}^3, roi {args.roi}^3, overlap {args.overlap}, "
        f"sw_batch_size {args.sw_batch_size}, channels {args.channels}, {args.device}",
        "",
        "| method | seconds | ratio to K x one pass (goal <= 1.10) |",
        "|---|---|---|",
    ]
    return head + rows


def bench_samplers(args) -> list[str]:
    dims = args.sampler_dims
    net = build_net(dims, args.channels, args.device)
    noise = make_noise((1, 1, *[args.sampler_size] * dims), seed=0, device=args.device)
    flow = FlowInferer(num_steps=args.steps, solver="euler")
    rk4 = FlowInferer(num_steps=args.steps, solver="rk4")
    ddpm = DDPMScheduler(num_train_timesteps=1000)
    ddim = DDIMScheduler(num_train_timesteps=1000)
    ddim.set_timesteps(50)
    runs = {
        f"FlowInferer euler, {args.steps} steps": lambda: flow(noise, net),
        f"FlowInferer rk4, {args.steps} steps ({4 * args.steps} NFE)": lambda: rk4(noise, net),
        "DiffusionInferer DDIM, 50 steps": lambda: DiffusionInferer(ddim).sample(noise, net.unet, verbose=False),
        "DiffusionInferer DDPM, 1000 steps": lambda: DiffusionInferer(ddpm).sample(noise, net.unet, verbose=False),
    }
    out = [
        f"### (b) sampling wall time: {dims}D {args.sampler_size}^{dims}, same DiffusionModelUNet, {args.device}",
        "",
        "| sampler | seconds | relative to flow (euler) |",
        "|---|---|---|",
    ]
    base = None
    for name, fn in runs.items():
        t = best_time(fn, args.device, 1 if "1000" in name else args.repeats)
        base = base or t
        out.append(f"| {name} | {t:.3f} | {t / base:.1f}x |")
    return out


def _proc_status_mib(field: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Linux >= 4.0: writing 5 to clear_refs resets the peak RSS (VmHWM) to the current RSS, so the
    import-time high-water mark does not hide the inference peak."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def memory_child(args) -> None:
    """Runs in a fresh process; prints JSON {baseline_mib, peak_mib}."""
    torch.set_grad_enabled(False)
    net = build_net(3, args.channels, args.device)
    x = make_noise((1, 1, *[args.mem_size] * 3), seed=0, device=args.device)
    cuda = args.device.startswith("cuda")
    proc = not cuda and _reset_peak_rss() and _proc_status_mib("VmHWM") is not None
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.memory_allocated() / 2**20
    elif proc:
        baseline = _proc_status_mib("VmRSS")
    else:  # ru_maxrss (KiB on Linux) cannot be reset: the baseline is the high-water mark so far
        baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if args.memory_child == "monai":
        SlidingWindowInferer(args.roi, args.sw_batch_size, args.overlap, mode="gaussian")(x, lambda w: net(w, 0.5))
    else:
        a = argparse.Namespace(**{**vars(args), "steps": args.mem_steps})
        sliding_window_flow(a, args.memory_child)(x, net)
    sync(args.device)
    if cuda:
        peak = torch.cuda.max_memory_allocated() / 2**20
    elif proc:
        peak = _proc_status_mib("VmHWM")
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"baseline_mib": baseline, "peak_mib": peak}))


def bench_memory(args) -> list[str]:
    vol_mib = args.mem_size**3 * 4 / 2**20
    kind = "torch.cuda.max_memory_allocated" if args.device.startswith("cuda") else "peak RSS (VmHWM)"
    out = [
        f"### (c) peak memory: volume {args.mem_size}^3 ({vol_mib:.0f} MiB float32), roi {args.roi}^3, "
        f"K={args.mem_steps} euler, {kind}, {args.device}",
        "",
        "| method | baseline MiB (net + input) | peak MiB | peak - baseline, in volumes "
        "| above one MONAI pass, in volumes |",
        "|---|---|---|---|---|",
    ]
    child_args = [a for a in sys.argv[1:] if a != "--quick"] + (["--quick"] if args.quick else [])
    monai_extra = None
    for which in ("monai", "per_step", "per_window"):
        res = subprocess.run(
            [sys.executable, __file__, *child_args, "--memory-child", which], capture_output=True, text=True, check=True
        )
        r = json.loads(res.stdout.strip().splitlines()[-1])
        extra = (r["peak_mib"] - r["baseline_mib"]) / vol_mib
        monai_extra = extra if monai_extra is None else monai_extra
        name = "MONAI SlidingWindowInferer, 1 pass" if which == "monai" else f"SlidingWindowFlowInferer {which}"
        out.append(
            f"| {name} | {r['baseline_mib']:.0f} | {r['peak_mib']:.0f} | {extra:.2f} | {extra - monai_extra:+.2f} |"
        )
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="small sizes (~1-2 min on 2 CPU cores)")
    p.add_argument("--steps", type=int, default=None, help="K flow steps (default 10, quick 3)")
    p.add_argument("--size", type=int, default=None, help="(a) volume edge (default 192, quick 64)")
    p.add_argument("--roi", type=int, default=None, help="roi edge (default 96, quick 32)")
    p.add_argument("--overlap", type=float, default=0.25)
    p.add_argument("--sw-batch-size", type=int, default=4)
    p.add_argument(
        "--channels", type=int, nargs="+", default=None, help="UNet channels (default 32 64 64 64, quick 8 16 16)"
    )
    p.add_argument("--sampler-dims", type=int, default=None, help="(b) 2 or 3 (default 3, quick 2)")
    p.add_argument("--sampler-size", type=int, default=None, help="(b) image edge (default 64, quick 32)")
    p.add_argument("--mem-size", type=int, default=None, help="(c) volume edge (default 256, quick 128)")
    p.add_argument("--mem-steps", type=int, default=2, help="(c) K flow steps")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (quick default 1)")
    p.add_argument("--only", choices=("a", "b", "c"), nargs="+", default=("a", "b", "c"))
    p.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    q = args.quick
    # (quick, full); DiffusionModelUNet's mid block always has self-attention, quadratic in the voxels
    # at the coarsest level, so keep >= 3 levels on 3D windows.
    defaults = dict(steps=(3, 10), size=(64, 192), roi=(32, 96), channels=((8, 16, 16), (32, 64, 64, 64)),
                    sampler_dims=(2, 3), sampler_size=(32, 64), mem_size=(128, 256), threads=(1, None))
    for k, (quick, full) in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, quick if q else full)
    args.channels = tuple(args.channels)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        memory_child(args)
        return
    torch.set_grad_enabled(False)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {args.device}\n")
    for part, fn in (("a", bench_sliding), ("b", bench_samplers), ("c", bench_memory)):
        if part in args.only:
            print("\n".join(fn(args)) + "\n", flush=True)


if __name__ == "__main__":
    main()
