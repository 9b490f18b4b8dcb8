"""Denoising on real images that our dependencies ship: CT at simulated quarter / tenth dose, MR with Rician noise.

Data (nothing is downloaded; every file comes with an installed package):

- CT (pydicom test files, 5 mm axial slices): ``693_J2KI.dcm`` (head, 512^2, 0.479 mm, lossy JPEG 2000,
  decoded by Pillow, which matplotlib already requires), ``J2K_pixelrep_mismatch.dcm`` (head, 512^2, 0.431 mm,
  lossless JPEG 2000) and ``CT_small.dcm`` (neck / upper chest crop, 128^2, 0.661 mm).
- MR: the MNI152 / ICBM 2009a T1 template at 1 mm that nilearn's wheel carries
  (``nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz``, read with nibabel; skull-stripped;
  an average of 152 registered subjects, hence smoother and with less texture than one scan), cropped to the
  brain, as a 3D slab of 32 axial slices through the ventricles; and two real slices from pydicom,
  ``examples_overlay.dcm`` (abdomen, 300 x 484, 0.72 mm) and ``MR_small.dcm`` (64^2, 0.31 mm), whose own noise
  stays in the reference.

CT simulation (the projector is scikit-image's ``radon`` / ``iradon``, parallel beam: not the one monai-flow
uses, so there is no inverse crime): HU -> mu = mu_water (1 + HU / 1000), mu_water = 0.0192 / mm, with the
pixel spacing from the header; p = radon(mu) (line integrals, 720 views over 180 degrees, 180 in quick mode).
The real slice is the full-dose reference; its own full-dose noise is already in it, so only the *extra*
noise of a dose fraction ``a`` is added (Yu et al., Med. Phys. 2012)::

    p_ld = p + sqrt(((1 - a) / a) e^p / I0 (1 + ((1 + a) / a) s_e^2 e^p / I0)) N(0, 1),   s_e = 5 counts

and only that increment is reconstructed: the low-dose image is ``reference + FBP(p_ld - p)``. FBP is
linear, so this is exactly ``FBP(p_ld)`` up to the reconstruction of the reference itself, which would only
blur and alias the real image through scikit-image's interpolating projector; reconstructing the noise alone
keeps the reference untouched, so the error of a method is measured against the very image it was computed
from. The filter is Hann (a soft kernel, like the references' standard head kernels).

The photon count ``I0`` is chosen per case so that the reference is a plausible full-dose scan of this
geometry: a full-dose noise realisation (``e^p / I0`` variance) has the noise the reference itself shows
(25th percentile of the 7 x 7 local standard deviation in flat soft tissue, at least 3 HU; lossy
compression flattened 693_J2KI's own noise, so the floor applies there). The quarter- and tenth-dose images
then have the noise that real 25 % / 10 % acquisitions with the same protocol would add.

Scores: CT inside the body (HU > -500 on the reference, opened by 2 pixels, largest component, holes filled):
PSNR over the [-1000, 1000] HU window (data range 2000, images clipped to it), PSNR over the soft-tissue
window [-160, 240] HU (data range 400) and SSIM ([-1000, 1000], Gaussian, sigma 1.5, averaged over the body).
MR: images scaled to a maximum of 1; Rician noise of std 3 / 5 / 10 % of the maximum
(``monai_flow.physics.noncentral_chi_noise``, one coil); foreground = reference > 10 % of its maximum; PSNR
with peak 1 and SSIM over the foreground (3D SSIM for the volume). All metrics are scikit-image's.

Methods (``--methods``): ``noisy`` (the input), ``bm3d`` (white noise, given the true noise std),
``bm3d_psd`` (CT: given the true noise power spectrum, estimated from the simulated noise and 2 more
realisations), ``nlm`` (scikit-image non-local means, fast mode, 5^2 / 5^3 patches, search distance 6,
h = 0.8 sigma, given the true sigma; 3D on the volume), ``bm4d`` (MR volume, true sigma). The true sigma is
the std of the simulated noise in the body (CT) / the Rician std (MR). Other methods plug in through
``register`` or ``--plugin file.py`` (a file defining ``METHODS = {name: fn}``); a method is
``fn(noisy, context) -> denoised`` on a NumPy array in the modality's unit (CT: HU; MR: fraction of the
maximum), 2D (H, W) or 3D (H, W, D); a method registered for 2D only is applied slice by slice to volumes.
``context`` (``Context``) holds the modality, case, level, voxel spacing (mm), true noise std, noise power
spectrum (CT, numpy FFT convention: E|fft2(noise)|^2), a time budget, and a seed. Each call is timed
(wall clock).

Usage:
    python benchmarks/real_scans.py --quick                      # CT_small + MR_small, seconds
    python benchmarks/real_scans.py                              # all cases (tens of minutes on 2 CPU cores)
    python benchmarks/real_scans.py --methods noisy bm3d --plugin my_methods.py --out /tmp/rs
Writes ``<out>/results/real_scans[_quick]_{ct,mr}.md`` (+ ``.json``) and PNG figures (soft-tissue window for
CT, full range for MR; full field of view and zoomed crops) in ``<out>/img/``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

MU_WATER = 0.0192                   # 1 / mm, water at ~70 keV
ELECTRONIC_STD = 5.0                # counts
CT_DOSES = (0.25, 0.1)
MR_LEVELS = (0.03, 0.05, 0.10)
CT_WINDOW, SOFT_WINDOW = (-1000.0, 1000.0), (-160.0, 240.0)
ROOT = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------------------------ methods
@dataclass
class Context:
    """What a method may know about its input (besides the noisy image itself)."""

    modality: str                       # "CT" (HU) or "MR" (fraction of the reference maximum)
    case: str
    level: str                          # "dose 0.25" / "std 5%"
    spacing: tuple[float, ...]          # mm per voxel, one per axis of the input
    noise_std: float                    # true std of the added noise (HU / fraction of max)
    noise_psd: np.ndarray | None = None  # CT 2D: E|fft2(noise)|^2 (numpy convention), in HU^2; None when no
    #                                       method that may use it is run (noisy / bm3d / nlm only)
    time_budget_s: float = 600.0
    seed: int = 0
    extra: dict = field(default_factory=dict)


@dataclass
class Method:
    name: str
    fn: Callable[[np.ndarray, Context], np.ndarray]
    modalities: tuple[str, ...] = ("CT", "MR")
    dims: tuple[int, ...] = (2, 3)        # input dimensionalities it takes; 2D-only methods run slice by slice


REGISTRY: dict[str, Method] = {}


def register(name: str, fn: Callable | None = None, *, modalities: Sequence[str] = ("CT", "MR"),
             dims: Sequence[int] = (2, 3)):
    """Add a method ``fn(noisy, context) -> denoised`` (usable as a decorator)."""
    def add(f):
        REGISTRY[name] = Method(name, f, tuple(modalities), tuple(dims))
        return f
    return add(fn) if fn is not None else add


def _scale(ctx: Context) -> tuple[float, float]:
    """(offset, range) mapping the modality's unit to about [0, 1] for the classical denoisers."""
    return (CT_WINDOW[0], CT_WINDOW[1] - CT_WINDOW[0]) if ctx.modality == "CT" else (0.0, 1.0)


