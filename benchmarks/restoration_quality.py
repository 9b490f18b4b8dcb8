"""Paired restoration quality: direct regression vs rectified flow vs CVF vs CVF+MCT, and the
flow-map denoiser's distortion-perception trade-off.

Data: 2D chest-like CT phantom slices (``monai_flow.data.ct_phantom``, HU / 1000 for the
networks) degraded in the projection domain by ``CTDegradation`` (dt levels, dose e^{-2 dt});
every method uses the same ``VelocityUNet``, the same batches (same seed) and the same number
of iterations. Test: held-out phantoms at two dose levels, PSNR / SSIM over [-1000, 1000] HU,
at 1, 2 and 4 steps. Flow map: the same network with ``flow_map=True`` in a ``DenoiserFlowMap``,
trained with ``FlowMapDistillation`` (issue 14's recipe; ``benchmarks/flow_map_curve.py`` is the full
distortion-perception study) on clean slices, denoising additive Gaussian noise across ``lookahead`` values; distortion is
PSNR, perception proxies are the high-frequency power ratio to the clean image (1 = right
texture, < 1 = over-smoothed) and the 1-Wasserstein distance between gradient-magnitude
distributions of output and clean image (0 = same edge statistics).

Usage: python benchmarks/restoration_quality.py [--quick] [--iterations N] [--device cpu|cuda]
Writes a markdown table to stdout and to --out-md, and a plot to --out-png.
"""

from __future__ import annotations

import argparse
import math
import platform
import time
from pathlib import Path

import torch
from monai.metrics import PSNRMetric, SSIMMetric

from monai_flow.data.phantoms import ct_phantom
from monai_flow.flows import CumulativeVelocityFlow
from monai_flow.flows.flow_map_distillation import DenoiserFlowMap, FlowMapDistillation
from monai_flow.inferers import FlowMapDenoiser, RestorationInferer
from monai_flow.networks import VelocityUNet
from monai_flow.transforms import CTDegradation

METHODS = {  # name: (objective kwargs, evaluated step counts)
    "direct regression": (dict(target="direct", mct_weight=0.0), (1,)),
    "rectified flow": (dict(target="rectified", mct_weight=0.0), (1, 2, 4)),
    "CVF": (dict(target="cvf", mct_weight=0.0), (1, 2, 4)),
    "CVF + MCT": (dict(target="cvf", mct_weight=0.3, mct_grad="last"), (1, 2, 4)),
}
TEST_LEVELS = (0.5, 1.0)  # dt: dose fractions e^{-1} = 0.37 and e^{-2} = 0.14
LOOKAHEADS = (0.0, 0.25, 0.5, 0.75, 1.0)


def make_network(flow_map: bool = False) -> VelocityUNet:
    return VelocityUNet(
        2, 1, channels=(16, 32, 32), attention_levels=(False, False, False), num_res_blocks=1,
        norm_num_groups=8, flow_map=flow_map,
    )


def phantom_batch(n: int, size: int, generator: torch.Generator) -> torch.Tensor:
    return torch.stack([ct_phantom((size, size), generator)[None] for _ in range(n)]) / 1000.0


def train(network, objective, iterations, batch, size, device, seed) -> float:
    gen = torch.Generator().manual_seed(seed)  # identical phantom batches for every method
    objective.set_random_state(seed)
    opt = torch.optim.AdamW(network.parameters(), lr=2e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=iterations, pct_start=0.1)
    network.train()
    start = time.perf_counter()
    for _ in range(iterations):
        loss = objective(network, {"image": phantom_batch(batch, size, gen).to(device)})
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        schedule.step()
    network.eval()
    return time.perf_counter() - start


