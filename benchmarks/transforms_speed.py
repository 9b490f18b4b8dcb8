"""Speed of the degradation transforms against the references named in docs/benchmarks.md.

Measured in one run on one machine:
  1. RandRicianMRNoise vs monai.transforms.RandRicianNoise on a 1 x 192^3 volume (goal: no slower);
  2. LowDoseCTNoise(domain="projection") on a 512 x 512 slice with 720 views vs scikit-image
     radon + iradon at the same geometry (goal: at least 5x faster on CPU);
  3. fan-beam noise insertion, LowDoseCTNoise(geometry="fan") on a 512 x 512 slice (0.7 mm) with
     1000 views and 900 channels, against the peer's CPU projector + FBP at equal geometry:
     ASTRA's CPU fan-beam projector (line_fanflat) and CPU backprojection with the fan-beam FBP
     weighting and ramp filter in numpy (what ODL's fbp_op runs on its astra_cpu backend; ASTRA has no
     CPU fan-beam FBP of its own and no arc detector, so the peer's detector is flat). Ours runs with
     the arc (default) and the flat detector, and the textbook pixel-driven FBP for reference
     (goal: at least 5x faster than the peer on CPU). Skipped with a note without astra-toolbox.

Usage: python benchmarks/transforms_speed.py [--repeats 5] [--device cpu|cuda] [--threads N]
       [--fan-views 1000] [--fan-channels 900]
GPU (when a device is lent; the peer stays on the CPU):
       python benchmarks/transforms_speed.py --device cuda --repeats 10
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
    parser.add_argument("--fan-views", type=int, default=1000)
    parser.add_argument("--fan-channels", type=int, default=900)
    parser.add_argument("--no-direct", action="store_true", help="skip the slow textbook fan-beam FBP")
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

    fan_rows = fan_beam_rows(args, slice_hu)

    print(f"device: {args.device}, torch threads: {torch.get_num_threads()}, cpu: {platform.processor() or platform.machine()}, torch {torch.__version__}\n")
    print("| operation | median (s) | min (s) |")
    print("|---|---|---|")
    for name, med, low in rows + fan_rows:
        print(f"| {name} | {med:.3f} | {low:.3f} |")
    mr_ratio = rows[0][1] / rows[1][1]
    ct_ratio = rows[4][1] / rows[3][1]
    print(f"\nRician: ours / MONAI = {mr_ratio:.2f} (goal <= 1)")
    print(f"CT projection mode: skimage / ours = {ct_ratio:.1f}x (goal >= 5x); with plan building {rows[4][1] / rows[2][1]:.1f}x")
    if fan_rows:
        named = {name.split(" (")[0]: med for name, med, _ in fan_rows}
        peer = named["peer: ASTRA CPU projector + fan FBP"]
        for ours in ("LowDoseCTNoise fan, arc", "LowDoseCTNoise fan, flat"):
            print(f"CT fan beam: peer / {ours[20:]} = {peer / named[ours]:.1f}x (goal >= 5x)")
        if "fan FBP direct (textbook), arc" in named:
            print(f"  (textbook pixel-driven fan FBP alone: {named['fan FBP direct (textbook), arc']:.2f} s)")


def fan_beam_rows(args, slice_hu: np.ndarray) -> list[tuple[str, float, float]]:
    """Fan-beam noise insertion (ours, arc and flat) and the peer's projector + FBP at equal geometry."""
    from monai_flow.physics import fan_beam_geometry
    from monai_flow.transforms import LowDoseCTNoise

    n, views, channels, px = args.ct_size, args.fan_views, args.fan_channels, 0.7
    radius, distance = 595.0, 1085.6
    # channels of 1 mm at the detector (0.55 mm at the isocentre), 900 of them: a 47.5 degree fan, 239 mm field
    pitch = 1.0 * 900 / channels
    rows = []
    img = torch.as_tensor(slice_hu, device=args.device)[None]
    shape = f"{n}^2, {views} views x {channels} channels"
    for detector in ("arc", "flat"):
        fan = LowDoseCTNoise(dose_fraction=0.25, spacing=(px, px), geometry="fan", num_views=views, num_bins=channels,
                             channel_pitch_mm=pitch, detector_shape=detector, detector_offset=0.0)
        fan_beam_geometry.cache_clear()
        start = time.perf_counter()
        fan(img)
        first = time.perf_counter() - start
        rows.append((f"LowDoseCTNoise fan, {detector}, first call incl. tables ({shape})", first, first))
        rows.append((f"LowDoseCTNoise fan, {detector} ({shape})", *timed(lambda: fan(img), args.repeats, args.device)))
    if not args.no_direct:
        from monai_flow.physics import FanBeamGeometry

        geometry = FanBeamGeometry((n, n), (px, px), views, channels, radius, distance, pitch, "arc", 0.0, device=args.device)
        noise = torch.randn(1, views, channels, device=args.device) * 0.01
        rows.append((f"fan FBP direct (textbook), arc ({shape})",
                     *timed(lambda: geometry.fbp(noise, method="direct"), 1, args.device)))
    try:
        import astra
    except ImportError:
        print("(fan-beam peer skipped: pip install astra-toolbox, the test extra)")
        return rows
    mu = (0.0192 * (1 + slice_hu / 1000)).clip(min=0).astype(np.float32)[::-1].copy()  # ASTRA's y axis points up
    volume = astra.create_vol_geom(n, n, -n * px / 2, n * px / 2, -n * px / 2, n * px / 2)
    beta = np.arange(views) * 2 * np.pi / views
    geometry = astra.create_proj_geom("fanflat", pitch, channels, beta + np.pi, radius, distance - radius)
    projector = astra.create_projector("line_fanflat", geometry, volume)
    u = (np.arange(channels) - (channels - 1) / 2) * pitch
    iso = pitch * radius / distance  # virtual detector through the isocentre
    weight = (distance / np.sqrt(distance**2 + u**2)).astype(np.float32)  # cos(gamma) pre-weighting
    size = 1 << int(np.ceil(np.log2(2 * channels)))
    lags = np.fft.fftfreq(size, 1.0 / size)
    kernel = np.zeros(size)
    kernel[lags == 0] = 1 / (4 * iso**2)
    odd = lags % 2 == 1
    kernel[odd] = -1 / (np.pi * lags[odd] * iso) ** 2  # Kak & Slaney's band-limited ramp
    ramp = np.fft.rfft(kernel).real * iso / 2
    rng = np.random.default_rng(0)

    def peer():
        sid, sino = astra.create_sino(mu, projector)  # line integrals of the slice
        astra.data2d.delete(sid)
        noise = np.sqrt(np.exp(sino) / 1e5 * 3) * rng.standard_normal(sino.shape).astype(np.float32)  # Yu, a = 1/4
        filtered = np.fft.irfft(np.fft.rfft(noise * weight, size, axis=-1) * ramp, size, axis=-1)[:, :channels]
        # backprojection: ASTRA's is the adjoint of its projector (weights by intersection length),
        # the work of ODL's astra_cpu fbp_op; the pixel-dependent 1/U^2 is not applied, the cost is the same
        bid, image = astra.create_backprojection(np.ascontiguousarray(filtered, dtype=np.float32), projector)
        astra.data2d.delete(bid)
        return image

    rows.append((f"peer: ASTRA CPU projector + fan FBP (flat, {shape})", *timed(peer, max(1, args.repeats // 2), "cpu")))
    astra.projector.delete(projector)
    return rows


if __name__ == "__main__":
    main()
