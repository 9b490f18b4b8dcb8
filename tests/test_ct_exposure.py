"""Dose from the DICOM header (issue 13): reading KVP, tube current, exposure time, mAs and CTDIvol per
slice from DICOM files written with those tags, the rule when tags are missing, refusal of contradictory or
non-numeric tags, and the header exposure driving i0 in the transforms, the operator and ``simulate ct``."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from monai.data import MetaTensor
from test_cli import cli, ct_volume, dicom

from monai_flow.data.ct_exposure import EXPOSURE_META_KEY, CTExposure, exposure_from_meta, read_ct_exposure
from monai_flow.transforms import CTDegradation, LowDoseCTNoise

pytestmark = pytest.mark.usefixtures("single_thread")


def tag_series(folder: Path, **per_slice) -> Path:
    """Set DICOM tags on every slice file of ``folder`` (sorted like the series): a value for all slices, or a
    list of one value per slice; ``None`` deletes the tag."""
    files = sorted(folder.iterdir())
    for i, f in enumerate(files):
        ds = pydicom.dcmread(f)
        patches = []
        for keyword, value in per_slice.items():
            v = value[i] if isinstance(value, list) else value
            if v is None:
                if keyword in ds:
                    delattr(ds, keyword)
            elif isinstance(v, str) and v.strip() and not v.replace(".", "").lstrip("-").isdigit():
                # not a number (pydicom refuses to encode one): a numeric placeholder of the same length,
                # replaced in the file's bytes afterwards, as a broken writer would have stored it
                raw = v.encode().ljust(len(v) + len(v) % 2)
                placeholder = str(7 * 10 ** (len(raw) - 1) + 13 * len(patches) + 1)
                setattr(ds, keyword, placeholder)
                patches.append((placeholder.encode(), raw))
            else:
                setattr(ds, keyword, v)
        ds.save_as(f, enforce_file_format=True)
        data = f.read_bytes()
        for placeholder, raw in patches:
            assert data.count(placeholder) == 1
            data = data.replace(placeholder, raw)
        f.write_bytes(data)
    return folder


def water_series(tmp_path: Path, name: str, shape=(48, 48, 3)) -> Path:
    x, y = np.mgrid[: shape[0], : shape[1]]
    disc = np.hypot(x - shape[0] / 2, y - shape[1] / 2) < shape[0] * 0.4
    vol = np.where(disc, 0.0, -1000.0)[..., None].repeat(shape[2], axis=-1).astype(np.float32)
    return dicom(tmp_path / name, vol)


def test_reads_every_dose_tag_per_slice(tmp_path):
    series = tag_series(dicom(tmp_path / "s", ct_volume((16, 16, 3))), KVP="120", XRayTubeCurrent=["200", "300", "250"],
                        ExposureTime="500", Exposure=["100", "150", "125"], CTDIvol=[6.0, 9.0, 7.5])
    e = read_ct_exposure(series)
    assert e.kvp == 120 and e.source == "Exposure"
    assert e.tube_current_ma == (200, 300, 250) and e.exposure_time_ms == (500, 500, 500)
    assert e.exposure_mas == (100, 150, 125) and e.ctdivol_mgy == (6.0, 9.0, 7.5)
    assert e.mean_mas == pytest.approx(125) and e.relative_exposure == pytest.approx((0.8, 1.2, 1.0))
    # the same from a list of files in any order, and from one file
    files = sorted(series.iterdir())
    assert read_ct_exposure(files[::-1]) == e
    assert read_ct_exposure(files[0]).exposure_mas == (100,)


@pytest.mark.parametrize("tags, mas, source", [
    (dict(XRayTubeCurrent="200", ExposureTime="500"), 100.0, "XRayTubeCurrent x ExposureTime"),
    (dict(XRayTubeCurrent="200", ExposureTime="500", SpiralPitchFactor=0.8), 125.0, "XRayTubeCurrent x ExposureTime"),
    (dict(ExposureInuAs="80000"), 80.0, "ExposureInuAs"),
    (dict(ExposureInmAs=90.0), 90.0, "Exposure"),
    (dict(Exposure="120", XRayTubeCurrent="200", ExposureTime="750", SpiralPitchFactor=1.25), 120.0, "Exposure"),
    (dict(XRayTubeCurrent="200"), None, "none"),  # current without time: no exposure
    (dict(KVP="", Exposure=""), None, "none"),  # empty tags (as our writer leaves KVP) count as absent
])
def test_the_rule_when_tags_are_missing(tmp_path, tags, mas, source):
    e = read_ct_exposure(tag_series(dicom(tmp_path / "s", ct_volume((16, 16, 2))), **tags))
    assert e.source == source
    assert e.exposure_mas == (None if mas is None else (pytest.approx(mas),) * 2)


def test_ctdivol_alone_gives_the_relative_exposure_along_z(tmp_path):
    e = read_ct_exposure(tag_series(dicom(tmp_path / "s", ct_volume((16, 16, 2))), CTDIvol=[4.0, 12.0]))
    assert e.exposure_mas is None and e.relative_exposure == pytest.approx((0.5, 1.5))


@pytest.mark.filterwarnings("ignore:Invalid value for VR")  # pydicom's own, on the broken tags
@pytest.mark.parametrize("tags, name", [
    (dict(Exposure="300", XRayTubeCurrent="200", ExposureTime="500"), "Exposure"),  # 300 vs 100 mAs
    (dict(KVP="abc"), "KVP"),
    (dict(XRayTubeCurrent="-20", ExposureTime="500"), "XRayTubeCurrent"),
    (dict(Exposure="100", ExposureInmAs=140.0), "Exposure"),
    (dict(ExposureTime="fast", XRayTubeCurrent="100"), "ExposureTime"),
    (dict(KVP=["120", "100"]), "KVP"),  # the voltage changes within the series
    (dict(CTDIvol=[float("nan"), 3.0]), "CTDIvol"),
])
def test_contradictory_or_non_numeric_tags_raise_value_error_naming_the_tag(tmp_path, tags, name):
    series = tag_series(dicom(tmp_path / "s", ct_volume((16, 16, 2))), **tags)
    with pytest.raises(ValueError, match=name):
        read_ct_exposure(series)


def test_exposure_from_monai_metadata():
    """MONAI's ITK reader keeps DICOM tags as "gggg|eeee" keys; the CLI stores a CTExposure dict."""
    assert exposure_from_meta({"0018|1152": "200 ", "0018|0060": "120"}).exposure_mas == (200.0,)
    assert exposure_from_meta({"Exposure": 80}).exposure_mas == (80.0,)
    assert exposure_from_meta({"spacing": [1, 1]}) is None and exposure_from_meta(None) is None
    stored = CTExposure(kvp=100.0, exposure_mas=(50.0, 70.0), source="Exposure").as_dict()
    assert exposure_from_meta({EXPOSURE_META_KEY: stored}).exposure_mas == (50.0, 70.0)


