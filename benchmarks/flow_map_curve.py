"""The flow-map denoiser's distortion-perception curve on CT and MR slices, against a regression
network at the same budget, BM3D (true std) and the ODE sampler of the same network.

Recipe (``monai_flow.flows.FlowMapDistillation`` on a ``DenoiserFlowMap`` network): a warm-up that
trains only the diagonal (t = s: the network is a noise-conditional regression denoiser, EDM
preconditioning), then a frozen snapshot of it is the teacher: the diagonal distils its MMSE estimate
and the rest of the batch learns the teacher's probability-flow ODE from s to t = s + k (1 - s)
(4 Heun steps). Times where the denoiser is used: sigma log-uniform in ``--sigma-range``, lookahead
k uniform in [0, 1] (a quarter at k = 1).

Baselines at the same iterations, batches and network size: ``regression`` (``VelocityUNet`` with the
noise level as its time input, ``x_hat = y + N(y, s)``, MSE), BM3D given the true noise std, and the
ODE sampler (the flow-map network's own diagonal integrated from s to 1 with 16 Heun steps: the
classical velocity-network sampler, ~32 network calls).

Noise: ``white`` Gaussian of std sigma (what s = 1 / (1 + sigma) assumes), or for CT ``ct``: projection-
domain Poisson noise reconstructed by FBP (spatially correlated, non-stationary), where the denoisers
get the noise's true pixel std; ``--train-noise ramp`` trains the flow map (and the regression) on
ramp-spectrum Gaussian noise instead of white (operator-aware source).

Perception measures (no learned features: no package we may use ships feature weights in its wheel):
high-frequency power ratio to the clean images (power above 0.25 cycles / pixel; 1 = clean texture,
< 1 smoothed) and the 1-Wasserstein distance between gradient-magnitude distributions (0 = clean edge
statistics), per image and averaged.

Usage:
    python benchmarks/flow_map_curve.py --modalities CT MR          # ~15-25 min on 2 CPU cores
    python benchmarks/flow_map_curve.py --modalities CT --noise ct --train-noise ramp
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch

from monai_flow.data.phantoms import ct_phantom, mr_phantom
from monai_flow.flows import FlowMap
from monai_flow.flows.flow_map_distillation import DenoiserFlowMap, FlowMapDistillation, flow_map_ode, ramp_noise
from monai_flow.inferers import FlowMapDenoiser
from monai_flow.networks import VelocityUNet
from monai_flow.transforms import CTDegradation, NormalizedDegradation

LOOKAHEADS = (0.0, 0.25, 0.5, 0.75, 1.0)
CT_SPACING = 5.6  # mm: 64 pixels over a 360 mm field of view


def unet(flow_map: bool, channels, groups) -> VelocityUNet:
    return VelocityUNet(2, 1, channels=channels, attention_levels=(False,) * len(channels), num_res_blocks=1,
                        norm_num_groups=groups, flow_map=flow_map, mid_attention=False)


def images(modality: str, n: int, seed: int, size: int = 64) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    if modality == "CT":
        return torch.stack([ct_phantom((size, size), gen)[None] for _ in range(n)]) / 1000.0  # HU / 1000
    return torch.stack([mr_phantom((size, size), gen)[None] for _ in range(n)])


def high_frequency_power(x: torch.Tensor) -> torch.Tensor:
    """Per-image power above 0.25 cycles / pixel, (B,)."""
    h, w = x.shape[-2:]
    k = torch.sqrt(torch.fft.fftfreq(h)[:, None] ** 2 + torch.fft.fftfreq(w)[None, :] ** 2)
    return torch.fft.fft2(x).abs().square()[..., k > 0.25].flatten(1).mean(1)


def gradient_w1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image 1-Wasserstein distance between gradient-magnitude distributions, (B,)."""
    def magnitudes(x):
        gy, gx = x[..., 1:, :-1] - x[..., :-1, :-1], x[..., :-1, 1:] - x[..., :-1, :-1]
        return torch.sqrt(gx**2 + gy**2).flatten(1).sort(1).values

    return (magnitudes(a) - magnitudes(b)).abs().mean(1)


def measures(out: torch.Tensor, clean: torch.Tensor, peak: float) -> dict[str, float]:
    mse = (out - clean).square().flatten(1).mean(1)
    return {"psnr": float((10 * torch.log10(peak**2 / mse)).mean()),
            "hf": float((high_frequency_power(out) / high_frequency_power(clean)).mean()),
            "w1": float(gradient_w1(out, clean).mean())}


