"""Discover NIfTI files, DICOM series and MONAI datalists, and split them into MONAI datalists.

Every item has the same keys, so batches of mixed formats collate:
``{"image": path | [dicom files], "name": str, "format": "nifti" | "dicom", "series_uid": str}``.
``image`` is a NIfTI path, a DICOM series folder (the folder holds exactly that series), a single
DICOM file (Enhanced multi-frame or one slice), or the sorted list of files of one series when a
folder holds several. Read items with ``LoadImaged("image", reader="monai_flow.data.ITKSeriesReader")``
(folders and single files also read with MONAI's ``ITKReader``; lists need ``ITKSeriesReader``).
"""

from __future__ import annotations

import gzip
import json
import os
import struct
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom

from .dicom import _is_dicom, list_dicom_series

__all__ = ["NIFTI_SUFFIXES", "build_datalist", "find_images", "load_datalist", "split_datalist"]

NIFTI_SUFFIXES = (".nii", ".nii.gz")
DATALIST_NAME = "datalist.json"
PATH_KEYS = ("image", "label", "mask", "reference")
_MAX_LISTED = 20


def _is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def _gzip_size(path: Path) -> int:
    """Uncompressed size of a gzip file (decompresses; raises on a truncated stream)."""
    size = 0
    with gzip.open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            size += len(chunk)
    return size


def check_nifti(path: str | os.PathLike, finite: bool = False) -> None:
    """Raise ``ValueError`` naming ``path`` if its header is invalid or its data is truncated.

    Uncompressed files are checked by size; ``.nii.gz`` by the gzip trailer's ISIZE, with a full
    decompression only when that disagrees (multi-member or truncated streams). ``finite=True``
    also reads the data and refuses NaN/Inf voxels of float files: ITK's reader, which the
    bundles load with, silently turns NaN into 0.
    """
    path = Path(path)
    try:
        img = nib.load(str(path))
        hdr = img.header
        expected = int(hdr.get_data_offset()) + int(np.prod(hdr.get_data_shape())) * hdr.get_data_dtype().itemsize
    except Exception as e:
        raise ValueError(f"unreadable NIfTI file {path}: {e}") from e
    if path.name.lower().endswith(".nii.gz"):
        with open(path, "rb") as f:
            f.seek(-4, os.SEEK_END)
            isize = struct.unpack("<I", f.read(4))[0]
        if isize != expected % 2**32:
            try:
                got = _gzip_size(path)
            except (EOFError, OSError, gzip.BadGzipFile) as e:
                raise ValueError(f"truncated NIfTI file {path}: {e}") from e
            if got < expected:
                raise ValueError(f"truncated NIfTI file {path}: {got} bytes of data, expected {expected}.")
    elif path.stat().st_size < expected:
        raise ValueError(f"truncated NIfTI file {path}: {path.stat().st_size} bytes, expected {expected}.")
    if finite and np.issubdtype(hdr.get_data_dtype(), np.floating):  # integers cannot hold NaN/Inf
        bad = int((~np.isfinite(np.asanyarray(img.dataobj))).sum())
        if bad:
            raise ValueError(f"NIfTI file {path} has {bad} NaN/Inf voxel(s) of {int(np.prod(hdr.get_data_shape()))}; "
                             "fix or mask them first.")


def _listing(paths: Sequence, root: Path) -> str:
    names = [os.path.relpath(p, root) for p in paths]
    more = f" ... and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else ""
    return ", ".join(names[:_MAX_LISTED]) + more


def _name(path: Path, root: Path) -> str:
    rel = os.path.relpath(path, root)
    for ext in (".nii.gz", ".nii", ".dcm"):
        if rel.lower().endswith(ext):
            rel = rel[: -len(ext)]
    return "root" if rel in (".", "") else rel.replace(os.sep, "/")


