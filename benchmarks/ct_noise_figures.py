"""Figures and agreement figures of docs/transforms.md for the CT noise model (issue 13).

Writes (small PNGs) and prints:
  1. ct_noise_std_maps.png: noise std maps (HU) of the chest phantom at quarter dose: parallel beam,
     fan beam, fan beam + "cylinder" bowtie, fan beam + bowtie + automatic tube-current modulation;
  2. ct_fan_validation.png: fan beam against an independent computation (ASTRA's CPU projector, a numpy
     fan-beam FBP from Kak & Slaney) on the same phantom and geometry: std profile and radial NPS;
     parallel beam against scikit-image radon / iradon;
  3. ct_bowtie_modulation.png: the bowtie profile and the automatic modulation of the phantom.

Usage: python benchmarks/ct_noise_figures.py [--out docs/img] [--reps 48]
The ASTRA and scikit-image parts need the test extra (pip install -e .[test]).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def std_maps(reps: int, out: Path) -> dict:
    from monai_flow.data.phantoms import ct_phantom
    from monai_flow.physics import CTScan, low_dose_ct_noise

    n, px = 128, 3.2
    hu = ct_phantom((n, n), generator=torch.Generator().manual_seed(3), spacing=px)
    batch = hu[None, None].repeat(reps, 1, 1, 1)
    fan = CTScan(i0=1e5, geometry="fan")
    # matched flux: the same photons per mm at the isocentre and per radian of view (docs/transforms.md)
    i0_parallel = fan.i0 * (fan.num_views / 720) * px / (fan.source_isocentre_mm * fan.channel_pitch_mm / fan.source_detector_mm)
    configs = {
        f"parallel, matched flux (i0 {i0_parallel:.2g} per {px} mm bin)": CTScan(i0=i0_parallel),
        "fan (1152 views / 360 deg)": CTScan(i0=1e5, geometry="fan"),
        "fan + bowtie": CTScan(i0=1e5, geometry="fan", bowtie="cylinder"),
        "fan + bowtie + auto TCM": CTScan(i0=1e5, geometry="fan", bowtie="cylinder", modulation="auto"),
    }
    maps = {}
    for i, (name, scan) in enumerate(configs.items()):
        noise = low_dose_ct_noise(batch, 0.25, (px, px), scan, generator=torch.Generator().manual_seed(i))[:, 0]
        std = noise.std(0)
        std = torch.nn.functional.avg_pool2d(std[None, None], 3, 1, 1, count_include_pad=False)[0, 0]
        maps[name] = std.numpy()
    from scipy.ndimage import binary_fill_holes

    body = binary_fill_holes((hu > -500).numpy())
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    vmax = float(np.quantile(np.concatenate([m[body] for m in maps.values()]), 0.99))
    fig, axes = plt.subplots(1, 5, figsize=(13, 2.9), gridspec_kw={"width_ratios": [1, 1, 1, 1, 0.06]})
    for ax, (name, m) in zip(axes, maps.items()):
        im = ax.imshow(np.where(body, m, np.nan), cmap="magma", vmin=0, vmax=vmax)
        ax.set_title(name, fontsize=8)
        ax.axis("off")
    fig.colorbar(im, cax=axes[-1], label="noise std (HU)")
    fig.suptitle(f"quarter-dose noise std, chest phantom {n}x{n} at {px} mm, fan i0 = 1e5 per channel and view "
                 f"({reps} draws)", fontsize=9)
    fig.savefig(out / "ct_noise_std_maps.png", dpi=72, bbox_inches="tight")
    plt.close(fig)
    c = n // 2
    rows = {name: (float(m[c - 4: c + 4, c - 4: c + 4].mean()), float(np.median(m[body]))) for name, m in maps.items()}
    for name, (centre, median) in rows.items():
        print(f"std map {name}: centre {centre:.1f} HU, body median {median:.1f} HU")
    return rows


def validation(reps: int, out: Path) -> None:
    from test_fan_beam import D, R, block_std, ellipse_hu, fan_kw, numpy_fan_fbp

    from monai_flow.physics import CTScan, hu_to_mu, low_dose_ct_noise, scan_geometry

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    n, px = 72, 1.5
    hu = ellipse_hu(n, px, 48, 36, cx=4.0, supersample=4)
    hu = hu + (ellipse_hu(n, px, 9, 9, cx=-20.0, cy=8.0, value=1000.0, supersample=4) + 1000.0)
    scan = CTScan(i0=2e4, electronic_std=0.0, **fan_kw(px, 78.0, views=240))
    g = scan_geometry((n, n), (px, px), scan)
    ours = low_dose_ct_noise(hu[None, None].repeat(reps, 1, 1, 1), 1.0, (px, px), scan, input_noise="none",
                             generator=torch.Generator().manual_seed(12))[:, 0].double().numpy()
    mu = hu_to_mu(hu, scan.mu_water).numpy().astype(np.float32)
    try:
        import astra
    except ImportError:
        print("astra-toolbox missing: fan-beam validation skipped")
        return
    beta, gamma = g.beta.numpy(), g.gamma.numpy()
    b, gm = beta[:, None], gamma[None, :]
    sx, sy = -R * np.sin(b) + 0 * gm, -R * np.cos(b) + 0 * gm
    dx, dy = np.sin(b + gm), np.cos(b + gm)
    pitch = scan.channel_pitch_mm
    vectors = np.stack([sx, sy, sx + D * dx, sy + D * dy, pitch * dy, -pitch * dx], -1).reshape(-1, 6)
    volume = astra.create_vol_geom(n, n, -n * px / 2, n * px / 2, -n * px / 2, n * px / 2)
    projector = astra.create_projector("line_fanflat", astra.create_proj_geom("fanflat_vec", 1, vectors), volume)
    sid, sino = astra.create_sino(np.ascontiguousarray(mu), projector)
    astra.data2d.delete(sid)
    p = sino.reshape(len(beta), len(gamma)).astype(np.float64)
    ours_p = g.project(torch.from_numpy(mu)[None])[0].double().numpy()
    print(f"fan projection vs ASTRA (arc via fanflat_vec): mean |diff| / mean = {np.abs(ours_p - p).mean() / p.mean():.4f}")
    rng = np.random.default_rng(0)
    counts = np.maximum(rng.poisson(2e4 * np.exp(-p), size=(reps,) + p.shape), 1)
    theirs = numpy_fan_fbp(-np.log(counts / 2e4) - p, beta, gamma, n, px) * scan.hu_per_mu
    direct = g.fbp(torch.from_numpy(-np.log(counts / 2e4) - p).float(), method="direct").double().numpy() * scan.hu_per_mu
    inside = (hu.numpy() > -500).reshape(12, 6, 12, 6).all(axis=(1, 3))
    ratios = (block_std(ours, 6) / block_std(theirs, 6))[inside]
    print(f"fan std, ours / independent (6x6 blocks in the body): median {np.median(ratios):.3f}, "
          f"5-95 % {np.quantile(ratios, 0.05):.3f} - {np.quantile(ratios, 0.95):.3f}")
    row = n // 2
    for name, noise in (("monai_flow (Fourier FBP)", ours), ("monai_flow direct FBP", direct), ("ASTRA + numpy FBP", theirs)):
        axes[0].plot((np.arange(n) - (n - 1) / 2) * px, noise[:, row - 2: row + 2, :].std(axis=(0, 1)), label=name, lw=1)
    axes[0].set(title="fan: std along the middle rows", xlabel="x (mm)", ylabel="std (HU)")
    axes[0].legend(fontsize=7)
    core = slice(n // 2 - 16, n // 2 + 16)
    for name, noise in (("monai_flow (Fourier FBP)", ours), ("monai_flow direct FBP", direct), ("ASTRA + numpy FBP", theirs)):
        f, nps = radial_nps(noise[:, core, core], px)
        axes[1].plot(f, nps, label=name, lw=1)
    f, a = radial_nps(ours[:, core, core], px)
    _, c = radial_nps(theirs[:, core, core], px)
    bands = [(0.05, 0.15), (0.15, 0.3), (0.3, 0.45)]
    fc = f * px
    print("fan NPS ours / independent in bands (cycles/pixel) " + ", ".join(
        f"{lo}-{hi}: {a[(fc >= lo) & (fc < hi)].mean() / c[(fc >= lo) & (fc < hi)].mean():.3f}" for lo, hi in bands))
    axes[1].set(title="fan: radial NPS (centre 48 mm)", xlabel="cycles / mm", ylabel="HU^2 mm^2")
    axes[1].legend(fontsize=7)
    parallel_validation(reps, axes[2])
    fig.tight_layout()
    fig.savefig(out / "ct_fan_validation.png", dpi=72)
    plt.close(fig)


def parallel_validation(reps: int, ax) -> None:
    from skimage.transform import iradon, radon
    from test_fan_beam import ellipse_hu

    from monai_flow.physics import CTScan, hu_to_mu, low_dose_ct_noise

    n, px, views, i0 = 64, 2.0, 120, 2e4
    hu = ellipse_hu(n, px, 50, 38, supersample=4)
    mu = hu_to_mu(hu, 0.0192).numpy().astype(np.float64)
    theta = np.arange(views) * 180.0 / views
    p = radon(mu, theta, circle=False) * px
    rng = np.random.default_rng(1)
    counts = np.maximum(rng.poisson(i0 * np.exp(-p), size=(reps,) + p.shape), 1)
    noise_sino = -np.log(counts / i0) - p
    scan = CTScan(i0=i0, electronic_std=0.0, num_views=views, num_bins=p.shape[0])
    ours = low_dose_ct_noise(hu[None, None].repeat(reps, 1, 1, 1), 1.0, (px, px), scan, input_noise="none",
                             generator=torch.Generator().manual_seed(13))[:, 0].double().numpy()
    core = slice(n // 2 - 12, n // 2 + 12)
    f, a = radial_nps(ours[:, core, core], px)
    ax.plot(f, a, label="monai_flow parallel", lw=1)
    for interp in ("cubic", "linear"):
        theirs = np.stack([iradon(s, theta, circle=False, output_size=n, filter_name="ramp", interpolation=interp)
                           for s in noise_sino]) / px * 1000 / 0.0192
        _, c = radial_nps(theirs[:, core, core], px)
        ax.plot(f, c, label=f"skimage iradon ({interp})", lw=1)
        fc = f * px
        bands = [(0.05, 0.15), (0.15, 0.3), (0.3, 0.45)]
        print(f"parallel std ours / skimage-{interp}: {ours[:, core, core].std() / theirs[:, core, core].std():.3f}; NPS bands "
              + ", ".join(f"{a[(fc >= lo) & (fc < hi)].mean() / c[(fc >= lo) & (fc < hi)].mean():.3f}" for lo, hi in bands))
    ax.set(title="parallel: radial NPS vs scikit-image", xlabel="cycles / mm", ylabel="HU^2 mm^2")
    ax.legend(fontsize=7)


def radial_nps(noise: np.ndarray, px: float, bins: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Radially averaged NPS (HU^2 mm^2) of (N, h, w) noise at ``bins`` frequencies (cycles / mm)."""
    h, w = noise.shape[-2:]
    power = (np.abs(np.fft.fft2(noise - noise.mean(0))) ** 2).mean(0) * px * px / (h * w)
    f = np.sqrt(np.fft.fftfreq(h, px)[:, None] ** 2 + np.fft.fftfreq(w, px)[None, :] ** 2)
    edges = np.linspace(0, 0.5 / px, bins + 1)
    idx = np.digitize(f, edges) - 1
    values = np.array([power[idx == k].mean() for k in range(bins)])
    return 0.5 * (edges[1:] + edges[:-1]), values


