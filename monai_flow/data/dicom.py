"""DICOM output and series discovery: single-frame CT/MR series, Enhanced multi-frame objects.

Array layout is MONAI's: a volume is ``(X, Y, Z)`` (or ``(1, X, Y, Z)``, or 2D ``(X, Y)``) where
X runs along a DICOM row (column index), Y down the columns (row index) and Z over slices, exactly
what ``LoadImage(reader="ITKReader")`` / ``PydicomReader`` return. The affine is MONAI's
(RAS by default, ``space="LPS"`` for DICOM's patient system) mapping voxel index to mm.
DICOM slice ``k`` stores ``volume[:, :, k].T`` (Rows = Y, Columns = X).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

from monai_flow.atomic import write_atomically, write_folder_atomically

__all__ = [
    "SOP_CLASSES",
    "dicom_geometry",
    "list_dicom_series",
    "read_template",
    "write_dicom_series",
    "write_enhanced_dicom",
]

SOP_CLASSES = {
    "CT": "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
    "MR": "1.2.840.10008.5.1.4.1.1.4",  # MR Image Storage
    "EnhancedCT": "1.2.840.10008.5.1.4.1.1.2.1",  # Enhanced CT Image Storage
    "EnhancedMR": "1.2.840.10008.5.1.4.1.1.4.1",  # Enhanced MR Image Storage
}
_LPS_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
# identity copied from a template: patient, study, frame of reference (same patient coordinates)
_PATIENT_STUDY_TAGS = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "PatientAge", "PatientWeight",
    "PatientSize", "IssuerOfPatientID", "StudyInstanceUID", "StudyDate", "StudyTime", "StudyID",
    "AccessionNumber", "ReferringPhysicianName", "StudyDescription", "FrameOfReferenceUID",
    "PositionReferenceIndicator", "BodyPartExamined", "PatientPosition",
)


# --------------------------------------------------------------------------------------- geometry
def _as_volume(volume) -> np.ndarray:
    """``volume`` as a float64 numpy array (X, Y, Z); accepts (X, Y), (1, X, Y[, Z]) and tensors."""
    arr = np.asarray(volume.detach().float().cpu().numpy() if hasattr(volume, "detach") else volume, dtype=np.float64)
    if arr.ndim == 4:
        if arr.shape[0] != 1:
            raise ValueError(f"expected one channel (1, X, Y, Z), got shape {arr.shape}.")
        arr = arr[0]
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3:
        raise ValueError(f"expected a volume (X, Y), (X, Y, Z) or (1, X, Y, Z), got shape {arr.shape}.")
    if not np.isfinite(arr).all():
        raise ValueError("volume contains non-finite values.")
    return arr


def _volume_affine(volume, affine, spacing, origin, space: str | None) -> np.ndarray:
    """4x4 LPS affine of the volume from ``affine`` (RAS unless ``space='LPS'``), its MetaTensor
    metadata, or ``spacing``/``origin`` (axial, LPS origin in mm)."""
    if affine is None and hasattr(volume, "affine") and spacing is None:
        affine = volume.affine
        space = space or str(getattr(volume, "meta", {}).get("space", "RAS"))
    if affine is not None:
        a = np.asarray(affine.detach().cpu() if hasattr(affine, "detach") else affine, dtype=np.float64)
        if a.shape == (3, 3):  # 2D affine: (x, y) + translation
            a = np.array([[a[0, 0], a[0, 1], 0, a[0, 2]], [a[1, 0], a[1, 1], 0, a[1, 2]], [0, 0, 1, 0], [0, 0, 0, 1]])
        if a.shape != (4, 4):
            raise ValueError(f"affine must be 4x4 (or 3x3 for 2D), got shape {a.shape}.")
        space = (space or "RAS").upper()
        if space not in ("RAS", "LPS"):
            raise ValueError(f"space must be 'RAS' or 'LPS', got {space!r}.")
        return _LPS_RAS @ a if space == "RAS" else a.copy()
    sp = [float(s) for s in (spacing if spacing is not None else (1.0, 1.0, 1.0))]
    sp = (sp + [1.0])[:3] if len(sp) == 2 else sp
    lps = np.diag([*sp, 1.0])
    lps[:3, 3] = np.asarray(origin if origin is not None else (0.0, 0.0, 0.0), dtype=np.float64)
    return lps


def dicom_geometry(lps_affine: np.ndarray, num_slices: int, tol: float = 1e-4) -> dict:
    """DICOM plane geometry of a volume with LPS affine ``lps_affine`` (index (i, j, k) -> mm).

    Returns ``orientation`` (ImageOrientationPatient: row then column direction cosines),
    ``pixel_spacing`` ([row spacing = |j step|, column spacing = |i step|]), ``slice_step``
    (mm vector between consecutive slices, along row x column), ``positions`` (IPP per slice,
    (num_slices, 3)) and ``flip`` (True when the affine's slice axis points against the DICOM
    normal: slices are then stored in reverse order so every reader sorts them back the same way).
    """
    a = np.asarray(lps_affine, dtype=np.float64)
    col_step, row_step, k_step = a[:3, 0], a[:3, 1], a[:3, 2]  # i runs along a row, j down a column
    sx, sy = np.linalg.norm(col_step), np.linalg.norm(row_step)
    if sx <= 0 or sy <= 0:
        raise ValueError(f"affine has a zero in-plane spacing: {a.tolist()}.")
    u, v = col_step / sx, row_step / sy
    if abs(float(u @ v)) > tol:
        raise ValueError(f"in-plane axes of the affine are not orthogonal (cos = {float(u @ v):.3g}): {a.tolist()}.")
    normal = np.cross(u, v)
    origin = a[:3, 3].copy()
    sz = np.linalg.norm(k_step)
    if num_slices > 1 or sz > 0:
        if sz <= 0:
            raise ValueError(f"affine has a zero slice spacing: {a.tolist()}.")
        cos = float(k_step @ normal) / sz
        if abs(abs(cos) - 1.0) > tol:
            raise ValueError(f"slice axis is not perpendicular to the image plane (cos = {cos:.4g}); "
                             "tilted stacks are not written.")
    flip = float(k_step @ normal) < 0
    if flip:
        origin = origin + (num_slices - 1) * k_step
        k_step = -k_step
    positions = origin[None] + np.arange(num_slices)[:, None] * k_step[None]
    return {
        "orientation": [*u.tolist(), *v.tolist()],
        "pixel_spacing": [float(sy), float(sx)],
        "slice_thickness": float(sz) if sz > 0 else 1.0,
        "slice_step": k_step,
        "normal": normal,
        "positions": positions,
        "flip": flip,
    }


# ----------------------------------------------------------------------------------- pixel values
def _rescale(values: np.ndarray, modality: str, rescale) -> tuple[float, float]:
    """(slope, intercept) so that ``stored = round((v - intercept) / slope)`` fits int16."""
    if rescale is not None:
        slope, intercept = (float(r) for r in rescale)
        if slope <= 0:
            raise ValueError(f"rescale slope must be > 0, got {slope}.")
        return slope, intercept
    lo, hi = float(values.min()), float(values.max())
    if modality == "CT" and lo >= -1024 - 32768 and hi <= 32767 - 1024:
        return 1.0, -1024.0  # HU to integer precision, the scanner convention
    if modality == "CT":
        return max((hi - lo) / 65534.0, 1e-6), lo + 32767 * max((hi - lo) / 65534.0, 1e-6)
    integer = np.allclose(values, np.round(values)) and lo >= -32768 and hi <= 32767
    if integer:
        return 1.0, 0.0
    # MR magnitudes (arbitrary units): use the positive int16 range, intercept 0
    return max(abs(lo), abs(hi), 1e-12) / 32000.0, 0.0


def _stored(values: np.ndarray, slope: float, intercept: float) -> np.ndarray:
    stored = np.round((values - intercept) / slope)
    if stored.min() < -32768 or stored.max() > 32767:
        raise ValueError(f"values in [{values.min()}, {values.max()}] do not fit int16 with slope {slope}, "
                         f"intercept {intercept}.")
    return stored.astype(np.int16)


# ------------------------------------------------------------------------------------- datasets
def read_template(template) -> Dataset | None:
    """A template dataset from a pydicom Dataset, a DICOM file, a series folder, or a list of files."""
    if template is None or isinstance(template, Dataset):
        return template
    if isinstance(template, (list, tuple)):
        template = template[0]
    path = Path(template)
    if path.is_dir():
        series = list_dicom_series(path)
        if not series:
            raise FileNotFoundError(f"template folder {path} holds no DICOM file.")
        path = Path(next(iter(series.values()))[0])
    if not path.is_file():
        raise FileNotFoundError(f"template {path} does not exist.")
    return pydicom.dcmread(path, stop_before_pixels=True)


def _base_dataset(sop_class: str, modality: str, template: Dataset | None, series_uid: str, info: dict) -> Dataset:
    """Patient / study / series / equipment modules shared by every instance of a series."""
    ds = Dataset()
    now = datetime.datetime.now()
    if template is not None:
        for tag in _PATIENT_STUDY_TAGS:
            if tag in template:
                setattr(ds, tag, template[tag].value)
    ds.PatientName = ds.get("PatientName", info["patient_name"])
    ds.PatientID = ds.get("PatientID", info["patient_id"])
    ds.PatientBirthDate = ds.get("PatientBirthDate", "")
    ds.PatientSex = ds.get("PatientSex", "")
    ds.StudyInstanceUID = ds.get("StudyInstanceUID", info["study_uid"])
    ds.StudyDate = ds.get("StudyDate", now.strftime("%Y%m%d"))
    ds.StudyTime = ds.get("StudyTime", now.strftime("%H%M%S"))
    ds.StudyID = ds.get("StudyID", "1")
    ds.AccessionNumber = ds.get("AccessionNumber", "")
    ds.ReferringPhysicianName = ds.get("ReferringPhysicianName", "")
    ds.FrameOfReferenceUID = ds.get("FrameOfReferenceUID", info["frame_uid"])
    ds.PositionReferenceIndicator = ds.get("PositionReferenceIndicator", "")
    ds.SOPClassUID = sop_class
    ds.Modality = modality
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = info["series_number"]
    ds.SeriesDescription = info["series_description"]
    ds.SeriesDate = ds.ContentDate = now.strftime("%Y%m%d")
    ds.SeriesTime = ds.ContentTime = now.strftime("%H%M%S")
    ds.Manufacturer = "monai-flow"
    ds.ImageType = list(info["image_type"])
    if info["derivation_description"]:
        ds.DerivationDescription = info["derivation_description"]
    if template is not None and "SeriesInstanceUID" in template:
        ref = Dataset()
        ref.SeriesInstanceUID = template.SeriesInstanceUID
        ds.ReferencedSeriesSequence = DicomSequence([ref])
    ds.SpecificCharacterSet = "ISO_IR 100"
    return ds


def _pixel_module(ds: Dataset, rows: int, cols: int) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1


def _file_meta(ds: Dataset) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta


def _info(template, series_description, derivation_description, image_type, series_number, patient_id, patient_name):
    return {
        "series_description": series_description,
        "derivation_description": derivation_description,
        "image_type": image_type,
        "series_number": series_number if series_number is not None else (1001 if template is not None else 1),
        "patient_id": patient_id,
        "patient_name": patient_name,
        "study_uid": generate_uid(),
        "frame_uid": generate_uid(),
    }


def _check_modality(modality: str) -> str:
    modality = str(modality).upper()
    if modality not in ("CT", "MR"):
        raise ValueError(f"modality must be 'CT' or 'MR', got {modality!r}.")
    return modality


def _fmt(values) -> list[str]:
    """Decimal strings (DS, at most 16 characters) for geometry attributes."""
    return [f"{float(v):.10g}"[:16] for v in values]


# ---------------------------------------------------------------------------------------- writers
def write_dicom_series(
    volume,
    out_dir: str | os.PathLike,
    affine=None,
    *,
    spacing: Sequence[float] | None = None,
    origin: Sequence[float] | None = None,
    space: str | None = None,
    modality: str = "CT",
    template=None,
    series_description: str = "monai-flow",
    derivation_description: str | None = "processed with monai-flow",
    image_type: Sequence[str] = ("DERIVED", "SECONDARY", "AXIAL"),
    series_number: int | None = None,
    rescale: tuple[float, float] | None = None,
    patient_id: str = "MONAI-FLOW",
    patient_name: str = "monai-flow^synthetic",
    overwrite: bool = False,
) -> Path:
    """Write ``volume`` as a single-frame CT or MR Image Storage series, one file per slice.

    Args:
        volume: (X, Y, Z), (1, X, Y, Z) or 2D (X, Y) array/tensor in MONAI layout; CT in HU.
            A ``MetaTensor`` brings its own affine (and ``meta["space"]``).
        out_dir: folder to create (``0001.dcm``, ...); written under a temporary name, then renamed.
        affine: 4x4 voxel-to-mm affine, RAS (MONAI default) unless ``space="LPS"``.
        spacing, origin: without an affine, an axial series with voxel ``spacing`` (mm, per axis)
            and first-voxel position ``origin`` (LPS mm, i.e. ImagePositionPatient of slice 1).
        modality: "CT" (int16, RescaleSlope 1 / RescaleIntercept -1024: HU to integer precision)
            or "MR" (int16 with a slope that uses the positive range; RescaleType "US").
        template: a Dataset, DICOM file or series folder whose patient, study and frame of
            reference are copied (the output is a new series of the same study); new
            Series/SOP Instance UIDs are always generated.
        series_description, derivation_description, image_type: derivation labelling.
        rescale: explicit (slope, intercept).
        overwrite: replace an existing non-empty ``out_dir``.

    Returns:
        ``out_dir``. Slices are ordered along the DICOM normal (row x column); if the affine's
        slice axis points the other way they are written in reverse, so readers return the
        volume flipped along Z with an equivalent affine (see ``dicom_geometry``).
    """
    modality = _check_modality(modality)
    lps = _volume_affine(volume, affine, spacing, origin, space)
    vol = _as_volume(volume)
    geo = dicom_geometry(lps, vol.shape[2])
    if geo["flip"]:
        vol = vol[:, :, ::-1]
    template = read_template(template)
    slope, intercept = _rescale(vol, modality, rescale)
    stored = _stored(vol, slope, intercept)
    out_dir = Path(out_dir)
    series_uid = generate_uid()
    base = _base_dataset(SOP_CLASSES[modality], modality, template,
                         series_uid, _info(template, series_description, derivation_description, image_type,
                                           series_number, patient_id, patient_name))
    _pixel_module(base, vol.shape[1], vol.shape[0])
    base.ImageOrientationPatient = _fmt(geo["orientation"])
    base.PixelSpacing = _fmt(geo["pixel_spacing"])
    base.SliceThickness = _fmt([geo["slice_thickness"]])[0]
    if vol.shape[2] > 1:
        base.SpacingBetweenSlices = _fmt([np.linalg.norm(geo["slice_step"])])[0]
    base.RescaleIntercept, base.RescaleSlope = _fmt([intercept])[0], _fmt([slope])[0]
    base.RescaleType = "HU" if modality == "CT" else "US"
    if modality == "CT":
        base.KVP = ""
    else:
        base.ScanningSequence, base.SequenceVariant, base.ScanOptions, base.MRAcquisitionType = "RM", "NONE", "", "3D"
        base.EchoTime, base.RepetitionTime, base.MagneticFieldStrength = "", "", ""
        base.EchoTrainLength = ""

    def write(staging: Path) -> None:
        for k in range(vol.shape[2]):
            ds = Dataset()
            ds.update(base)
            ds.SOPInstanceUID = generate_uid()
            ds.InstanceNumber = k + 1
            ds.ImagePositionPatient = _fmt(geo["positions"][k])
            ds.SliceLocation = _fmt([geo["positions"][k] @ geo["normal"]])[0]
            ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()
            _file_meta(ds)
            ds.save_as(staging / f"{k + 1:04d}.dcm", enforce_file_format=True)

    return write_folder_atomically(out_dir, write, overwrite=overwrite)


def write_enhanced_dicom(
    volume,
    path: str | os.PathLike,
    affine=None,
    *,
    spacing: Sequence[float] | None = None,
    origin: Sequence[float] | None = None,
    space: str | None = None,
    modality: str = "CT",
    template=None,
    series_description: str = "monai-flow enhanced",
    derivation_description: str | None = "processed with monai-flow",
    rescale: tuple[float, float] | None = None,
    patient_id: str = "MONAI-FLOW",
    patient_name: str = "monai-flow^synthetic",
    overwrite: bool = False,
) -> Path:
    """Write ``volume`` as one Enhanced CT / Enhanced MR multi-frame file (one frame per slice).

    Same arguments and geometry conventions as :func:`write_dicom_series`. Geometry and rescale
    live in the functional groups: shared PixelMeasures, PlaneOrientation and
    PixelValueTransformation, per-frame PlanePosition and FrameContent. Written to a temporary
    name, then renamed to ``path``.
    """
    modality = _check_modality(modality)
    lps = _volume_affine(volume, affine, spacing, origin, space)
    vol = _as_volume(volume)
    geo = dicom_geometry(lps, vol.shape[2])
    if geo["flip"]:
        vol = vol[:, :, ::-1]
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it.")
    template = read_template(template)
    slope, intercept = _rescale(vol, modality, rescale)
    stored = _stored(vol, slope, intercept)
    image_type = ("DERIVED", "SECONDARY", "AXIAL", "NONE")
    ds = _base_dataset(SOP_CLASSES["Enhanced" + modality], modality, template, generate_uid(),
                       _info(template, series_description, derivation_description, image_type, None, patient_id,
                             patient_name))
    ds.SOPInstanceUID = generate_uid()
    ds.InstanceNumber = 1
    ds.ContentQualification = "RESEARCH"
    ds.BurnedInAnnotation = "NO"
    ds.PresentationLUTShape = "IDENTITY"
    ds.AcquisitionDateTime = ds.ContentDate + ds.ContentTime
    _pixel_module(ds, vol.shape[1], vol.shape[0])
    ds.NumberOfFrames = vol.shape[2]

    measures, orient, transform, frame_type = Dataset(), Dataset(), Dataset(), Dataset()
    measures.PixelSpacing = _fmt(geo["pixel_spacing"])
    measures.SliceThickness = _fmt([geo["slice_thickness"]])[0]
    if vol.shape[2] > 1:
        measures.SpacingBetweenSlices = _fmt([np.linalg.norm(geo["slice_step"])])[0]
    orient.ImageOrientationPatient = _fmt(geo["orientation"])
    transform.RescaleIntercept, transform.RescaleSlope = _fmt([intercept])[0], _fmt([slope])[0]
    transform.RescaleType = "HU" if modality == "CT" else "US"
    frame_type.FrameType = list(image_type)
    shared = Dataset()
    shared.PixelMeasuresSequence = DicomSequence([measures])
    shared.PlaneOrientationSequence = DicomSequence([orient])
    shared.PixelValueTransformationSequence = DicomSequence([transform])
    setattr(shared, "CTImageFrameTypeSequence" if modality == "CT" else "MRImageFrameTypeSequence",
            DicomSequence([frame_type]))
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])

    dim_uid = generate_uid()
    dims = []
    for pointer, group in ((0x00209057, 0x00209111), (0x00200032, 0x00209113)):  # in-stack position, IPP
        d = Dataset()
        d.DimensionOrganizationUID, d.DimensionIndexPointer, d.FunctionalGroupPointer = dim_uid, pointer, group
        dims.append(d)
    org = Dataset()
    org.DimensionOrganizationUID = dim_uid
    ds.DimensionOrganizationSequence = DicomSequence([org])
    ds.DimensionIndexSequence = DicomSequence(dims[:1])
    frames = []
    for k in range(vol.shape[2]):
        pos, content, frame = Dataset(), Dataset(), Dataset()
        pos.ImagePositionPatient = _fmt(geo["positions"][k])
        content.StackID = "1"
        content.InStackPositionNumber = k + 1
        content.DimensionIndexValues = [k + 1]
        frame.PlanePositionSequence = DicomSequence([pos])
        frame.FrameContentSequence = DicomSequence([content])
        frames.append(frame)
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(frames)
    ds.PixelData = np.ascontiguousarray(stored.transpose(2, 1, 0)).tobytes()  # (frames, rows, cols)
    _file_meta(ds)
    return write_atomically(path, lambda tmp: ds.save_as(tmp, enforce_file_format=True))


# -------------------------------------------------------------------------------------- discovery
def _is_dicom(path: Path) -> bool:
    """Part-10 file (``DICM`` preamble) or a headerless dataset pydicom can parse."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    if len(head) == 132 and head[128:132] == b"DICM":
        return True
    if path.suffix.lower() not in (".dcm", ".dicom", ".ima", ""):
        return False
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True, specific_tags=["SOPClassUID"])
        return "SOPClassUID" in ds
    except Exception:
        return False