def find_images(dataset_dir: str | os.PathLike, recursive: bool = True, check: bool = True,
                check_finite: bool = False) -> list[dict]:
    """MONAI items for every NIfTI file and DICOM series under ``dataset_dir`` (a folder or a file).

    A single NIfTI or DICOM file gives one item. DICOM files are grouped by SeriesInstanceUID
    (:func:`list_dicom_series`): a series that is the only one directly in its folder is
    referenced by the folder, one of several by its sorted file list; each Enhanced multi-frame
    file is an item of its own. ``check`` validates NIfTI sizes (truncation); ``check_finite``
    also reads every NIfTI file and refuses NaN/Inf voxels (:func:`check_nifti`).

    Raises:
        FileNotFoundError: ``dataset_dir`` does not exist.
        ValueError: the folder is empty, holds no NIfTI/DICOM image (the files found are
            listed), or holds unreadable NIfTI/DICOM files (listed).
    """
    root = Path(dataset_dir).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"dataset path {root} does not exist.")
    if root.is_file():
        if _is_nifti(root):
            if check:
                check_nifti(root, finite=check_finite)
            return [_item(str(root), _name(root, root.parent), "nifti", "")]
        if _is_dicom(root):
            uid = str(pydicom.dcmread(root, stop_before_pixels=True).get("SeriesInstanceUID", ""))
            return [_item(str(root), _name(root, root.parent), "dicom", uid)]
        raise ValueError(f"{root} is neither a NIfTI (.nii, .nii.gz) nor a DICOM file.")
    files = sorted(p for p in (root.rglob("*") if recursive else root.iterdir()) if p.is_file())
    files = [p for p in files if not any(part.startswith(".") for part in p.relative_to(root).parts)]
    if not files:
        raise ValueError(f"dataset folder {root} is empty: expected NIfTI files (.nii, .nii.gz) or DICOM series.")
    items, bad = [], []
    for p in (p for p in files if _is_nifti(p)):
        try:
            if check:
                check_nifti(p, finite=check_finite)
            items.append(_item(str(p), _name(p, root), "nifti", ""))
        except ValueError as e:
            bad.append(str(e))
    report: dict = {}
    series = list_dicom_series(root, recursive=recursive, report=report)
    bad += [f"unreadable DICOM file {u}" for u in report["unreadable"]]
    for uid, series_files in series.items():
        items.extend(_series_items(uid, [Path(f) for f in series_files], root, set(report["multiframe"])))
    if bad:
        raise ValueError(f"unreadable files in {root}: " + "; ".join(bad[:_MAX_LISTED]))
    if not items:
        raise ValueError(f"no NIfTI (.nii, .nii.gz) or DICOM image in {root}; found {len(files)} other "
                         f"file(s): {_listing(files, root)}")
    names = [it["name"] for it in items]
    if len(set(names)) != len(names):  # e.g. a.nii and a.nii.gz: keep names unique
        for i, it in enumerate(items):
            if names.count(it["name"]) > 1:
                it["name"] = f"{it['name']}_{i}"
    return items


def _item(image, name: str, fmt: str, series_uid: str) -> dict:
    return {"image": image, "name": name, "format": fmt, "series_uid": series_uid}


def _series_items(uid: str, files: list[Path], root: Path, multiframe: set[str]) -> list[dict]:
    multi = [f for f in files if str(f) in multiframe]
    items = [_item(str(f), _name(f, root), "dicom", uid) for f in multi]
    single = [f for f in files if f not in multi]
    if not single:
        return items
    folders = {f.parent for f in single}
    if len(folders) == 1:
        folder = folders.pop()
        direct = {p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and _is_dicom(p)}
        if direct == set(single) and len(single) > 1:
            return [*items, _item(str(folder), _name(folder, root), "dicom", uid)]
    if len(single) == 1:
        return [*items, _item(str(single[0]), _name(single[0], root), "dicom", uid)]
    ds = pydicom.dcmread(single[0], stop_before_pixels=True)
    base = _name(single[0].parent, root)
    tag = f"series{ds.get('SeriesNumber', '')}_{uid[-8:]}".replace(".", "")
    return [*items, _item([str(f) for f in single], f"{base}/{tag}" if base != "root" else tag, "dicom", uid)]