def profiles(out: Path) -> None:
    from monai_flow.data.phantoms import ct_phantom
    from monai_flow.physics import CTScan, hu_to_mu
    from monai_flow.physics.ct_noise import bowtie_profile, incident_flux, scan_geometry

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n, px = 128, 3.2
    scan = CTScan(geometry="fan", bowtie="cylinder", modulation="auto")
    g = scan_geometry((n, n), (px, px), scan)
    hu = ct_phantom((n, n), generator=torch.Generator().manual_seed(3), spacing=px)
    flux = incident_flux(g, scan, g.project(hu_to_mu(hu, scan.mu_water)[None]))
    modulation = flux[0, :, int(torch.argmin(g.s.abs()))].numpy()
    fig, axes = plt.subplots(1, 2, figsize=(8, 2.6))
    axes[0].plot(np.degrees(g.gamma.numpy()), bowtie_profile(g, scan).numpy())
    axes[0].set(title='bowtie "cylinder" (r = 160 mm, min 0.1)', xlabel="fan angle (degrees)", ylabel="relative flux")
    axes[1].plot(np.degrees(g.beta.numpy()), modulation)
    axes[1].set(title='modulation "auto", chest phantom', xlabel="view angle (degrees)", ylabel="relative tube current")
    fig.tight_layout()
    fig.savefig(out / "ct_bowtie_modulation.png", dpi=72)
    plt.close(fig)
    print(f"auto modulation on the phantom: min {modulation.min():.2f}, max {modulation.max():.2f} (mean 1)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="docs/img")
    parser.add_argument("--reps", type=int, default=48)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    std_maps(args.reps, out)
    profiles(out)
    validation(args.reps, out)


if __name__ == "__main__":
    main()
