"""CT exposure from DICOM headers: tube voltage, tube current, exposure time, mAs and CTDIvol per slice.

The rule (docs/transforms.md, "Dose from the header"), per slice:

1. exposure in mAs = ``Exposure`` (0018,1152) or ``ExposureInmAs`` (0018,9332), as the scanner records it;
2. else ``XRayTubeCurrent`` (0018,1151) [or ``XRayTubeCurrentInmA`` (0018,9330)] times ``ExposureTime``
   (0018,1150) [or ``ExposureTimeInms`` (0018,9328)] / 1000, divided by ``SpiralPitchFactor`` (0018,9311)
   when present (effective mAs: the photons that reach one slice);
3. else ``ExposureInuAs`` (0018,1153) / 1000;
4. else no exposure: ``CTDIvol`` (0018,9345), when every slice has it, gives the slices' *relative*
   exposure (tube-current modulation along z) but no mAs; the photon count then comes from the
   transform's ``i0`` or from the noise (``i0="estimate"``).

``KVP`` (0018,0060) is read and must be the same on every slice (photons per mAs depend on it).
A tag that is present but not a positive number, an ``Exposure`` that disagrees with current x time
(by more than 10 %, with or without the pitch), two spellings of one quantity that disagree, or a
``KVP`` that changes within the series raises ``ValueError`` naming the tag. Empty tags count as absent.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset

__all__ = ["CTExposure", "EXPOSURE_META_KEY", "exposure_from_datasets", "exposure_from_meta", "read_ct_exposure"]

#: key under which :func:`exposure_from_meta` finds an exposure in a MetaTensor's metadata (``asdict``)
EXPOSURE_META_KEY = "ct_exposure"
_TOLERANCE = 0.10  # relative disagreement allowed between Exposure and current x time
# (keyword, tag) as MONAI's ITK reader spells them in metadata ("0018|1152")
_TAGS = {
    "KVP": "0018|0060",
    "ExposureTime": "0018|1150",
    "XRayTubeCurrent": "0018|1151",
    "Exposure": "0018|1152",
    "ExposureInuAs": "0018|1153",
    "ExposureTimeInms": "0018|9328",
    "XRayTubeCurrentInmA": "0018|9330",
    "ExposureInmAs": "0018|9332",
    "SpiralPitchFactor": "0018|9311",
    "CTDIvol": "0018|9345",
}


@dataclass(frozen=True)
class CTExposure:
    """Exposure of a CT series, per slice in series order (``None`` where the header has no value).

    Attributes:
        kvp: tube voltage (kV), one for the series.
        tube_current_ma, exposure_time_ms, ctdivol_mgy: per slice.
        exposure_mas: per slice, resolved by the rule of this module (``None``: unknown).
        source: which rule gave ``exposure_mas`` ("Exposure", "XRayTubeCurrent x ExposureTime",
            "ExposureInuAs" or "none").
    """

    kvp: float | None = None
    tube_current_ma: tuple[float, ...] | None = None
    exposure_time_ms: tuple[float, ...] | None = None
    exposure_mas: tuple[float, ...] | None = None
    ctdivol_mgy: tuple[float, ...] | None = None
    source: str = "none"

    @property
    def mean_mas(self) -> float | None:
        """Mean exposure over the slices (mAs), or ``None``."""
        return None if self.exposure_mas is None else sum(self.exposure_mas) / len(self.exposure_mas)

    @property
    def relative_exposure(self) -> tuple[float, ...] | None:
        """Each slice's exposure relative to the series mean: from mAs, else from CTDIvol, else ``None``."""
        values = self.exposure_mas or self.ctdivol_mgy
        if values is None:
            return None
        mean = sum(values) / len(values)
        return tuple(v / mean for v in values)

    def as_dict(self) -> dict:
        return asdict(self)