def _resolve(value, base: Path):
    if isinstance(value, str):
        return value if os.path.isabs(value) else str((base / value).resolve())
    if isinstance(value, (list, tuple)):
        return [_resolve(v, base) for v in value]
    return value


def load_datalist(path: str | os.PathLike, path_keys: Sequence[str] = PATH_KEYS) -> dict[str, list[dict]]:
    """Sections (``training``, ``validation``, ``testing``, ...) of a MONAI datalist JSON.

    Relative paths under ``path_keys`` (strings or lists of strings) are resolved against the
    JSON's folder; items given as bare strings become ``{"image": path}``. Referenced files are
    checked to exist (``FileNotFoundError`` names the item and key).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"datalist {path} does not exist.")
    try:
        content = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"datalist {path} is not valid JSON: {e}") from e
    if not isinstance(content, dict) or not any(isinstance(v, list) for v in content.values()):
        raise ValueError(f"datalist {path} must be a JSON object with lists such as 'training', 'validation', "
                         f"'testing'; got {type(content).__name__} with keys {list(content)[:10] if isinstance(content, dict) else ''}.")
    sections: dict[str, list[dict]] = {}
    for section, items in content.items():
        if not isinstance(items, list):
            continue
        out = []
        for i, it in enumerate(items):
            it = {"image": it} if isinstance(it, str) else dict(it)
            if "image" not in it:
                raise ValueError(f"datalist {path}: item {i} of '{section}' has no 'image' key: {it}.")
            for key in path_keys:
                if key in it:
                    it[key] = _resolve(it[key], path.parent)
                    for p in it[key] if isinstance(it[key], list) else [it[key]]:
                        if isinstance(p, str) and not Path(p).exists():
                            raise FileNotFoundError(f"datalist {path}: '{section}'[{i}]['{key}'] = {p} does not exist.")
            out.append(it)
        sections[section] = out
    return sections


def split_datalist(items: Sequence[dict], val_fraction: float = 0.2, seed: int = 0,
                   num_val: int | None = None) -> tuple[list[dict], list[dict]]:
    """Deterministic (``seed``) shuffle split into (training, validation); each non-empty when
    there are at least two items (a single item goes to training only)."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}.")
    n = len(items)
    k = num_val if num_val is not None else int(round(val_fraction * n))
    k = min(max(k, 1 if n >= 2 and (val_fraction > 0 or num_val) else 0), n - 1) if n else 0
    order = np.random.default_rng(seed).permutation(n)
    val = sorted(order[:k].tolist())
    train = sorted(order[k:].tolist())
    return [dict(items[i]) for i in train], [dict(items[i]) for i in val]


def build_datalist(dataset_dir: str | os.PathLike, val_fraction: float = 0.2, seed: int = 0,
                   num_val: int | None = None, recursive: bool = True) -> dict[str, list[dict]]:
    """``{"training", "validation", "testing"}`` MONAI datalists from a folder, file or JSON.

    - a datalist JSON, or a folder holding ``datalist.json`` (e.g. a demo folder): its sections;
      a missing ``validation`` is split off ``training`` and a missing ``testing`` is
      ``validation``.
    - otherwise :func:`find_images`: every image is in ``testing`` (inference processes
      everything), and ``training``/``validation`` are a deterministic split of them.
    """
    path = Path(dataset_dir).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"dataset path {path} does not exist.")
    json_path = path if path.is_file() and path.suffix.lower() == ".json" else path / DATALIST_NAME
    if json_path.is_file():
        sections = load_datalist(json_path)
        if "training" not in sections and "validation" not in sections and "testing" not in sections:
            raise ValueError(f"datalist {json_path} has none of 'training', 'validation', 'testing': "
                             f"{sorted(sections)}.")
        if "validation" not in sections:
            sections["training"], sections["validation"] = split_datalist(
                sections.get("training", []), val_fraction, seed, num_val)
        sections.setdefault("training", [])
        sections.setdefault("testing", [dict(it) for it in sections["validation"]])
        return sections
    items = find_images(path, recursive=recursive)
    train, val = split_datalist(items, val_fraction, seed, num_val)
    return {"training": train, "validation": val, "testing": [dict(it) for it in items]}
