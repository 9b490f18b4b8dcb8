"""Speed of the degradation transforms against the references named in docs/benchmarks.md.

Measured in one run on one machine:
  1. RandRicianMRNoise vs monai.transforms.RandRicianNoise on a 1 x 192^3 volume (goal: no slower);
  2. LowDoseCTNoise(domain="projection") on a 512 x 512 slice with 720 views vs scikit-image
     radon + iradon at the same geometry (goal: at least 5x faster on CPU).

Usage: python benchmarks/transforms_speed.py [--repeats 5] [--device cpu|cuda] [--threads N]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np
import torch


def timed(fn, repeats: int, device: str) -> tuple[float, float]:
    """Median and min wall time (s) of ``fn()`` over ``repeats`` runs after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times)


def water_phantom(n: int) -> np.ndarray:
    y, x = np.mgrid[:n, :n] - (n - 1) / 2
    img = np.full((n, n), -1000.0, np.float32)
    img[(x / (0.45 * n)) ** 2 + (y / (0.35 * n)) ** 2 < 1] = 0.0
    return img


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--mr-size", type=int, default=192)
    parser.add_argument("--ct-size", type=int, default=512)
    parser.add_argument("--views", type=int, default=720)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from monai.transforms import RandRicianNoise
    from skimage.transform import iradon, radon

    from monai_flow.transforms import LowDoseCTNoise, RandRicianMRNoise

    rows = []
    vol = torch.rand(1, *(args.mr_size,) * 3, device=args.device) * 100
    ours = RandRicianMRNoise(prob=1.0, std=(0.01, 0.05), relative_to="max").set_random_state(0)
    monai_t = RandRicianNoise(prob=1.0, std=0.05, relative=True).set_random_state(0)
    shape = f"1x{args.mr_size}^3"
    rows.append((f"RandRicianMRNoise ({shape})", *timed(lambda: ours(vol), args.repeats, args.device)))
    rows.append((f"monai RandRicianNoise ({shape})", *timed(lambda: monai_t(vol), args.repeats, args.device)))

    n, views = args.ct_size, args.views
    slice_hu = water_phantom(n)
    img = torch.as_tensor(slice_hu, device=args.device)[None]
    ct = LowDoseCTNoise(dose_fraction=0.25, num_views=views, spacing=(0.7, 0.7))
    from monai_flow.physics import parallel_beam_geometry

    parallel_beam_geometry.cache_clear()
    start = time.perf_counter()
    ct(img)
    first = time.perf_counter() - start
    rows.append((f"LowDoseCTNoise projection, first call incl. plan ({n}^2, {views} views)", first, first))
    rows.append((f"LowDoseCTNoise projection ({n}^2, {views} views)", *timed(lambda: ct(img), args.repeats, args.device)))
    theta = np.linspace(0.0, 180.0, views, endpoint=False)

    def skimage_round_trip():
        sino = radon(slice_hu, theta, circle=False)
        return iradon(sino, theta, circle=False, output_size=n, filter_name="ramp")

    rows.append((f"skimage radon + iradon ({n}^2, {views} views)", *timed(skimage_round_trip, max(1, args.repeats // 2), "cpu")))

    print(f"device: {args.device}, torch threads: {torch.get_num_threads()}, cpu: {platform.processor() or platform.machine()}, torch {torch.__version__}\n")
    print("| operation | median (s) | min (s) |")
    print("|---|---|---|")
    for name, med, low in rows:
        print(f"| {name} | {med:.3f} | {low:.3f} |")
    mr_ratio = rows[0][1] / rows[1][1]
    ct_ratio = rows[4][1] / rows[3][1]
    print(f"\nRician: ours / MONAI = {mr_ratio:.2f} (goal <= 1)")
    print(f"CT projection mode: skimage / ours = {ct_ratio:.1f}x (goal >= 5x); with plan building {rows[4][1] / rows[2][1]:.1f}x")


if __name__ == "__main__":
    main()