def _number(ds, keyword: str, index: int) -> float | None:
    """A positive finite number from ``ds`` (a Dataset or a metadata mapping), or None when absent/empty."""
    if isinstance(ds, Dataset):
        if keyword not in ds:
            return None
        try:
            value = ds[keyword].value
        except (TypeError, ValueError):  # pydicom could not even parse it as its VR (DS/IS)
            raw = ds.get_item(keyword).value
            raise ValueError(f"DICOM tag {keyword} of slice {index + 1} is not a number: {raw!r}.") from None
    else:
        value = ds.get(keyword, ds.get(_TAGS[keyword]))
    if value is None or (isinstance(value, (str, bytes)) and not str(value).strip()):
        return None
    if isinstance(value, (list, tuple)) or (hasattr(value, "__len__") and not isinstance(value, (str, bytes))):
        values = list(value)
        if len(values) != 1:
            raise ValueError(f"DICOM tag {keyword} of slice {index + 1} must hold one number, got {value!r}.")
        value = values[0]
    try:
        number = float(str(value).strip()) if isinstance(value, (str, bytes)) else float(value)
    except (TypeError, ValueError):
        raise ValueError(f"DICOM tag {keyword} of slice {index + 1} is not a number: {value!r}.") from None
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"DICOM tag {keyword} of slice {index + 1} must be a positive finite number, got {value!r}.")
    return number


def _one_of(ds, keywords: Sequence[str], index: int) -> float | None:
    """The value of the first of two spellings of one quantity; both present must agree (1 %)."""
    values = [(k, _number(ds, k, index)) for k in keywords]
    present = [(k, v) for k, v in values if v is not None]
    if len(present) == 2 and abs(present[0][1] / present[1][1] - 1) > 0.01:
        raise ValueError(f"DICOM tags {present[0][0]} ({present[0][1]:g}) and {present[1][0]} ({present[1][1]:g}) of "
                         f"slice {index + 1} contradict each other.")
    return present[0][1] if present else None


def _slice_exposure(ds, index: int) -> dict:
    mas = _one_of(ds, ("Exposure", "ExposureInmAs"), index)
    current = _one_of(ds, ("XRayTubeCurrent", "XRayTubeCurrentInmA"), index)
    time_ms = _one_of(ds, ("ExposureTime", "ExposureTimeInms"), index)
    micro = _number(ds, "ExposureInuAs", index)
    pitch = _number(ds, "SpiralPitchFactor", index)
    source = "none"
    if mas is not None:
        source = "Exposure"
        if current is not None and time_ms is not None:
            product = current * time_ms / 1000.0
            candidates = [product] + ([product / pitch] if pitch is not None else [])
            if not any(abs(mas / c - 1) <= _TOLERANCE for c in candidates):
                raise ValueError(
                    f"DICOM tag Exposure of slice {index + 1} ({mas:g} mAs) contradicts XRayTubeCurrent x ExposureTime "
                    f"({current:g} mA x {time_ms:g} ms = {product:g} mAs"
                    + (f", {product / pitch:g} mAs at SpiralPitchFactor {pitch:g}" if pitch is not None else "")
                    + f") by more than {_TOLERANCE:.0%}.")
        if micro is not None and abs(micro / 1000.0 / mas - 1) > _TOLERANCE:
            raise ValueError(f"DICOM tag ExposureInuAs of slice {index + 1} ({micro:g} uAs) contradicts Exposure ({mas:g} mAs).")
    elif current is not None and time_ms is not None:
        mas = current * time_ms / 1000.0 / (pitch if pitch is not None else 1.0)
        source = "XRayTubeCurrent x ExposureTime"
    elif micro is not None:
        mas, source = micro / 1000.0, "ExposureInuAs"
    return {"kvp": _number(ds, "KVP", index), "current": current, "time": time_ms, "mas": mas,
            "ctdivol": _number(ds, "CTDIvol", index), "source": source}


def _per_slice(values: list) -> tuple[float, ...] | None:
    """The per-slice values when every slice has one; None when none has; partial coverage: the
    slices without a value take the mean of the others (stated in the docs)."""
    known = [v for v in values if v is not None]
    if not known:
        return None
    mean = sum(known) / len(known)
    return tuple(mean if v is None else v for v in values)


