"""MONAI reader and writer glue for DICOM: a series-aware ITK reader and a DICOM series saver.

``ITKSeriesReader`` is MONAI's ``ITKReader`` (HU through GDCM's rescale slope/intercept, RAS
affine, (X, Y, Z) layout) that also reads a *list of DICOM files* as one series, which is how
``find_images`` references one series out of a folder holding several. ``SaveDicomSeries(d)``
writes a prediction as a derived DICOM series of its source.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path

import itk
import numpy as np
import pydicom
from monai.config import KeysCollection
from monai.data import ITKReader
from monai.transforms import MapTransform, Transform

from monai_flow.atomic import write_atomically

from .dicom import _is_dicom, write_dicom_series

__all__ = [
    "ITKSeriesReader",
    "SaveDicomSeries",
    "SaveDicomSeriesd",
    "SaveDicomSeriesD",
    "SaveDicomSeriesDict",
    "SaveJSONSidecard",
]


def _sorted_series(files: Sequence[str]) -> list[str]:
    """``files`` of one series sorted along the slice normal; error if they mix series."""
    keyed, uids = [], set()
    for f in files:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        uids.add(str(ds.get("SeriesInstanceUID", "")))
        pos = 0.0
        if "ImagePositionPatient" in ds and "ImageOrientationPatient" in ds:
            o = np.asarray(ds.ImageOrientationPatient, dtype=np.float64)
            pos = float(np.asarray(ds.ImagePositionPatient, dtype=np.float64) @ np.cross(o[:3], o[3:]))
        keyed.append((pos, int(ds.get("InstanceNumber", 0) or 0), f))
    if len(uids) > 1:
        raise ValueError(f"files {list(files)[:3]}... belong to {len(uids)} series {sorted(uids)}; "
                         "pass the files of one SeriesInstanceUID (see monai_flow.data.list_dicom_series).")
    return [f for _, _, f in sorted(keyed)]


class ITKSeriesReader(ITKReader):
    """``ITKReader`` that reads a list of DICOM files as one series (sorted by position).

    Everything else is ``ITKReader``: a NIfTI/MetaImage file, a DICOM series folder (first
    series, or ``series_name``), an Enhanced multi-frame DICOM file (geometry from its functional
    groups) or a single slice. Use it as ``LoadImaged(keys, reader="monai_flow.data.ITKSeriesReader")``
    on items from :func:`monai_flow.data.find_images`, whose ``image`` is a file, a folder or a
    list of DICOM files. A list of non-DICOM files keeps MONAI's meaning (stacked as channels).
    """

    def read(self, data, **kwargs):
        names = [f"{d}" for d in (data if isinstance(data, (list, tuple)) else [data])]
        if len(names) > 1 and all(Path(n).is_file() and _is_dicom(Path(n)) for n in names):
            kwargs_ = {**self.kwargs, **kwargs}
            return itk.imread(_sorted_series(names), **kwargs_)
        return super().read(data, **kwargs)


def _source_path(img) -> str | None:
    meta = getattr(img, "meta", {}) or {}
    src = meta.get("filename_or_obj")
    return str(src) if src else None


class SaveDicomSeries(Transform):
    """Write a (1, X, Y, Z) ``MetaTensor`` as a derived DICOM series; returns the input unchanged.

    The output folder is ``output_dir / f"{source name}{output_postfix}"`` (source name: the
    DICOM folder name, or the NIfTI/DICOM file name without extension). Patient, study and frame
    of reference are copied from ``template`` (a DICOM file/folder), or, when it is ``None``,
    from the image's source (``meta["filename_or_obj"]``) when that is DICOM. The series gets
    new Series/SOP Instance UIDs, ImageType DERIVED\\SECONDARY and ``series_description``.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        output_postfix: str = "_dicom",
        modality: str = "CT",
        series_description: str = "monai-flow output",
        derivation_description: str = "processed with monai-flow",
        overwrite: bool = True,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.output_postfix, self.modality = output_postfix, modality
        self.series_description, self.derivation_description = series_description, derivation_description
        self.overwrite = overwrite
        self.last_written: Path | None = None

    def __call__(self, img, template=None):
        src = _source_path(img)
        if template is None and src is not None and Path(src).exists():
            p = Path(src)
            if p.is_dir() or _is_dicom(p):
                template = p
        name = Path(src).name if src else "image"
        if src and Path(src).is_file() and _is_dicom(Path(src)):  # first file of a series
            name = f"{Path(src).parent.name}_{Path(src).stem}"
        for ext in (".nii.gz", ".nii", ".dcm"):
            if name.lower().endswith(ext):
                name = name[: -len(ext)]
        out = self.output_dir / f"{name}{self.output_postfix}"
        self.last_written = write_dicom_series(
            img, out, modality=self.modality, template=template, series_description=self.series_description,
            derivation_description=self.derivation_description, overwrite=self.overwrite,
        )
        return img