def _numpy_compat() -> None:
    """bm4d 4.2.5 (which bm3d calls) uses ``np.trapz`` on its coloured-noise path; NumPy 2.4 removed it."""
    if not hasattr(np, "trapz"):
        np.trapz = np.trapezoid


@register("noisy")
def _noisy(x, ctx):
    return x


@register("bm3d", dims=(2,))
def _bm3d_white(x, ctx):
    import bm3d

    off, rng = _scale(ctx)
    return bm3d.bm3d((x - off) / rng, ctx.noise_std / rng) * rng + off


@register("bm3d_psd", modalities=("CT",), dims=(2,))
def _bm3d_psd(x, ctx):
    import bm3d

    _numpy_compat()
    off, rng = _scale(ctx)
    return bm3d.bm3d((x - off) / rng, ctx.noise_psd / rng**2) * rng + off


@register("nlm")
def _nlm(x, ctx):
    from skimage.restoration import denoise_nl_means

    off, rng = _scale(ctx)
    s = ctx.noise_std / rng
    return denoise_nl_means((x - off) / rng, h=0.8 * s, sigma=s, fast_mode=True, patch_size=5, patch_distance=6,
                            channel_axis=None) * rng + off


@register("bm4d", modalities=("MR",), dims=(3,))
def _bm4d(x, ctx):
    import bm4d

    _numpy_compat()
    off, rng = _scale(ctx)
    return bm4d.bm4d((x - off) / rng, ctx.noise_std / rng) * rng + off


