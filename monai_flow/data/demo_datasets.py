"""Demo datasets synthesized on first use: ``prepare_demo_data(kind, demo_dir)``.

Layout of ``demo_dir`` (written under a temporary name and renamed when complete, so a folder
is either absent or whole; ``.monai_flow_demo.json`` is written last):

    images/      inputs: CT as DICOM series folders and NIfTI (alternating), MR / MOTFM as NIfTI
    masks/       MOTFM only: label masks (0 air, 1 body, 2 lung, 3 bone, 4 lesion), uint8 NIfTI
    reference/   noise-free phantoms, same grid and affine as images/ (evaluation only)
    datalist.json   training / validation / testing (testing items add "reference")
    demo_info.json  generation parameters and the noise level of every volume

Kinds: ``ct_denoise`` (clinical-size chest sections, 512 x 512 at about 0.74 mm, noisy references
at doses 25..100% of ``i0``), ``ct_restore`` (128 x 128 sections at about 3 mm, full-dose
acquisitions at ``i0``: the training pipeline simulates the low-dose inputs), ``mr_denoise``
(1 mm brain slabs, 192 x 224 x 64, with Rician noise at 1..5% of the maximum), ``motfm_generation``
(2D 64x64 CT slices with masks, class ``label`` 1 = lung lesion present, 0 = absent),
``motfm_generation_3d`` (the same as 24 small 32x32x16 volumes, for the 3D MOTFM configuration and
its tests). The phantoms (:mod:`monai_flow.data.phantoms`) have realistic texture and
partial-volume edges; masks come from their tissue labels.

Command line: ``python -m monai_flow.data.demo_datasets KIND DIR [--seed N]``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import torch

from monai_flow.atomic import write_atomically, write_folder_atomically

from .dicom import write_dicom_series
from .phantoms import CT_LABELS, ct_default_spacing, ct_phantom, mr_default_spacing, mr_phantom

__all__ = ["DEMO_KINDS", "DEMO_MARKER", "prepare_demo_data", "write_nifti"]

DEMO_KINDS = ("ct_denoise", "ct_restore", "mr_denoise", "motfm_generation", "motfm_generation_3d")
DEMO_MARKER = ".monai_flow_demo.json"
DEMO_VERSION = 2
CT_I0 = 1e6  # ct_denoise full-dose photons per detector bin and view (about 19 HU in the body at 0.74 mm)
CT_RESTORE_I0 = 1e5  # ct_restore (128 x 128 at about 3 mm)
CT_SLICES = 6  # slices per ct_denoise volume
MR_SHAPE = (192, 224, 64)  # X (R-L), Y (A-P), Z: a 1 mm brain slab (the head fills 192 x 224)
CT_ELECTRONIC_STD = 5.0
CT_DOSE_RANGE = (0.25, 1.0)
MR_STD_RANGE = (0.01, 0.05)  # fraction of the maximum
MASK_LABELS = {"air": 0, "body": 1, "lung": 2, "bone": 3, "lesion": 4}


def write_nifti(array, affine, path: Path, dtype=np.float32) -> Path:
    """Write ``array`` (X, Y[, Z], MONAI layout) with RAS ``affine`` to ``path`` atomically."""
    img = nib.Nifti1Image(np.asarray(array, dtype=dtype), np.asarray(affine, dtype=np.float64))
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    suffix = ".nii.gz" if path.name.endswith(".nii.gz") else path.suffix  # nibabel picks the format from it
    return write_atomically(path, lambda tmp: nib.save(img, tmp), suffix=suffix)


def _ras_affine(shape, spacing, flip_xy: bool = True) -> np.ndarray:
    """RAS affine of an axial volume centred on the origin; ``flip_xy`` gives the orientation
    DICOM readers return for a standard axial scan (LPS identity, RAS diag(-sx, -sy, sz))."""
    sign = np.array([-1.0, -1.0, 1.0]) if flip_xy else np.ones(3)
    aff = np.diag([*(sign * np.asarray(spacing, dtype=np.float64)), 1.0])
    aff[:3, 3] = -aff[:3, :3] @ ((np.asarray(shape, dtype=np.float64) - 1) / 2)
    return aff


def _stratified(rng: np.random.Generator, n: int, lo: float, hi: float) -> np.ndarray:
    """``n`` log-uniform values in [lo, hi], one per stratum in random order (heterogeneous)."""
    u = (rng.permutation(n) + rng.uniform(0.1, 0.9, n)) / n
    return np.exp(np.log(lo) + u * (np.log(hi) - np.log(lo)))


# ------------------------------------------------------------------------------------------- CT
def _ct(root: Path, kind: str, seed: int, num: int, size: int | None = None) -> dict:
    """ct_denoise: clinical-size chest sections (512 x 512 at about 0.74 mm, a few slices each) acquired at
    heterogeneous doses. ct_restore: the same anatomy at 128 x 128 (about 3 mm) and full dose."""
    from monai_flow.physics import CTScan, low_dose_ct_noise

    denoise = kind == "ct_denoise"
    full_i0 = CT_I0 if denoise else CT_RESTORE_I0
    scan = CTScan(i0=full_i0, electronic_std=CT_ELECTRONIC_STD)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    doses = _stratified(rng, num, *CT_DOSE_RANGE) if denoise else np.ones(num)
    volumes = []
    for i in range(num):
        side = size or (512 if denoise else 128)
        shape = (side, side, CT_SLICES) if denoise else (side, side, int(rng.integers(8, 13)))
        pixel = ct_default_spacing(shape)[0]
        spacing = (pixel, pixel, float(rng.choice([1.0, 2.0, 3.0] if denoise else [2.5, 3.0, 5.0])))
        clean = ct_phantom(shape, gen, spacing=pixel)  # (H=A-P, W=L-R, D)
        noise = low_dose_ct_noise(clean[None, None], float(doses[i]), spacing[:2], scan, input_noise="none",
                                  generator=gen)[0, 0]
        # MONAI layout (X = L-R, Y = A-P, Z)
        clean_x, noisy_x = clean.permute(1, 0, 2).numpy(), (clean + noise).permute(1, 0, 2).numpy()
        affine = _ras_affine(shape, spacing)
        name = f"ct_{i:03d}"
        body = clean_x > -900
        if i % 2 == 0:
            image = root / "images" / name
            write_dicom_series(np.round(noisy_x), image, affine, modality="CT",
                               series_description=f"monai-flow demo CT, {100 * doses[i]:.0f}% dose",
                               derivation_description=f"synthetic phantom, simulated acquisition (seed {seed})",
                               patient_id=f"DEMO-{name.upper()}", patient_name=f"demo^{name}")
            fmt, uid = "dicom", str(pydicom.dcmread(next(image.iterdir()), stop_before_pixels=True).SeriesInstanceUID)
        else:
            image = write_nifti(noisy_x, affine, root / "images" / f"{name}.nii.gz")
            fmt, uid = "nifti", ""
        reference = write_nifti(clean_x, affine, root / "reference" / f"{name}.nii.gz")
        volumes.append({
            "name": name, "image": str(image.relative_to(root)), "reference": str(reference.relative_to(root)),
            "format": fmt, "series_uid": uid, "shape": list(noisy_x.shape), "spacing_mm": [round(v, 4) for v in spacing],
            "dose_fraction": round(float(doses[i]), 4), "i0": full_i0 * float(doses[i]),
            "noise_std_hu": round(float((noisy_x - clean_x)[body].std()), 2),
        })
    info = {"modality": "CT", "unit": "HU", "i0_full_dose": full_i0, "electronic_std": CT_ELECTRONIC_STD,
            "input_noise": "none", "dose_range": list(CT_DOSE_RANGE) if denoise else [1.0, 1.0]}
    return {**info, "volumes": volumes}


# ------------------------------------------------------------------------------------------- MR
def _mr(root: Path, seed: int, num: int, shape: tuple[int, int, int] = MR_SHAPE) -> dict:
    """Brain slabs at 1 mm (``shape`` X, Y, Z = 192 x 224 x 64) with Rician noise at 1..5 % of the maximum."""
    from monai_flow.physics import noncentral_chi_noise

    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    levels = _stratified(rng, num, *MR_STD_RANGE)
    volumes = []
    for i in range(num):
        rows_cols = (shape[1], shape[0], shape[2])  # the phantom's (A-P, R-L, I-S)
        spacing = tuple(float(v) for v in mr_default_spacing(rows_cols[:2] + (rows_cols[0],)))  # the head fills the plane
        clean = mr_phantom(rows_cols, gen, spacing=spacing[0]).permute(1, 0, 2)  # X = R-L, Y = A-P, Z = I-S
        std = float(levels[i]) * float(clean.max())
        noisy = noncentral_chi_noise(clean[None], std, num_coils=1, generator=gen)[0]
        affine = _ras_affine(shape, spacing)
        name = f"mr_{i:03d}"
        image = write_nifti(noisy.numpy(), affine, root / "images" / f"{name}.nii.gz")
        reference = write_nifti(clean.numpy(), affine, root / "reference" / f"{name}.nii.gz")
        volumes.append({
            "name": name, "image": str(image.relative_to(root)), "reference": str(reference.relative_to(root)),
            "format": "nifti", "shape": list(clean.shape), "spacing_mm": [round(v, 4) for v in spacing],
            "noise_std": round(std, 5), "noise_fraction_of_max": round(float(levels[i]), 4),
        })
    return {"modality": "MR", "num_coils": 1, "relative_to": "max", "std_range": list(MR_STD_RANGE),
            "volumes": volumes}


# ---------------------------------------------------------------------------------------- MOTFM
def _lesion(hu: np.ndarray, lung: np.ndarray, rng: np.random.Generator, radius=(2.0, 4.0)) -> np.ndarray:
    """Disk (2D) or ball (3D) of radius ``radius`` px centred in the lung: a solid nodule."""
    centres = np.argwhere(lung)
    c = centres[int(rng.integers(len(centres)))]
    r = float(rng.uniform(*radius))
    grid = np.indices(hu.shape)
    return (sum((g - ci) ** 2 for g, ci in zip(grid, c)) <= r * r) & (hu > -1000)


def _motfm(root: Path, seed: int, num: int, three_d: bool = False) -> dict:
    """2D 64x64 slices (5 mm pixels), or with ``three_d`` small 32x32x16 volumes (10 mm voxels)
    for the 3D MOTFM configuration: masks, and class 1 = a lung nodule (disk / ball)."""
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    classes = rng.permutation(np.arange(num) % 2)
    shape = (32, 32, 16) if three_d else (64, 64)
    pixel = ct_default_spacing(shape)[0]
    spacing = (pixel, pixel, pixel) if three_d else (pixel, pixel)
    affine = _ras_affine(shape if three_d else (*shape, 1), spacing if three_d else (*spacing, 1.0))
    order = (1, 0, 2) if three_d else (1, 0)  # (H=A-P, W=L-R[, D]) -> MONAI layout (X, Y[, Z])
    images = []
    for i in range(num):
        hu, tissue = (t.numpy() for t in ct_phantom(shape, gen, return_labels=True))
        mask = np.zeros(hu.shape, np.uint8)
        mask[tissue != CT_LABELS["air"]] = MASK_LABELS["body"]
        lung = tissue == CT_LABELS["lung"]
        mask[lung] = MASK_LABELS["lung"]
        mask[tissue == CT_LABELS["bone"]] = MASK_LABELS["bone"]
        if classes[i] == 1:
            lesion = _lesion(hu, lung, rng, (1.5, 2.5) if three_d else (2.0, 4.0))
            hu[lesion] = 40.0 + 10.0 * rng.standard_normal(int(lesion.sum()))
            mask[lesion] = MASK_LABELS["lesion"]
        name = f"{'volume' if three_d else 'slice'}_{i:03d}"
        image = write_nifti(hu.transpose(order), affine, root / "images" / f"{name}.nii.gz")
        m = write_nifti(mask.transpose(order), affine, root / "masks" / f"{name}.nii.gz", dtype=np.uint8)
        images.append({"name": name, "image": str(image.relative_to(root)), "mask": str(m.relative_to(root)),
                       "label": int(classes[i]), "format": "nifti"})
    return {"modality": "CT", "unit": "HU", "spatial_dims": len(shape), "shape": list(shape), "spacing_mm": list(spacing),
            "classes": {"0": "no lesion", "1": "lung lesion"}, "mask_labels": MASK_LABELS, "volumes": images}


# ------------------------------------------------------------------------------------- datalist
def _datalist(kind: str, info: dict, seed: int) -> dict:
    vols = info["volumes"]
    motfm = kind.startswith("motfm_generation")
    n_val = 2 if not motfm else max(1, len(vols) // 6)
    order = np.random.default_rng(seed + 1).permutation(len(vols))
    val_ids = set(order[:n_val].tolist())

    def item(v: dict, testing: bool = False) -> dict:
        it = {"image": v["image"], "name": v["name"], "format": v["format"], "series_uid": v.get("series_uid", "")}
        if motfm:
            it.update(mask=v["mask"], label=v["label"])
        elif testing:
            it["reference"] = v["reference"]
        return it

    return {
        "training": [item(v) for i, v in enumerate(vols) if i not in val_ids],
        "validation": [item(v) for i, v in enumerate(vols) if i in val_ids],
        "testing": [item(v, True) for i, v in enumerate(vols) if i in val_ids],
    }


def _marker(demo_dir: Path) -> dict | None:
    try:
        return json.loads((demo_dir / DEMO_MARKER).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _result(demo_dir: Path) -> dict:
    from .datasets import build_datalist

    out = {"dataset_dir": str(demo_dir), "datalist_file": str(demo_dir / "datalist.json"),
           "info": json.loads((demo_dir / "demo_info.json").read_text())}
    out.update(build_datalist(demo_dir))
    return out


def prepare_demo_data(kind: str, demo_dir: str, seed: int = 0, num_images: int | None = None,
                      image_size: int | Sequence[int] | None = None) -> dict:
    """Synthesize the ``kind`` demo dataset into ``demo_dir`` unless it is already there.

    Args:
        kind: one of ``DEMO_KINDS``.
        demo_dir: target folder. It must not exist, be empty, or be a demo folder made by this
            function (has ``.monai_flow_demo.json``); anything else is refused (``FileExistsError``).
            A complete folder for the same kind, seed and size is reused as is.
        seed: generation seed (same seed, same data).
        num_images: number of volumes (default 8 CT, 4 MR, 24 MOTFM 3D) or 2D images (default 96 MOTFM).
        image_size: CT: the in-plane size (default 512 for ct_denoise, 128 for ct_restore; the pixel size
            follows so that the body fits); MR: the volume shape (X, Y, Z; default 192 x 224 x 64 at 1 mm). Smaller
            sizes make quick tests; other kinds ignore it.

    Returns:
        ``{"dataset_dir", "datalist_file", "info", "training", "validation", "testing"}`` with
        absolute paths (``build_datalist(demo_dir)``); ``info`` is ``demo_info.json``.
    """
    if kind not in DEMO_KINDS:
        raise ValueError(f"kind must be one of {DEMO_KINDS}, got {kind!r}.")
    demo_dir = Path(demo_dir).expanduser().absolute()
    num = int(num_images or {"ct_denoise": 8, "ct_restore": 8, "mr_denoise": 4, "motfm_generation": 96,
                             "motfm_generation_3d": 24}[kind])
    if num < 3:
        raise ValueError(f"num_images must be >= 3 (training and 2 validation), got {num}.")
    if image_size is not None and kind in ("ct_denoise", "ct_restore", "mr_denoise"):
        size = [int(v) for v in ([image_size] if isinstance(image_size, int) else image_size)]
        expected = 3 if kind == "mr_denoise" else 1
        if len(size) != expected or min(size) < 16:
            raise ValueError(f"image_size of {kind} must be {'a shape (X, Y, Z)' if expected == 3 else 'one in-plane size'} "
                             f"of at least 16, got {image_size!r}.")
        image_size = tuple(size) if expected == 3 else size[0]
    else:
        image_size = None
    wanted = {"kind": kind, "seed": int(seed), "num_images": num, "version": DEMO_VERSION, "image_size": image_size}
    if image_size is None:
        wanted.pop("image_size")
    marker = _marker(demo_dir)
    if marker == wanted:
        return _result(demo_dir)
    if demo_dir.exists() and marker is None and (not demo_dir.is_dir() or any(demo_dir.iterdir())):
        raise FileExistsError(f"{demo_dir} exists and is not a monai-flow demo folder (no {DEMO_MARKER}); "
                              "refusing to write demo data into it. Choose an empty or new folder.")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small tensors: one thread is many times faster than an oversubscribed pool

    def write(staging: Path) -> None:
        if kind in ("ct_denoise", "ct_restore"):
            info = _ct(staging, kind, seed, num, image_size)
        elif kind == "mr_denoise":
            info = _mr(staging, seed, num, image_size or MR_SHAPE)
        else:
            info = _motfm(staging, seed, num, three_d=kind == "motfm_generation_3d")
        info = {"kind": kind, "seed": int(seed), **info}
        (staging / "datalist.json").write_text(json.dumps(_datalist(kind, info, seed), indent=1))
        (staging / "demo_info.json").write_text(json.dumps(info, indent=1))
        (staging / DEMO_MARKER).write_text(json.dumps(wanted))  # last: marks completion

    try:
        # replaces an empty folder or an older demo of ours, refuses anything else, and accepts a
        # complete one installed meanwhile by another process (e.g. another DDP rank)
        write_folder_atomically(demo_dir, write, overwrite=lambda p: _marker(p) is not None,
                                keep=lambda p: _marker(p) == wanted)
    finally:
        torch.set_num_threads(threads)
    return _result(demo_dir)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Synthesize a monai-flow demo dataset.")
    parser.add_argument("kind", choices=DEMO_KINDS)
    parser.add_argument("demo_dir")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-images", type=int, default=None)
    parser.add_argument("--image-size", type=int, nargs="+", default=None, help="CT in-plane size, or MR shape X Y Z")
    args = parser.parse_args(argv)
    size = args.image_size[0] if args.image_size and len(args.image_size) == 1 else args.image_size
    out = prepare_demo_data(args.kind, args.demo_dir, seed=args.seed, num_images=args.num_images, image_size=size)
    print(f"{args.kind} demo data in {out['dataset_dir']}: {len(out['training'])} training, "
          f"{len(out['validation'])} validation, {len(out['testing'])} testing items.")


if __name__ == "__main__":
    main()