class SaveDicomSeriesd(MapTransform):
    """Dictionary form of :class:`SaveDicomSeries`; ``template_key`` names the item key whose
    metadata points at the source DICOM (e.g. ``"image"`` when saving ``"pred"``)."""

    def __init__(self, keys: KeysCollection, output_dir, template_key: str | None = None,
                 allow_missing_keys: bool = False, **kwargs) -> None:
        super().__init__(keys, allow_missing_keys)
        self.saver = SaveDicomSeries(output_dir, **kwargs)
        self.template_key = template_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        template = None
        if self.template_key is not None and self.template_key in d:
            src = _source_path(d[self.template_key])
            if src is None and f"{self.template_key}_meta_dict" in d:
                src = d[f"{self.template_key}_meta_dict"].get("filename_or_obj")
            if src and Path(src).exists() and (Path(src).is_dir() or _is_dicom(Path(src))):
                template = src
        for key in self.key_iterator(d):
            self.saver(d[key], template=template)
        return d


SaveDicomSeriesD = SaveDicomSeriesDict = SaveDicomSeriesd


def _json_value(value):
    """Tensors / arrays / numpy scalars as plain JSON values."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    return value


class SaveJSONSidecard(MapTransform):
    """Write a JSON sidecar next to each image of ``keys`` saved by ``SaveImaged(..., savepath_in_metadict=True)``.

    For ``out/case_generated.nii.gz`` it writes ``out/case_generated.json`` holding
    ``{"image": "case_generated.nii.gz", <field>: d[field] for field in fields,
    <name>: file name of d[path key] (its saved copy, else its source), <name>_source: its source path,
    **extra}``, e.g. the class label and the mask a generated image was conditioned on, and the
    sampler settings.

    Args:
        keys: keys of saved images (their ``meta["saved_to"]`` names the file).
        fields: item keys whose values (numbers, strings, small tensors) are recorded.
        path_keys: item keys of other images (MetaTensors) whose file names are recorded, or a
            mapping ``{record name: item key}``.
        extra: constant entries (e.g. ``{"num_steps": 50, "guidance_scale": 2.0}``).
    """

    def __init__(self, keys: KeysCollection, fields: Sequence[str] = (),
                 path_keys: Sequence[str] | Mapping[str, str] = (), extra: Mapping | None = None,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.fields, self.extra = tuple(fields), dict(extra or {})
        self.path_keys = dict(path_keys) if isinstance(path_keys, Mapping) else {k: k for k in path_keys}

    @staticmethod
    def _saved_path(img, key) -> str:
        meta = getattr(img, "meta", None) or {}
        path = meta.get("saved_to")
        if not path:
            raise ValueError(f"'{key}' has no meta['saved_to']: save it first with SaveImaged(..., savepath_in_metadict=True).")
        return str(path)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        import json

        d = dict(data)
        for key in self.key_iterator(d):
            saved = Path(self._saved_path(d[key], key))
            record = {"image": saved.name}
            for field in self.fields:
                if field not in d:
                    raise ValueError(f"SaveJSONSidecard: item has no '{field}', got keys {sorted(map(str, d))}.")
                record[field] = _json_value(d[field])
            for name, pkey in self.path_keys.items():
                meta = getattr(d.get(pkey), "meta", None) or {}
                saved_to, source = meta.get("saved_to"), meta.get("filename_or_obj")
                record[name] = Path(str(saved_to or source)).name if saved_to or source else None
                if saved_to and source:
                    record[f"{name}_source"] = str(source)
            record.update(self.extra)
            stem = saved.name
            for ext in (".nii.gz", ".nii", ".dcm", ".png", ".nrrd", ".mha"):
                if stem.lower().endswith(ext):
                    stem = stem[: -len(ext)]
                    break
            text = json.dumps(record, indent=1)
            write_atomically(saved.with_name(f"{stem}.json"), lambda tmp: Path(tmp).write_text(text))
        return d