def train(network, loss_fn, data: torch.Tensor, iterations: int, batch: int, seed: int) -> float:
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(network.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=iterations, pct_start=0.1)
    network.train()
    start = time.perf_counter()
    for _ in range(iterations):
        x = data[torch.randint(len(data), (batch,), generator=gen)]
        flips = torch.rand(2, generator=gen) < 0.5
        x = torch.flip(x, [d for d, f in zip((-1, -2), flips) if f]) if flips.any() else x
        loss = loss_fn(network, x, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    network.eval()
    return time.perf_counter() - start


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modalities", nargs="+", default=["CT", "MR"], choices=["CT", "MR"])
    parser.add_argument("--iterations", type=int, default=600)
    parser.add_argument("--warmup-fraction", type=float, default=0.3, help="share of iterations on the diagonal only")
    parser.add_argument("--diagonal-fraction", type=float, default=0.6, help="share of each batch on the diagonal after it")
    parser.add_argument("--teacher", default="live", choices=["live", "snapshot"],
                        help="the network's own current diagonal (no gradient) or a snapshot frozen at the end of the warm-up")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--channels", type=int, nargs="+", default=[16, 32, 32])
    parser.add_argument("--groups", type=int, default=8)
    parser.add_argument("--num-train", type=int, default=128)
    parser.add_argument("--num-test", type=int, default=16)
    parser.add_argument("--sigma-range", type=float, nargs=2, default=[0.02, 0.2])
    parser.add_argument("--test-sigmas", type=float, nargs="+", default=[0.05, 0.1])
    parser.add_argument("--noise", default="white", choices=["white", "ct"], help="test noise (ct: CT only)")
    parser.add_argument("--train-noise", default="white", choices=["white", "ramp"])
    parser.add_argument("--methods", nargs="+", default=["regression", "flowmap", "bm3d"],
                        choices=["regression", "flowmap", "bm3d", "meanflow"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-md", default="docs/results/flow_map_curve.md")
    parser.add_argument("--out-png", default="docs/img/flow_map_curve.png")
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    lo, hi = (math.log(v) for v in args.sigma_range)
    source = (lambda x, g: ramp_noise(x.shape, generator=g)) if args.train_noise == "ramp" else None
    lines, curves = [], {}
    for modality in args.modalities:
        peak, sigma_data = (2.0, 0.5) if modality == "CT" else (1.0, 0.35)
        data, clean = images(modality, args.num_train, 1 + args.seed), images(modality, args.num_test, 1000 + args.seed)
        gen = torch.Generator().manual_seed(7)
        noisy, stds = {}, {}
        for sigma in args.test_sigmas:
            if args.noise == "ct" and modality == "CT":  # dose whose FBP noise has about this pixel std
                op = NormalizedDegradation(CTDegradation((CT_SPACING, CT_SPACING), i0=1e4, num_views=180, electronic_std=0.0,
                                                         input_noise="none", dt_mapping="dose"), 1000.0)
                probe = op(clean, torch.zeros(len(clean)), generator=torch.Generator().manual_seed(0)) - clean
                dose = float(probe.std() / sigma) ** 2
                y = op(clean, torch.full((len(clean),), -math.log(dose)), generator=gen)
            else:
                y = clean + sigma * torch.randn(clean.shape, generator=gen)
            noisy[sigma], stds[sigma] = y, (y - clean).flatten(1).std(1)
        rows = {sigma: {"noisy input": measures(noisy[sigma], clean, peak)} for sigma in args.test_sigmas}
        times = {}

        def add(label, fn):
            for sigma in args.test_sigmas:
                with torch.no_grad():
                    rows[sigma][label] = measures(fn(noisy[sigma], stds[sigma]), clean, peak)

        if "regression" in args.methods:
            reg = unet(False, args.channels, args.groups)

            def reg_loss(net, x, g):
                sigma = torch.exp(lo + (hi - lo) * torch.rand(len(x), generator=g))
                e = source(x, g) if source else torch.randn(x.shape, generator=g)
                y = x + sigma.view(-1, 1, 1, 1) * e
                return (y + net(y, 1.0 / (1.0 + sigma)) - x).square().mean()

            times["regression"] = train(reg, reg_loss, data, args.iterations, args.batch, args.seed)
            add("regression", lambda y, std: y + reg(y, 1.0 / (1.0 + std)))
        if "bm3d" in args.methods:
            import bm3d

            add("BM3D (true std)", lambda y, std: torch.stack([torch.from_numpy(np.ascontiguousarray(
                bm3d.bm3d(yi[0].double().numpy(), sigma_psd=float(si)))).float()[None] for yi, si in zip(y, std)]))
        if "flowmap" in args.methods:
            fm = DenoiserFlowMap(unet(True, args.channels, args.groups), sigma_data=sigma_data)
            objective = FlowMapDistillation(teacher=None if args.teacher == "live" else "snapshot", diagonal_fraction=args.diagonal_fraction,
                                            warmup_iterations=int(args.warmup_fraction * args.iterations),
                                            sigma_range=args.sigma_range, noise=source, seed=args.seed)
            times["flow map"] = train(fm, lambda net, x, g: objective(net, x), data, args.iterations, args.batch, args.seed)
            for k in LOOKAHEADS:
                add(f"flow map, lookahead {k:g}", lambda y, std, k=k: FlowMapDenoiser(k)(y, fm, sigma=std))

            def ode_sampler(y, std):
                s = 1.0 / (1.0 + std)
                teacher = lambda z, t: fm.denoise(z, t, t)  # noqa: E731
                return flow_map_ode(teacher, s.view(-1, 1, 1, 1) * y, s, torch.ones_like(s), num_steps=16)

            add("ODE sampler (16 Heun steps)", ode_sampler)
        if "meanflow" in args.methods:  # the former recipe, for comparison
            mf = unet(True, args.channels, args.groups)
            mf_objective = FlowMap(diagonal_fraction=0.5, time_sampling="logit_normal", time_loc=2.5, time_scale=1.0, seed=args.seed)
            times["MeanFlow"] = train(mf, lambda net, x, g: mf_objective(net, x), data, args.iterations, args.batch, args.seed)
            for k in (0.0, 1.0):
                add(f"MeanFlow (former recipe), lookahead {k:g}", lambda y, std, k=k: FlowMapDenoiser(k)(y, mf, sigma=std))
        for sigma in args.test_sigmas:
            lines += [f"**{modality}**, {args.noise} noise, sigma {sigma:g} ({'HU: ' + format(sigma * 1000, 'g') if modality == 'CT' else 'of max'})"
                      f" (PSNR over the whole {args.num_test} slices, peak {peak:g}; HF ratio 1 and gradient W1 0 are the clean images')", "",
                      "| output | PSNR (dB) | HF power ratio | gradient W1 |", "|---|---|---|---|"]
            lines += [f"| {label} | {m['psnr']:.2f} | {m['hf']:.3f} | {m['w1']:.4f} |" for label, m in rows[sigma].items()]
            lines.append("")
            curves[(modality, sigma)] = rows[sigma]
        lines.append("Training seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in times.items()) + "\n")
        print("\n".join(lines[-12:]), flush=True)
    header = (f"{args.iterations} iterations x batch {args.batch} ({args.warmup_fraction:g} warm-up, teacher {args.teacher}, diagonal share {args.diagonal_fraction:g}), channels {tuple(args.channels)}, "
              f"{args.num_train} training / {args.num_test} test phantoms 64^2, sigma range {tuple(args.sigma_range)}, "
              f"train noise {args.train_noise}, test noise {args.noise}, seed {args.seed}; total {time.perf_counter() - start:.0f} s.\n")
    text = header + "\n" + "\n".join(lines)
    Path(args.out_md).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out_md).write_text(text)
    plot(curves, args.out_png)
    print(text)
    return text


def plot(curves: dict, out_png: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(curves), figsize=(4.2 * len(curves), 7.5), squeeze=False)
    for col, ((modality, sigma), rows) in enumerate(curves.items()):
        for row, (key, name) in enumerate((("w1", "gradient-magnitude W1 to clean (lower = closer)"),
                                           ("hf", "HF power ratio (1 = clean)"))):
            ax = axes[row][col]
            fm = [(label, m) for label, m in rows.items() if label.startswith("flow map")]
            if fm:
                ax.plot([m[key] for _, m in fm], [m["psnr"] for _, m in fm], "-o", color="C0", label="flow map, lookahead 0 -> 1")
                for label, m in fm:
                    ax.annotate(label.split()[-1], (m[key], m["psnr"]), textcoords="offset points", xytext=(3, 3), fontsize=7)
            for i, (label, m) in enumerate((label, m) for label, m in rows.items() if not label.startswith("flow map")):
                ax.plot(m[key], m["psnr"], "s^vDP*"[i % 6], color=f"C{i + 1}", label=label)
            if key == "hf":
                ax.axvline(1.0, color="gray", linestyle=":")
            ax.set(xlabel=name, ylabel="PSNR (dB)", title=f"{modality}, sigma {sigma:g}")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=6)
    fig.tight_layout()
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