def _slice_order_key(path) -> tuple[float, int, str]:
    """Sort key of a slice file: position along the slice normal, then InstanceNumber (as
    :func:`list_dicom_series` orders a series)."""
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    pos = 0.0
    if "ImagePositionPatient" in ds and "ImageOrientationPatient" in ds:
        o = np.asarray(ds.ImageOrientationPatient, dtype=np.float64)
        pos = float(np.asarray(ds.ImagePositionPatient, dtype=np.float64) @ np.cross(o[:3], o[3:]))
    return pos, int(ds.get("InstanceNumber", 0) or 0), str(path)


def list_dicom_series(folder: str | os.PathLike, recursive: bool = True, report: dict | None = None) -> dict[str, list[str]]:
    """DICOM files under ``folder`` grouped by SeriesInstanceUID.

    Files in each series are sorted along the slice normal (ImagePositionPatient projected on
    row x column), then by InstanceNumber. Non-DICOM files are skipped; when ``report`` is a dict
    it receives ``report["skipped"]`` (paths of non-DICOM files), ``report["unreadable"]``
    (``"path: error"`` for DICOM files whose header could not be parsed) and
    ``report["multiframe"]`` (paths of multi-frame files, e.g. Enhanced CT/MR).

    Returns:
        {SeriesInstanceUID: [file paths]} in order of first appearance (sorted walk).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"DICOM folder {folder} does not exist or is not a folder.")
    files = sorted(p for p in (folder.rglob("*") if recursive else folder.iterdir()) if p.is_file())
    groups: dict[str, list[tuple[float, int, str]]] = {}
    skipped, unreadable, multiframe = [], [], []
    for p in files:
        if p.name.startswith(".") or not _is_dicom(p):
            skipped.append(str(p))
            continue
        try:
            ds = pydicom.dcmread(p, stop_before_pixels=True)
            uid = str(ds.SeriesInstanceUID)
        except Exception as e:  # truncated / broken header
            unreadable.append(f"{p}: {e}")
            continue
        pos = 0.0
        if "ImagePositionPatient" in ds and "ImageOrientationPatient" in ds:
            o = np.asarray(ds.ImageOrientationPatient, dtype=np.float64)
            pos = float(np.asarray(ds.ImagePositionPatient, dtype=np.float64) @ np.cross(o[:3], o[3:]))
        if int(ds.get("NumberOfFrames", 1) or 1) > 1:
            multiframe.append(str(p))
        groups.setdefault(uid, []).append((pos, int(ds.get("InstanceNumber", 0) or 0), str(p)))
    if report is not None:
        report["skipped"], report["unreadable"], report["multiframe"] = skipped, unreadable, multiframe
    return {uid: [f for _, _, f in sorted(items)] for uid, items in groups.items()}
