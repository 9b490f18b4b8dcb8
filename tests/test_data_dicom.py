"""DICOM writing and reading: geometry and HU round trips with ITK and pydicom readers, derived
series identity, series discovery, Enhanced multi-frame objects, DICOM output of predictions."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import LoadImage, LoadImaged, SaveImaged
from pydicom.data import get_testdata_file

from monai_flow.data import (
    ITKSeriesReader,
    SaveDicomSeriesd,
    ct_phantom,
    list_dicom_series,
    write_dicom_series,
    write_enhanced_dicom,
)

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"), pytest.mark.filterwarnings("ignore::DeprecationWarning")]


def _oblique_affine() -> np.ndarray:
    """RAS affine with an in-plane rotation, anisotropic spacing and an offset origin."""
    th = 0.3
    rot = np.array([[np.cos(th), -np.sin(th), 0], [np.sin(th), np.cos(th), 0], [0, 0, 1]])
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag([-0.7, -0.8, 2.5])
    aff[:3, 3] = [10.0, -20.0, 30.0]
    return aff


@pytest.fixture(scope="module")
def ct_volume() -> np.ndarray:
    hu = ct_phantom((40, 32, 6), torch.Generator().manual_seed(3)).permute(1, 0, 2).numpy()  # (X, Y, Z)
    return hu.astype(np.float64)


def _read(path, reader):
    return LoadImage(reader=reader, image_only=True)(str(path))


@pytest.mark.parametrize("reader", ["ITKReader", "PydicomReader"])
@pytest.mark.parametrize("oblique", [False, True])
def test_series_round_trip_geometry_and_hu(tmp_path, ct_volume, reader, oblique):
    affine = _oblique_affine() if oblique else np.diag([-0.7, -0.8, 2.5, 1.0])
    out = write_dicom_series(ct_volume, tmp_path / "ct", affine, modality="CT")
    img = _read(out, reader)
    assert tuple(img.shape) == ct_volume.shape
    np.testing.assert_allclose(img.numpy(), np.round(ct_volume), atol=1e-3)  # HU to integer precision
    np.testing.assert_allclose(img.affine.numpy(), affine, atol=1e-5)
    ds = pydicom.dcmread(sorted(out.iterdir())[0])
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2" and ds.Modality == "CT"
    assert float(ds.RescaleIntercept) == -1024 and ds.pixel_array.dtype == np.int16
    assert float(ds.pixel_array.min()) + float(ds.RescaleIntercept) == pytest.approx(np.round(ct_volume[:, :, 0]).min())


def test_metatensor_and_lps_and_flipped_slices(tmp_path, ct_volume):
    aff = np.diag([-0.7, -0.8, 2.5, 1.0])
    mt = MetaTensor(torch.as_tensor(ct_volume)[None], affine=torch.as_tensor(aff))
    img = _read(write_dicom_series(mt, tmp_path / "meta"), "ITKReader")
    np.testing.assert_allclose(img.affine.numpy(), aff, atol=1e-5)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ aff
    img = _read(write_dicom_series(ct_volume, tmp_path / "lps", lps, space="LPS"), "PydicomReader")
    np.testing.assert_allclose(img.affine.numpy(), aff, atol=1e-5)
    # slice axis against the DICOM normal: stored reversed, same physical geometry for both readers
    flipped = aff.copy()
    flipped[2, 2] = -2.5
    out = write_dicom_series(ct_volume, tmp_path / "flip", flipped)
    for reader in ("ITKReader", "PydicomReader"):
        img = _read(out, reader)
        np.testing.assert_allclose(img.numpy(), np.round(ct_volume[:, :, ::-1]), atol=1e-3)
        corner = img.affine.numpy() @ np.array([0, 0, ct_volume.shape[2] - 1, 1.0])
        np.testing.assert_allclose(corner, flipped @ np.array([0, 0, 0, 1.0]), atol=1e-5)


def test_mr_series_values(tmp_path):
    mag = np.random.default_rng(0).rayleigh(0.05, size=(16, 12, 4)) + np.linspace(0, 1, 16)[:, None, None]
    out = write_dicom_series(mag, tmp_path / "mr", spacing=(1.0, 1.2, 3.0), modality="MR")
    assert pydicom.dcmread(sorted(out.iterdir())[0]).SOPClassUID == "1.2.840.10008.5.1.4.1.1.4"
    for reader in ("ITKReader", "PydicomReader"):
        img = _read(out, reader)
        np.testing.assert_allclose(img.numpy(), mag, atol=mag.max() / 32000)
        np.testing.assert_allclose(np.abs(np.diag(img.affine.numpy()))[:3], [1.0, 1.2, 3.0], atol=1e-6)


def test_derived_series_copies_identity_new_uids(tmp_path):
    src_file = get_testdata_file("CT_small.dcm")
    src = pydicom.dcmread(src_file)
    vol = LoadImage(reader="PydicomReader", image_only=True)(src_file)  # real CT slice, HU
    out = write_dicom_series(vol, tmp_path / "derived", template=src_file, series_description="denoised")
    files = sorted(out.iterdir())
    ds = pydicom.dcmread(files[0])
    for tag in ("PatientID", "PatientName", "StudyInstanceUID", "FrameOfReferenceUID", "StudyDate"):
        assert ds[tag].value == src[tag].value, tag
    assert ds.SeriesInstanceUID != src.SeriesInstanceUID and ds.SOPInstanceUID != src.SOPInstanceUID
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert list(ds.ImageType)[0] == "DERIVED" and ds.SeriesDescription == "denoised" and "DerivationDescription" in ds
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == src.SeriesInstanceUID
    again = _read(out, "ITKReader")
    np.testing.assert_allclose(again.numpy()[..., 0], np.round(vol.numpy()), atol=1e-3)
    np.testing.assert_allclose(again.affine.numpy()[:3, [0, 1, 3]], vol.affine.numpy()[:3, [0, 1, 3]], atol=1e-4)


def test_refuses_to_overwrite(tmp_path, ct_volume):
    out = write_dicom_series(ct_volume, tmp_path / "s", spacing=(1, 1, 1))
    with pytest.raises(FileExistsError, match="not empty"):
        write_dicom_series(ct_volume, out, spacing=(1, 1, 1))
    uid = pydicom.dcmread(next(out.iterdir())).SeriesInstanceUID
    write_dicom_series(ct_volume + 5, out, spacing=(1, 1, 1), overwrite=True)
    assert pydicom.dcmread(next(out.iterdir())).SeriesInstanceUID != uid
    assert [p.name for p in tmp_path.iterdir()] == ["s"]  # no staging folders left behind


def test_mixed_folder_split_by_series_and_reader_on_file_lists(tmp_path, ct_volume):
    folder = tmp_path / "mixed"
    a = write_dicom_series(ct_volume, tmp_path / "a", np.diag([-0.7, -0.8, 2.5, 1.0]))
    b = write_dicom_series(-ct_volume[:, :, :3], tmp_path / "b", _oblique_affine())
    folder.mkdir()
    rng = np.random.default_rng(0)
    for src, prefix in ((a, "x"), (b, "y")):
        for f in src.iterdir():
            (folder / f"{prefix}{rng.integers(1e6)}_{f.name}").write_bytes(f.read_bytes())  # names shuffle order
    (folder / "notes.txt").write_text("not dicom")
    report: dict = {}
    series = list_dicom_series(folder, report=report)
    assert len(series) == 2 and sorted(len(v) for v in series.values()) == [3, 6]
    assert report["skipped"] == [str(folder / "notes.txt")]
    loader = LoadImaged("image", reader=ITKSeriesReader(), image_only=True)
    by_len = {len(v): v for v in series.values()}
    img = loader({"image": by_len[6]})["image"]
    np.testing.assert_allclose(img.numpy(), np.round(ct_volume), atol=1e-3)
    img = loader({"image": by_len[3]})["image"]
    np.testing.assert_allclose(img.numpy(), -np.round(ct_volume[:, :, :3]), atol=1e-3)
    np.testing.assert_allclose(img.affine.numpy(), _oblique_affine(), atol=1e-5)
    with pytest.raises(ValueError, match="2 series"):
        ITKSeriesReader().read(by_len[6][:2] + by_len[3][:1])


@pytest.mark.parametrize("modality", ["CT", "MR"])
def test_enhanced_multiframe(tmp_path, ct_volume, modality):
    vol = ct_volume if modality == "CT" else (ct_volume + 1000) / 2000
    path = write_enhanced_dicom(vol, tmp_path / "enh.dcm", _oblique_affine(), modality=modality)
    ds = pydicom.dcmread(path)
    assert int(ds.NumberOfFrames) == vol.shape[2] and ds.SOPClassUID.endswith(".1.1.2.1" if modality == "CT" else ".1.1.4.1")
    assert "ImagePositionPatient" not in ds  # geometry only in functional groups, as in the wild
    for reader in ("ITKReader", ITKSeriesReader()):
        img = LoadImage(reader=reader, image_only=True)(str(path))
        assert tuple(img.shape) == vol.shape
        np.testing.assert_allclose(img.numpy(), np.round(vol) if modality == "CT" else vol, atol=1e-3)
        np.testing.assert_allclose(img.affine.numpy(), _oblique_affine(), atol=1e-4)


def test_save_dicom_series_d_from_loaded_series(tmp_path, ct_volume):
    src = write_dicom_series(ct_volume, tmp_path / "in" / "case1", np.diag([-0.7, -0.8, 2.5, 1.0]),
                             template=get_testdata_file("CT_small.dcm"))
    data = LoadImaged("image", reader="ITKReader", ensure_channel_first=True)({"image": str(src)})
    data["pred"] = data["image"] * 0.5
    SaveDicomSeriesd("pred", tmp_path / "out", template_key="image", series_description="denoised")(data)
    out = tmp_path / "out" / "case1_dicom"
    img = _read(out, "ITKReader")
    np.testing.assert_allclose(img.numpy(), np.round(0.5 * np.round(ct_volume)), atol=1e-3)
    np.testing.assert_allclose(img.affine.numpy(), data["image"].affine.numpy(), atol=1e-5)
    ds, ds_src = pydicom.dcmread(next(out.iterdir())), pydicom.dcmread(next(src.iterdir()))
    assert ds.StudyInstanceUID == ds_src.StudyInstanceUID and ds.PatientID == ds_src.PatientID
    assert ds.SeriesInstanceUID != ds_src.SeriesInstanceUID and ds.SeriesDescription == "denoised"


def test_series_to_nifti_with_save_imaged_keeps_geometry(tmp_path, ct_volume):
    """Inference output path: a DICOM series input saved as NIfTI by MONAI keeps affine and HU."""
    src = write_dicom_series(ct_volume, tmp_path / "case2", _oblique_affine())
    data = LoadImaged("image", reader="monai_flow.data.ITKSeriesReader", ensure_channel_first=True)({"image": str(src)})
    SaveImaged("image", output_dir=tmp_path / "nii", output_postfix="pred", separate_folder=False)(data)
    out = LoadImage(reader="NibabelReader", image_only=True)(str(tmp_path / "nii" / "case2_pred.nii.gz"))
    np.testing.assert_allclose(out.affine.numpy(), _oblique_affine(), atol=1e-4)
    np.testing.assert_allclose(out.numpy(), np.round(ct_volume), atol=1e-3)