METHOD_LABELS = {"noisy": "noisy input", "bm3d": "BM3D (white, true std)", "bm3d_psd": "BM3D (true noise PSD)",
                 "nlm": "NLM (true std)", "bm4d": "BM4D (true std)"}


def apply(method: Method, noisy: np.ndarray, ctx: Context) -> tuple[np.ndarray, float]:
    """Run ``method`` (slice by slice if it only takes 2D), return (output, wall seconds)."""
    start = time.perf_counter()
    if noisy.ndim == 3 and 3 not in method.dims:
        sub = Context(**{**asdict(ctx), "spacing": ctx.spacing[:2]})
        out = np.stack([method.fn(noisy[..., k], sub) for k in range(noisy.shape[2])], -1)
    else:
        out = method.fn(noisy, ctx)
    return np.asarray(out, dtype=np.float64), time.perf_counter() - start


# ------------------------------------------------------------------------------------ data
@dataclass
class Case:
    modality: str
    name: str
    image: np.ndarray                   # reference: HU (CT) or fraction of the maximum (MR); (H, W[, D])
    spacing: tuple[float, ...]
    note: str = ""


def _dicom(name: str) -> tuple[np.ndarray, tuple[float, float], object]:
    import pydicom
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name)
    if path is None:
        raise FileNotFoundError(f"pydicom test file {name} is not installed")
    ds = pydicom.dcmread(path)
    img = ds.pixel_array.astype(np.float64) * float(ds.get("RescaleSlope", 1)) + float(ds.get("RescaleIntercept", 0))
    return img, tuple(float(v) for v in ds.PixelSpacing), ds


def ct_cases(quick: bool) -> list[Case]:
    names = ["CT_small.dcm"] if quick else ["J2K_pixelrep_mismatch.dcm", "693_J2KI.dcm", "CT_small.dcm"]
    notes = {"693_J2KI.dcm": "lossy JPEG 2000: its own noise is mostly compressed away",
             "CT_small.dcm": "a crop: the body fills the field of view, so rays are shorter than through the whole neck",
             "J2K_pixelrep_mismatch.dcm": ""}
    out = []
    for n in names:
        hu, spacing, _ = _dicom(n)
        out.append(Case("CT", n.removesuffix(".dcm"), np.maximum(hu, -1000.0), spacing, notes[n]))   # outside the scan circle: air
    return out