def exposure_from_datasets(datasets: Sequence) -> CTExposure:
    """:class:`CTExposure` of a series given as its slices' Datasets (or metadata mappings), in order."""
    if not datasets:
        raise ValueError("exposure_from_datasets needs at least one slice.")
    slices = [_slice_exposure(ds, i) for i, ds in enumerate(datasets)]
    kvps = {s["kvp"] for s in slices if s["kvp"] is not None}
    if len(kvps) > 1:
        raise ValueError(f"DICOM tag KVP differs between the slices of one series ({sorted(kvps)}): photons per mAs "
                         "depend on it, so one exposure scale cannot serve the series.")
    sources = [s["source"] for s in slices if s["source"] != "none"]
    source = max(set(sources), key=sources.count) if sources else "none"
    mas = [s["mas"] for s in slices]
    ctdi = [s["ctdivol"] for s in slices]
    return CTExposure(
        kvp=kvps.pop() if kvps else None,
        tube_current_ma=_per_slice([s["current"] for s in slices]),
        exposure_time_ms=_per_slice([s["time"] for s in slices]),
        exposure_mas=_per_slice(mas),
        ctdivol_mgy=_per_slice(ctdi),
        source=source,
    )


def read_ct_exposure(source: str | os.PathLike | Dataset | Sequence) -> CTExposure:
    """:class:`CTExposure` of a DICOM series: a folder holding one series, a list of slice files, a single
    file (one slice or an Enhanced CT object's shared/first frame), or Datasets.

    Slices are ordered along the slice normal (as :func:`monai_flow.data.list_dicom_series` orders them,
    MONAI's slice order). Pixel data is not read.
    """
    if isinstance(source, Dataset):
        return exposure_from_datasets([source])
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            from .dicom import list_dicom_series

            series = list_dicom_series(path)
            if len(series) != 1:
                raise ValueError(f"{path} holds {len(series)} DICOM series; give the folder of one series.")
            files = next(iter(series.values()))
        else:
            files = [path]
    else:
        items = list(source)
        if len(items) == 1:
            return read_ct_exposure(items[0])
        if items and all(isinstance(d, Dataset) for d in items):
            return exposure_from_datasets(items)
        files = [Path(p) for p in items]
        if len(files) > 1:
            from .dicom import _slice_order_key

            files = sorted(files, key=_slice_order_key)
    datasets = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    if len(datasets) == 1 and "SharedFunctionalGroupsSequence" in datasets[0]:
        return exposure_from_datasets([_enhanced_frame(datasets[0])])
    return exposure_from_datasets(datasets)


def _enhanced_frame(ds: Dataset) -> Dataset:
    """The exposure attributes of an Enhanced CT object: its CTExposureSequence (shared), if any, else itself."""
    merged = Dataset()
    for keyword in _TAGS:
        if keyword in ds:
            setattr(merged, keyword, ds[keyword].value)
    for group in ds.SharedFunctionalGroupsSequence:
        for seq in ("CTExposureSequence", "CTXRayDetailsSequence"):
            for item in group.get(seq, []):
                for keyword in _TAGS:
                    if keyword in item and keyword not in merged:
                        setattr(merged, keyword, item[keyword].value)
    return merged


def exposure_from_meta(meta: Mapping | None) -> CTExposure | None:
    """The exposure recorded in a MetaTensor's metadata: under ``EXPOSURE_META_KEY`` (a
    :meth:`CTExposure.as_dict`, as the CLI stores it), else from DICOM tags as MONAI's readers store them
    (keyword or ``"0018|1152"`` keys, the first slice's header); None when there is none."""
    if not meta:
        return None
    stored = meta.get(EXPOSURE_META_KEY)
    if stored is not None:
        if isinstance(stored, CTExposure):
            return stored
        fields = {k: (tuple(v) if isinstance(v, (list, tuple)) else v) for k, v in dict(stored).items()}
        return CTExposure(**fields)
    if not any(k in meta or t in meta for k, t in _TAGS.items()):
        return None
    exposure = exposure_from_datasets([meta])
    return exposure if exposure.exposure_mas is not None or exposure.kvp is not None else None