def disk(n=48, px=4.0, depth=12) -> torch.Tensor:
    c = (torch.arange(n) - (n - 1) / 2) * px
    img = torch.where(c[:, None] ** 2 + c[None, :] ** 2 < 70.0**2, 0.0, -1000.0)
    return img[None, ..., None].repeat(1, 1, 1, depth)  # (C, H, W, D)


def test_header_exposure_drives_i0_in_the_transform():
    """reference_mas = 100 mAs <-> i0 = 1e5: a 400 mAs input has 4e5 photons, a 25 mAs one 2.5e4: at the same
    dose fraction the added std differs by sqrt(16) = 4 (within 10 %); per-slice exposures (tube current
    along z) give per-slice photons; target_mas sets the dose fraction from the header."""
    img = disk()
    stds = {}
    for mas in (400.0, 25.0):
        meta = {EXPOSURE_META_KEY: CTExposure(exposure_mas=(mas,), source="Exposure").as_dict()}
        x = MetaTensor(img.clone(), meta=meta)
        t = LowDoseCTNoise(dose_fraction=0.5, electronic_std=0.0, spacing=(4.0, 4.0), num_views=90, reference_mas=100.0)
        assert t.exposure(x) == (0.5, pytest.approx(1e5 * mas / 100))
        stds[mas] = float((t(x, seed=0) - img)[0, 20:28, 20:28].std())
    assert abs(stds[25.0] / stds[400.0] / 4 - 1) < 0.1
    per_slice = (25.0,) * 6 + (400.0,) * 6
    x = MetaTensor(img.clone(), meta={EXPOSURE_META_KEY: CTExposure(exposure_mas=per_slice).as_dict()})
    out = LowDoseCTNoise(dose_fraction=0.5, electronic_std=0.0, spacing=(4.0, 4.0), num_views=90, reference_mas=100.0)(x, seed=1)
    noise = (out - img)[0, 20:28, 20:28]
    assert abs(float(noise[..., :6].std() / noise[..., 6:].std()) / 4 - 1) < 0.1
    target = LowDoseCTNoise(target_mas=50.0, spacing=(4.0, 4.0), num_views=90)
    meta = {EXPOSURE_META_KEY: CTExposure(exposure_mas=(200.0,)).as_dict()}
    assert target.exposure(MetaTensor(img, meta=meta))[0] == pytest.approx(0.25)
    with pytest.raises(ValueError, match="target_mas"):  # no exposure and no reference_mas: stated rule
        target(img)
    assert LowDoseCTNoise(target_mas=50.0, reference_mas=100.0, num_views=90).exposure(img)[0] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="exceeds"):
        LowDoseCTNoise(target_mas=500.0, reference_mas=100.0).exposure(img)