def nilearn_t1_path() -> Path | None:
    """The 1 mm MNI152 (ICBM 2009a) T1 template file inside an installed nilearn, without importing nilearn."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
    return path if path.exists() else None


def mni_slab(num_slices: int = 32) -> Case | None:
    """The template as (H anterior -> posterior, W right -> left, D inferior -> superior), max 1, cropped to the
    brain (+ 4 voxels), ``num_slices`` axial slices centred 10 mm above the template's centre (ventricles)."""
    path = nilearn_t1_path()
    if path is None:
        return None
    import nibabel as nib

    img = nib.as_closest_canonical(nib.load(str(path)))          # RAS: x -> right, y -> anterior, z -> superior
    data = np.asarray(img.get_fdata(), dtype=np.float64)
    data = data[::-1, ::-1, :].transpose(1, 0, 2)                  # rows anterior -> posterior, columns right -> left
    data /= data.max()
    nz = np.argwhere(data > 0.02)
    lo, hi = np.maximum(nz.min(0) - 4, 0), np.minimum(nz.max(0) + 5, data.shape)
    centre = (lo[2] + hi[2]) // 2 + 10
    z0 = max(lo[2], centre - num_slices // 2)
    vol = data[lo[0]:hi[0], lo[1]:hi[1], z0:z0 + num_slices]
    spacing = tuple(float(s) for s in img.header.get_zooms()[:3])
    return Case("MR", f"MNI152 T1 1 mm ({vol.shape[0]}x{vol.shape[1]}x{vol.shape[2]})", np.ascontiguousarray(vol),
                (spacing[1], spacing[0], spacing[2]), "average of 152 subjects: smoother, less texture than one scan")


def mr_cases(quick: bool) -> list[Case]:
    out = []
    names = ["MR_small.dcm"] if quick else ["examples_overlay.dcm", "MR_small.dcm"]
    if not quick:
        slab = mni_slab()
        if slab is not None:
            out.append(slab)
    for n in names:
        img, spacing, _ = _dicom(n)
        out.append(Case("MR", n.removesuffix(".dcm"), img / img.max(), spacing, "a real slice: its own noise stays in the reference"))
    return out


# ------------------------------------------------------------------------------------ CT simulation
class CTSimulator:
    """Projection-domain dose reduction of a real slice with scikit-image's parallel-beam radon / iradon."""

    def __init__(self, hu: np.ndarray, spacing: Sequence[float], num_views: int = 720, filter_name: str = "hann"):
        from skimage.transform import radon

        if abs(spacing[0] - spacing[1]) > 1e-3 * spacing[0] or hu.shape[0] != hu.shape[1]:
            raise ValueError("CTSimulator needs square pixels and a square image")
        self.shape, self.pixel = hu.shape, float(spacing[0])
        self.theta = np.linspace(0.0, 180.0, num_views, endpoint=False)
        self.filter_name = filter_name
        mu_px = np.clip(MU_WATER * (1 + hu / 1000.0), 0.0, None) * self.pixel       # per pixel: radon sums pixels
        self.p = radon(mu_px, self.theta, circle=False)                             # line integrals (dimensionless)
        self.ep = np.exp(self.p)

    def reconstruct(self, dp: np.ndarray) -> np.ndarray:
        """HU image of a sinogram perturbation (FBP is linear: only the noise is reconstructed)."""
        from skimage.transform import iradon

        mu_px = iradon(dp, self.theta, output_size=self.shape[0], circle=False, filter_name=self.filter_name)
        return 1000.0 * mu_px / self.pixel / MU_WATER

    def variance(self, dose: float | None, i0: float) -> np.ndarray:
        """Sinogram noise variance: the Yu et al. increment for dose fraction ``dose``, or (None) a whole
        full-dose acquisition from noise-free data."""
        e = ELECTRONIC_STD**2 * self.ep / i0
        if dose is None:
            return self.ep / i0 * (1 + e)
        return (1 - dose) / dose * self.ep / i0 * (1 + (1 + dose) / dose * e)

    def noise(self, dose: float | None, i0: float, rng: np.random.Generator) -> np.ndarray:
        return self.reconstruct(np.sqrt(self.variance(dose, i0)) * rng.standard_normal(self.p.shape))


def _local_std(img: np.ndarray, size: int = 7) -> tuple[np.ndarray, np.ndarray]:
    from scipy import ndimage

    m = ndimage.uniform_filter(img, size)
    m2 = ndimage.uniform_filter(img * img, size)
    return m, np.sqrt(np.clip(m2 - m * m, 0.0, None))


def flat_tissue(hu: np.ndarray) -> np.ndarray:
    """Centres of 7 x 7 patches whose mean is soft tissue (-100..100 HU) and whose 15 x 15 neighbourhood is too."""
    from scipy import ndimage

    m, _ = _local_std(hu)
    soft = (m > -100) & (m < 100)
    return ndimage.binary_erosion(soft, iterations=4)


def reference_noise(hu: np.ndarray, floor: float = 3.0) -> float:
    """The reference's own noise: 25th percentile of 7 x 7 local stds in flat soft tissue, at least ``floor`` HU."""
    _, s = _local_std(hu)
    flat = flat_tissue(hu)
    return max(float(np.percentile(s[flat], 25)), floor) if flat.any() else floor


def calibrate_i0(sim: CTSimulator, hu: np.ndarray, target: float, rng: np.random.Generator, i0: float = 1e5) -> float:
    """Photons per bin at which a full-dose acquisition has ``target`` HU of noise where ``reference_noise``
    measures it (quantum noise scales as 1 / sqrt(i0); one fixed-point refinement for the electronic term)."""
    flat = flat_tissue(hu)
    for _ in range(2):
        _, s = _local_std(sim.noise(None, i0, rng))
        measured = float(np.percentile(s[flat], 25)) if flat.any() else float(s.mean())
        i0 *= (measured / target) ** 2
    return i0


# ------------------------------------------------------------------------------------ metrics
def body_mask(hu: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    mask = ndimage.binary_opening(hu > -500, structure=np.ones((5, 5)))
    labels, n = ndimage.label(mask)
    if n:
        mask = labels == 1 + int(np.argmax(ndimage.sum_labels(mask, labels, np.arange(1, n + 1))))
    return ndimage.binary_fill_holes(mask)


def foreground_mask(ref: np.ndarray) -> np.ndarray:
    return ref > 0.1 * ref.max()


def psnr(out: np.ndarray, ref: np.ndarray, mask: np.ndarray, window: tuple[float, float]) -> float:
    lo, hi = window
    err = np.clip(out, lo, hi) - np.clip(ref, lo, hi)
    mse = float(np.mean(err[mask] ** 2))
    return 10 * math.log10((hi - lo) ** 2 / max(mse, 1e-20))


def ssim(out: np.ndarray, ref: np.ndarray, mask: np.ndarray, window: tuple[float, float]) -> float:
    from skimage.metrics import structural_similarity

    lo, hi = window
    _, smap = structural_similarity(np.clip(out, lo, hi), np.clip(ref, lo, hi), data_range=hi - lo,
                                    gaussian_weights=True, sigma=1.5, use_sample_covariance=False, full=True)
    return float(smap[mask].mean())


# ------------------------------------------------------------------------------------ figures
def _crop_box(mask2d: np.ndarray, size: int) -> tuple[slice, slice]:
    """A ``size``^2 crop centred on the mask's centre of mass (where the tissue is)."""
    cy, cx = (np.argwhere(mask2d).mean(0).astype(int) if mask2d.any() else np.array(mask2d.shape) // 2)
    size = min(size, *mask2d.shape)
    y0 = int(np.clip(cy - size // 2, 0, mask2d.shape[0] - size))
    x0 = int(np.clip(cx - size // 2, 0, mask2d.shape[1] - size))
    return slice(y0, y0 + size), slice(x0, x0 + size)


def write_panels(path: Path, rows: list[dict], window: tuple[float, float], title: str, max_bytes: int = 500_000) -> Path:
    """``rows`` of {title: (H, W) image, rows anterior -> posterior, columns patient's right -> left}; drawn in
    radiological orientation by monai-flow's figure writer, stored as 8-bit grey PNG under ``max_bytes``."""
    from PIL import Image

    from monai_flow.evaluation.reports import write_figure

    cols = max(len(r) for r in rows)
    for dpi in (100, 80, 64, 50, 40):
        write_figure(path, [{k: np.asarray(v).T for k, v in r.items()} for r in rows], window, title=title,
                     panel_size=min(4.0, 14.0 / cols), dpi=dpi)
        with Image.open(path) as im:
            grey = im.convert("L")
        grey.save(path, optimize=True)
        if path.stat().st_size <= max_bytes:
            break
    return path


# ------------------------------------------------------------------------------------ the benchmark
def _methods_for(names: Sequence[str], modality: str, ndim: int) -> list[Method]:
    out = []
    for n in names:
        m = REGISTRY[n]
        if modality in m.modalities and (ndim in m.dims or (ndim == 3 and 2 in m.dims)):
            out.append(m)
    return out


def run_ct(case: Case, methods: Sequence[str], quick: bool, seed: int, time_budget: float, img_dir: Path | None,
           log=print, reference_noise_hu: float | None = None) -> list[dict]:
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    sim = CTSimulator(case.image, case.spacing, num_views=180 if quick else 720)
    target = reference_noise(case.image) if reference_noise_hu is None else float(reference_noise_hu)
    i0 = calibrate_i0(sim, case.image, target, rng)
    mask = body_mask(case.image)
    log(f"  {case.name}: projector {time.perf_counter() - t0:.1f} s, reference noise {target:.1f} HU -> I0 {i0:.3g} per bin")
    rows, shown = [], {}
    for dose in CT_DOSES:
        noise = sim.noise(dose, i0, rng)
        psd = None
        if any(m not in ("noisy", "bm3d", "nlm") for m in methods):   # a method that may use the spectrum
            extra = [sim.noise(dose, i0, rng) for _ in range(2)]        # more realisations, for the spectrum only
            psd = np.mean([np.abs(np.fft.fft2(n)) ** 2 for n in [noise, *extra]], 0)
        noisy = case.image + noise
        std = float(noise[mask].std())
        ctx = Context("CT", case.name, f"dose {dose:g}", tuple(case.spacing), std, psd, time_budget, seed,
                      {"i0": i0, "reference_noise_hu": target})
        for m in _methods_for(methods, "CT", 2):
            out, secs = apply(m, noisy, ctx)
            row = {"modality": "CT", "case": case.name, "level": ctx.level, "dose": dose, "method": m.name,
                   "psnr": psnr(out, case.image, mask, CT_WINDOW), "psnr_soft": psnr(out, case.image, mask, SOFT_WINDOW),
                   "ssim": ssim(out, case.image, mask, CT_WINDOW), "seconds": secs, "noise_std": std, "i0": i0,
                   "reference_noise": target, "views": len(sim.theta)}
            rows.append(row)
            shown[(dose, m.name)] = out
            log(f"    dose {dose:g} {m.name:9s} PSNR {row['psnr']:.2f} / {row['psnr_soft']:.2f} dB, SSIM {row['ssim']:.4f}, {secs:.1f} s")
    if img_dir is not None:
        _ct_figure(case, shown, mask, img_dir, quick)
    return rows


def _figure_methods(shown: dict, level, first: Sequence[str], last: Sequence[str], columns: int = 5) -> list[str]:
    """Up to ``columns`` methods shown at ``level``: ``first`` baselines, then the plugged-in methods, then ``last``."""
    plugged = [n for (lv, n) in shown if lv == level and n not in (*first, *last)]
    return [n for n in (*first, *plugged, *last) if (level, n) in shown][:columns]


def _ct_figure(case: Case, shown: dict, mask: np.ndarray, img_dir: Path, quick: bool) -> None:
    names = _figure_methods(shown, CT_DOSES[0], ("noisy", "bm3d", "bm3d_psd"), ("nlm",))
    ys, xs = _crop_box(mask, max(64, case.image.shape[0] // 4))
    full = {"reference (full dose)": case.image, **{f"{METHOD_LABELS.get(n, n)}, dose {CT_DOSES[0]:g}": shown[(CT_DOSES[0], n)] for n in names}}
    zoom = [{f"zoom, {k.split(',')[0] if k.startswith('reference') else k}": v[ys, xs] for k, v in full.items()}]
    zoom.append({"zoom, reference": case.image[ys, xs],
                 **{f"zoom, {METHOD_LABELS.get(n, n)}, dose {CT_DOSES[1]:g}": shown[(CT_DOSES[1], n)][ys, xs] for n in names}})
    write_panels(img_dir / f"real_scans{'_quick' if quick else ''}_ct_{case.name}.png", [full, *zoom], SOFT_WINDOW,
                 f"{case.name} ({case.spacing[0]:.3f} mm), soft-tissue window [-160, 240] HU")


def run_mr(case: Case, methods: Sequence[str], quick: bool, seed: int, time_budget: float, img_dir: Path | None,
           log=print, levels: Sequence[float] = MR_LEVELS) -> list[dict]:
    import torch

    from monai_flow.physics import noncentral_chi_noise

    gen = torch.Generator().manual_seed(seed)
    ref = case.image
    mask = foreground_mask(ref)
    rows, shown = [], {}
    for level in levels:
        std = level * float(ref.max())
        noisy = noncentral_chi_noise(torch.from_numpy(ref)[None], std, 1, gen)[0].double().numpy()
        ctx = Context("MR", case.name, f"std {100 * level:g}%", tuple(case.spacing), std, None, time_budget, seed)
        for m in _methods_for(methods, "MR", ref.ndim):
            out, secs = apply(m, noisy, ctx)
            row = {"modality": "MR", "case": case.name, "level": ctx.level, "std": level, "method": m.name,
                   "psnr": psnr(out, ref, mask, (0.0, 1.0)), "ssim": ssim(out, ref, mask, (0.0, 1.0)), "seconds": secs,
                   "noise_std": std, "dims": ref.ndim}
            rows.append(row)
            shown[(level, m.name)] = out
            log(f"    {ctx.level} {m.name:9s} PSNR {row['psnr']:.2f} dB, SSIM {row['ssim']:.4f}, {secs:.1f} s")
    if img_dir is not None and {MR_LEVELS[1], MR_LEVELS[2]} <= set(levels):  # the figure shows these two
        k = ref.shape[2] // 2 if ref.ndim == 3 else None
        sl = (lambda a: a[..., k]) if k is not None else (lambda a: a)
        names = _figure_methods(shown, MR_LEVELS[1], ("noisy", "bm4d", "bm3d"), ("nlm",))
        ys, xs = _crop_box(sl(mask), max(48, ref.shape[0] // 3))
        full = {"reference": sl(ref), **{f"{METHOD_LABELS.get(n, n)}, std {100 * MR_LEVELS[1]:g}%": sl(shown[(MR_LEVELS[1], n)]) for n in names}}
        zoom = [{f"zoom, {key}": v[ys, xs] for key, v in full.items()},
                {"zoom, reference": sl(ref)[ys, xs],
                 **{f"zoom, {METHOD_LABELS.get(n, n)}, std {100 * MR_LEVELS[2]:g}%": sl(shown[(MR_LEVELS[2], n)])[ys, xs] for n in names}}]
        safe = case.name.split(" ")[0].replace("/", "_")
        write_panels(img_dir / f"real_scans{'_quick' if quick else ''}_mr_{safe}.png", [full, *zoom], (0.0, 1.0),
                     f"{case.name}{', middle slice' if k is not None else ''} ({case.spacing[0]:.2f} mm), full range")
    return rows


def table(rows: list[dict], modality: str) -> str:
    if modality == "CT":
        head = ("| case | dose | method | PSNR body [-1000, 1000] (dB) | PSNR body [-160, 240] (dB) | SSIM body | s |",
                "|---|---|---|---|---|---|---|")
        fmt = lambda r: (f"| {r['case']} | {r['dose']:g} | {METHOD_LABELS.get(r['method'], r['method'])} | {r['psnr']:.2f} | "  # noqa: E731
                         f"{r['psnr_soft']:.2f} | {r['ssim']:.4f} | {r['seconds']:.1f} |")
    else:
        head = ("| case | noise std | method | PSNR foreground (dB) | SSIM foreground | s |", "|---|---|---|---|---|---|")
        fmt = lambda r: (f"| {r['case']} | {100 * r['std']:g}% | {METHOD_LABELS.get(r['method'], r['method'])} | "  # noqa: E731
                         f"{r['psnr']:.2f} | {r['ssim']:.4f} | {r['seconds']:.1f} |")
    return "\n".join([*head, *(fmt(r) for r in rows if r["modality"] == modality)])


def load_plugin(path: str) -> None:
    """Execute ``path`` and register its ``METHODS`` ({name: fn} or {name: Method})."""
    spec = importlib.util.spec_from_file_location(Path(path).stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    modalities, dims = getattr(module, "MODALITIES", {}), getattr(module, "DIMS", {})
    for name, fn in getattr(module, "METHODS", {}).items():
        REGISTRY[name] = fn if isinstance(fn, Method) else Method(name, fn, tuple(modalities.get(name, ("CT", "MR"))),
                                                                  tuple(dims.get(name, (2, 3))))
    METHOD_LABELS.update(getattr(module, "LABELS", {}))


def run(quick: bool = False, methods: Sequence[str] | None = None, out: str | os.PathLike = ROOT / "docs",
        modalities: Sequence[str] = ("CT", "MR"), seed: int = 0, time_budget: float = 600.0, figures: bool = True,
        log=print, ct_reference_noise: float | None = None, case_names: Sequence[str] | None = None,
        tag: str = "", mr_levels: Sequence[float] | None = None) -> list[dict]:
    """Run the benchmark; write tables (and figures) under ``out``; return the result rows.

    ``ct_reference_noise``: the full-dose noise (HU) the CT photon count is calibrated to (default: the
    noise each real slice shows, at least 3 HU); ``case_names``: run only these cases; ``tag``: added to
    the output file names; ``mr_levels``: MR noise levels (fractions of the maximum; default ``MR_LEVELS``)."""
    methods = list(methods or REGISTRY)
    unknown = [m for m in methods if m not in REGISTRY]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; registered: {sorted(REGISTRY)}")
    out = Path(out)
    res_dir, img_dir = out / "results", out / "img"
    res_dir.mkdir(parents=True, exist_ok=True)
    if figures:
        img_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    rows = []
    cases = (ct_cases(quick) if "CT" in modalities else []) + (mr_cases(quick) if "MR" in modalities else [])
    if case_names:
        cases = [c for c in cases if any(c.name.startswith(n) for n in case_names)]
    for case in cases:
        log(f"[{time.perf_counter() - start:6.0f} s] {case.modality} {case.name} {case.image.shape} at {case.spacing} mm")
        if case.modality == "CT":
            rows += run_ct(case, methods, quick, seed, time_budget, img_dir if figures else None, log, ct_reference_noise)
        else:
            rows += run_mr(case, methods, quick, seed, time_budget, img_dir if figures else None, log,
                           tuple(mr_levels or MR_LEVELS))
    import torch

    env = (f"{platform.machine()} CPU, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads); "
           f"total {time.perf_counter() - start:.0f} s")
    suffix = ("_quick" if quick else "") + (f"_{tag}" if tag else "")
    for modality in modalities:
        sel = [r for r in rows if r["modality"] == modality]
        if not sel:
            continue
        notes = "\n".join(f"- {c.name}: {c.note}" for c in cases if c.modality == modality and c.note)
        extra = ""
        if modality == "CT":
            extra = "\n".join(f"- {c}: I0 {r['i0']:.3g} photons per bin ({r['views']} views), reference noise "
                              f"{r['reference_noise']:.1f} HU; simulated noise std in the body: "
                              + ", ".join(f"dose {q['dose']:g} {q['noise_std']:.1f} HU" for q in sel
                                          if q["case"] == c and q["method"] == sel[0]["method"])
                              for c, r in {r["case"]: r for r in sel}.items())
        text = (f"# Real-scan denoising benchmark ({modality}{', quick' if quick else ''})\n\n"
                f"`python benchmarks/real_scans.py{' --quick' if quick else ''}` (seed {seed}): {env}.\n\n"
                f"{table(rows, modality)}\n\n{extra}\n{notes}\n")
        (res_dir / f"real_scans{suffix}_{modality.lower()}.md").write_text(text)
        (res_dir / f"real_scans{suffix}_{modality.lower()}.json").write_text(json.dumps(sel, indent=1))
    return rows


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one CT slice (CT_small) and one MR slice (MR_small)")
    parser.add_argument("--methods", nargs="+", help=f"default: all registered ({', '.join(REGISTRY)})")
    parser.add_argument("--plugin", action="append", default=[], help="a .py file defining METHODS = {name: fn}")
    parser.add_argument("--modalities", nargs="+", default=["CT", "MR"], choices=["CT", "MR"])
    parser.add_argument("--out", default=str(ROOT / "docs"), help="writes <out>/results/*.md and <out>/img/*.png")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--time-budget", type=float, default=600.0, help="seconds a method may use per image (advisory)")
    parser.add_argument("--no-figures", dest="figures", action="store_false")
    parser.add_argument("--ct-reference-noise", type=float, metavar="HU",
                        help="calibrate the CT photon count to this full-dose noise (default: each slice's own noise)")
    parser.add_argument("--cases", nargs="+", help="only the cases whose names start with these (e.g. 693_J2KI MNI152)")
    parser.add_argument("--tag", default="", help="suffix of the output files")
    parser.add_argument("--mr-levels", type=float, nargs="+", metavar="FRACTION",
                        help=f"MR Rician noise std as fractions of the maximum (default {' '.join(map(str, MR_LEVELS))})")
    args = parser.parse_args(argv)
    for p in args.plugin:
        load_plugin(p)
    return run(args.quick, args.methods, args.out, args.modalities, args.seed, args.time_budget, args.figures,
               ct_reference_noise=args.ct_reference_noise, case_names=args.cases, tag=args.tag, mr_levels=args.mr_levels)


if __name__ == "__main__":
    sys.exit(0 if main() is not None else 1)