def scores(out: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    out, ref = out.clamp(-1, 1), ref.clamp(-1, 1)
    psnr = PSNRMetric(max_val=2.0)(out, ref).mean().item()
    ssim = SSIMMetric(spatial_dims=2, data_range=2.0)(out, ref).mean().item()
    return psnr, ssim


def high_frequency_power(x: torch.Tensor) -> torch.Tensor:
    spectrum = torch.fft.fft2(x).abs().square()
    h, w = x.shape[-2:]
    k = torch.sqrt(torch.fft.fftfreq(h)[:, None] ** 2 + torch.fft.fftfreq(w)[None, :] ** 2).to(x.device)
    return spectrum[..., k > 0.25].mean()


def gradient_w1(a: torch.Tensor, b: torch.Tensor) -> float:
    def magnitudes(x):
        gy, gx = x[..., 1:, :-1] - x[..., :-1, :-1], x[..., :-1, 1:] - x[..., :-1, :-1]
        return torch.sqrt(gx**2 + gy**2).flatten().sort().values

    return (magnitudes(a) - magnitudes(b)).abs().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small budget (300 iterations; ~15 min on 2 CPU cores)")
    parser.add_argument("--iterations", type=int, default=None)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=64, help="slice size in pixels (field of view 360 mm)")
    parser.add_argument("--i0", type=float, default=2e4, help="full-dose photons per bin of the references")
    parser.add_argument("--sigma", type=float, default=0.1, help="flow-map test noise std (HU / 1000)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-md", default="docs/results/restoration_quality.md")
    parser.add_argument("--out-png", default="docs/img/restoration_quality.png")
    args = parser.parse_args()
    iterations = args.iterations or (300 if args.quick else 2000)
    device = torch.device(args.device)
    spacing = 360.0 / args.size
    ct = CTDegradation(spacing=(spacing, spacing), i0=args.i0, electronic_std=0.0, num_views=180)

    def degrade(x, level, generator=None):
        return ct(x * 1000.0, level, generator=generator) / 1000.0

    test_clean = phantom_batch(24, args.size, torch.Generator().manual_seed(10_000 + args.seed)).to(device)
    test_noisy = {lvl: degrade(test_clean, torch.full((24,), lvl), torch.Generator(device).manual_seed(int(lvl * 1000))) for lvl in TEST_LEVELS}
    rows = [("noisy input", "-", "-", *[v for lvl in TEST_LEVELS for v in scores(test_noisy[lvl], test_clean)])]
    for name, (kwargs, steps) in METHODS.items():
        torch.manual_seed(args.seed)
        net = make_network().to(device)
        objective = CumulativeVelocityFlow(degrade, level_range=(0.3, 1.2), mct_steps=(2, 6), **kwargs)
        seconds = train(net, objective, iterations, args.batch, args.size, device, args.seed)
        for k in steps:
            inferer = RestorationInferer(num_steps=k, target=kwargs["target"])
            with torch.no_grad():
                values = [v for lvl in TEST_LEVELS for v in scores(inferer(test_noisy[lvl], net), test_clean)]
            rows.append((name, k, f"{seconds:.0f}", *values))
        print(f"trained {name} in {seconds:.0f} s", flush=True)

    torch.manual_seed(args.seed)
    fm_net = DenoiserFlowMap(make_network(flow_map=True), sigma_data=0.5).to(device)  # issue 14's recipe
    fm_objective = FlowMapDistillation(teacher=None, warmup_iterations=int(0.3 * iterations), diagonal_fraction=0.6,
                                       sigma_range=(0.02, 0.2))
    fm_seconds = train(fm_net, fm_objective, iterations, args.batch, args.size, device, args.seed)
    noisy = test_clean + args.sigma * torch.randn(test_clean.shape, generator=torch.Generator().manual_seed(1)).to(device)
    fm_rows = [("noisy input", *scores(noisy, test_clean), (high_frequency_power(noisy) / high_frequency_power(test_clean)).item(), gradient_w1(noisy, test_clean))]
    for k in LOOKAHEADS:
        with torch.no_grad():
            out = FlowMapDenoiser(lookahead=k, sigma=args.sigma)(noisy, fm_net)
        fm_rows.append((f"lookahead {k}", *scores(out, test_clean), (high_frequency_power(out) / high_frequency_power(test_clean)).item(), gradient_w1(out, test_clean)))

    header = (
        f"Device {device.type} ({platform.processor() or platform.machine()}), torch {torch.__version__}, "
        f"{iterations} iterations x batch {args.batch}, {args.size}^2 slices at {spacing:.1f} mm, i0 {args.i0:g}, seed {args.seed}.\n"
    )
    lines = [header, "| method | steps | train s | " + " | ".join(f"PSNR / SSIM at dose {math.exp(-2 * l):.2f}" for l in TEST_LEVELS) + " |", "|---|---|---|" + "---|" * len(TEST_LEVELS)]
    for r in rows:
        lines.append(f"| {r[0]} | {r[1]} | {r[2]} | " + " | ".join(f"{r[3 + 2 * i]:.2f} / {r[4 + 2 * i]:.3f}" for i in range(len(TEST_LEVELS))) + " |")
    lines += ["", f"Flow-map denoiser (trained {fm_seconds:.0f} s), additive Gaussian noise sigma = {args.sigma} ({args.sigma * 1000:.0f} HU):", "",
              "| output | PSNR | SSIM | HF power ratio (1 = clean texture) | gradient W1 (0 = clean edges) |", "|---|---|---|---|---|"]
    lines += [f"| {r[0]} | {r[1]:.2f} | {r[2]:.3f} | {r[3]:.3f} | {r[4]:.4f} |" for r in fm_rows]
    text = "\n".join(lines)
    print(text)
    Path(args.out_md).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out_md).write_text(text + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, (_, steps) in METHODS.items():
        psnrs = [r[3] for r in rows if r[0] == name]
        axes[0].plot(steps, psnrs, marker="o", label=name)
    axes[0].axhline(rows[0][3], color="gray", linestyle=":", label="noisy input")
    axes[0].set(xlabel="steps", ylabel=f"PSNR (dB), dose {math.exp(-2 * TEST_LEVELS[0]):.2f}", xticks=[1, 2, 4], title="Paired restoration")
    axes[0].legend()
    psnr_fm = [r[1] for r in fm_rows[1:]]
    w1 = [r[4] for r in fm_rows[1:]]
    axes[1].plot(w1, psnr_fm, marker="o")
    for k, x, y in zip(LOOKAHEADS, w1, psnr_fm):
        axes[1].annotate(f"{k}", (x, y), textcoords="offset points", xytext=(4, 4))
    axes[1].set(xlabel="gradient-magnitude W1 to clean (perception proxy, lower is better)", ylabel="PSNR (dB)", title="Flow-map denoiser: lookahead")
    fig.tight_layout()
    Path(args.out_png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out_png, dpi=110)
    print(f"\nwrote {args.out_md} and {args.out_png}")


if __name__ == "__main__":
    main()
