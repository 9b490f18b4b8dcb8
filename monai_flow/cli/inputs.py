"""Finding and checking the command line's inputs: NIfTI files, DICOM series, folders of them.

Discovery is :func:`monai_flow.data.find_images` (folders are split by SeriesInstanceUID). The
checks here turn every problem into a message that names the input: truncated NIfTI, a DICOM
series of the wrong modality, a 2D image where a volume is needed, several channels, NaN/Inf.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import CLIError, InputError

__all__ = [
    "check_modality",
    "check_nifti_item",
    "check_volume",
    "discover",
    "dicom_modality",
    "display_name",
    "input_paths",
    "load_volume",
    "single_volume",
    "strip_ext",
]


def strip_ext(name: str) -> str:
    """``name`` without .nii.gz / .nii / .dcm."""
    for ext in (".nii.gz", ".nii", ".dcm"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name


def discover(path: str | os.PathLike) -> list[dict]:
    """Items (``find_images``) for a NIfTI file, a DICOM file or series folder, or a folder of them.

    Names are unique output stems; a folder that is itself one series is named after the folder.
    NIfTI truncation is checked per input later, so that one bad file does not stop a batch.
    """
    p = Path(path).expanduser()
    if not os.path.lexists(p):
        raise CLIError(f"input {path} does not exist.")
    if not p.exists():
        raise CLIError(f"input {path} is a broken symbolic link.")
    from monai_flow.data import find_images  # imports torch and MONAI: after the checks that need neither

    try:
        items = find_images(p, check=False)
    except (ValueError, FileNotFoundError, OSError) as e:
        raise CLIError(str(e)) from e
    for it in items:
        it["name"] = strip_ext(p.absolute().name) if it["name"] == "root" else it["name"]
    return items


def single_volume(path: str | os.PathLike) -> dict:
    """The one item of ``path``; a folder holding several images or DICOM series is an error."""
    items = discover(path)
    if len(items) != 1:
        series = [f"{it['name']} (SeriesInstanceUID {it['series_uid']})" if it["series_uid"] else it["name"]
                  for it in items]
        raise CLIError(f"input {path} holds {len(items)} images / DICOM series ({', '.join(series[:5])}); this "
                       "command takes one volume: give one NIfTI file or a folder holding one DICOM series.")
    return items[0]


def input_paths(item: dict) -> list[Path]:
    """The files and folders an item is read from (all protected from writing)."""
    image = item["image"]
    return [Path(p) for p in image] if isinstance(image, (list, tuple)) else [Path(image)]


def display_name(item: dict) -> str:
    image = item["image"]
    if isinstance(image, (list, tuple)):
        return f"{item['name']} ({image[0]}, ... {len(image)} files)"
    return f"{item['name']} ({image})"


def dicom_modality(item: dict) -> str | None:
    """The DICOM Modality tag of an item (first file of the series), None for NIfTI."""
    import pydicom

    if item.get("format") != "dicom":
        return None
    first = input_paths(item)[0]
    if first.is_dir():
        from monai_flow.data.dicom import _is_dicom

        files = (f for f in sorted(first.iterdir()) if f.is_file() and not f.name.startswith(".") and _is_dicom(f))
        first = next(files, first)
    try:
        header = pydicom.dcmread(first, stop_before_pixels=True, specific_tags=["Modality"])
        return str(header.get("Modality", "")) or None
    except Exception as e:  # unreadable header: reported as such
        raise InputError(f"cannot read the DICOM header of {first}: {e}") from e


def check_modality(item: dict, expected: str | None, force: bool, what: str) -> None:
    """Refuse a DICOM series whose Modality differs from ``expected`` unless ``force``.

    NIfTI files carry no modality and pass (the check is skipped).
    """
    if force or expected is None:
        return
    modality = dicom_modality(item)
    if modality is not None and modality.upper() != expected.upper():
        raise InputError(f"DICOM Modality is {modality} but {what} expects {expected}; pass --force-modality "
                         "to process it anyway.")


def check_nifti_item(item: dict) -> None:
    from monai_flow.data import check_nifti

    if item.get("format") == "nifti":
        try:
            check_nifti(item["image"], finite=True)
        except ValueError as e:
            raise InputError(str(e)) from e


def load_volume(item: dict):
    """Read an item as a channel-first ``MetaTensor`` (HU for CT: rescale slope/intercept applied)."""
    from monai.transforms import LoadImage

    check_nifti_item(item)
    try:
        load = LoadImage(reader="monai_flow.data.ITKSeriesReader", image_only=True, ensure_channel_first=True)
        return load(item["image"])
    except Exception as e:
        raise InputError(f"cannot read the image: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from e


def check_volume(img, need_3d: bool, what: str) -> None:
    """Raise :class:`InputError` for several channels, a 2D image where a volume is needed, or NaN/Inf."""
    import torch

    shape = tuple(img.shape)
    if img.ndim < 3 or img.ndim > 4:
        raise InputError(f"image of shape {shape[1:]} is neither 2D nor 3D.")
    if shape[0] != 1:
        raise InputError(f"image has {shape[0]} channels / time points (shape {shape[1:]} per channel); expected "
                         "a single-channel image.")
    if need_3d and img.ndim != 4:
        raise InputError(f"2D image of shape {shape[1:]}, but {what} needs 3D volumes (X, Y, Z); give a NIfTI "
                         "volume or a DICOM series.")
    finite = torch.isfinite(img)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise InputError(f"image has {bad} NaN/Inf voxel(s) of {img.numel()}; fix or mask them first.")