def test_degradation_operator_uses_each_references_header_exposure():
    """Heterogeneous references: exposure_mas per sample sets i0 per sample (reference_mas), so the added std
    scales like mAs^-1/2; without reference_mas, i0='estimate' pools the noise estimates over the batch and
    distributes them by the exposures."""
    water = disk(depth=1)[..., 0][None].repeat(8, 1, 1, 1)  # (8, 1, 48, 48)
    op = CTDegradation(spacing=(4.0, 4.0), i0=1e5, electronic_std=0.0, num_views=90, reference_mas=100.0)
    mas = torch.tensor([50.0] * 4 + [200.0] * 4)
    assert torch.allclose(op.reference_i0(water, exposure_mas=mas), mas * 1e3)
    added = op(water, 0.3, generator=torch.Generator().manual_seed(0), exposure_mas=mas) - water
    ratio = float(added[:4, :, 18:30, 18:30].std() / added[4:, :, 18:30, 18:30].std())
    assert abs(ratio / 2 - 1) < 0.1
    with pytest.raises(ValueError, match="reference_mas"):
        CTDegradation(spacing=(4.0, 4.0), num_views=90).reference_i0(water, exposure_mas=mas)
    with pytest.raises(ValueError, match="exposure_mas"):
        op.reference_i0(water, exposure_mas=torch.tensor([-1.0]))


def test_simulate_ct_target_mas_from_the_header(tmp_path, capsys):
    """``--target-mas 50`` on a series recorded at 200 mAs is ``--dose 0.25``, bit for bit; with
    ``--reference-mas`` the header exposure sets the photons (400 mAs: 4x those of 100 mAs)."""
    series = tag_series(water_series(tmp_path, "s"), KVP="120", Exposure="200", XRayTubeCurrent="400", ExposureTime="500")
    outs = {}
    for name, args in (("mas", ["--target-mas", 50]), ("dose", ["--dose", 0.25])):
        code, out, err = cli(capsys, "simulate", "ct", series, tmp_path / f"{name}.nii.gz", *args, "--seed", 3)
        assert code == 0, err
        outs[name] = nib.load(tmp_path / f"{name}.nii.gz").get_fdata()
    assert "input exposure 200 mAs from Exposure" in out
    np.testing.assert_array_equal(outs["mas"], outs["dose"])
    code, _, err = cli(capsys, "simulate", "ct", series, tmp_path / "x.nii.gz", "--target-mas", 400)
    assert code == 2 and "exceeds the input's exposure" in err
    bare = water_series(tmp_path, "bare")
    code, _, err = cli(capsys, "simulate", "ct", bare, tmp_path / "y.nii.gz", "--target-mas", 50)
    assert code == 2 and "--input-mas" in err and "Traceback" not in err
    code, _, err = cli(capsys, "simulate", "ct", bare, tmp_path / "y.nii.gz", "--target-mas", 50, "--input-mas", 100)
    assert code == 0, err
    bad = tag_series(water_series(tmp_path, "bad"), Exposure="200", XRayTubeCurrent="100", ExposureTime="500")
    code, _, err = cli(capsys, "simulate", "ct", bad, tmp_path / "z.nii.gz", "--dose", 0.5)
    assert code == 2 and "Exposure" in err and "contradicts" in err
    low = tag_series(water_series(tmp_path, "low"), Exposure="25")
    stds = {}
    for name, folder in (("high", series), ("low", low)):  # 200 vs 25 mAs at i0 = 1e5 per 100 mAs
        code, _, err = cli(capsys, "simulate", "ct", folder, tmp_path / f"r{name}.nii.gz", "--dose", 0.5,
                           "--reference-mas", 100, "--electronic-std", 0, "--seed", 1)
        assert code == 0, err
        stds[name] = nib.load(tmp_path / f"r{name}.nii.gz").get_fdata()[18:30, 18:30].std()  # water: only noise
    assert abs(stds["low"] / stds["high"] / np.sqrt(8) - 1) < 0.15
