"""Dataset discovery: NIfTI files, DICOM series folders (one or several series), Enhanced
multi-frame files, datalist JSON, mixed folders, splits, and the errors for bad inputs."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
from monai.data import Dataset, DataLoader
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged

from monai_flow.data import (
    build_datalist,
    find_images,
    load_datalist,
    split_datalist,
    write_dicom_series,
    write_enhanced_dicom,
    write_nifti,
)

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"), pytest.mark.filterwarnings("ignore::DeprecationWarning")]
AFFINE = np.diag([-0.8, -0.8, 2.0, 1.0])
KEYS = {"image", "name", "format", "series_uid"}


def _vol(seed: int, shape=(12, 10, 4)) -> np.ndarray:
    return np.round(np.random.default_rng(seed).normal(0, 300, shape))


@pytest.fixture()
def mixed(tmp_path):
    """nifti/a.nii.gz, nifti/sub/b.nii, dicom/one (a series), dicom/two (two series), enh.dcm, notes.txt."""
    root = tmp_path / "data"
    write_nifti(_vol(0), AFFINE, root / "nifti" / "a.nii.gz")
    write_nifti(_vol(1), AFFINE, root / "nifti" / "sub" / "b.nii")
    write_dicom_series(_vol(2), root / "dicom" / "one", AFFINE)
    for i, shape in enumerate([(12, 10, 5), (12, 10, 3)]):
        s = write_dicom_series(_vol(10 + i, shape), tmp_path / f"s{i}", AFFINE, series_number=i + 1)
        for f in s.iterdir():
            (root / "dicom" / "two").mkdir(parents=True, exist_ok=True)
            (root / "dicom" / "two" / f"s{i}_{f.name}").write_bytes(f.read_bytes())
    write_enhanced_dicom(_vol(4), root / "enh.dcm", AFFINE)
    (root / "notes.txt").write_text("hello")
    return root


def test_find_images_mixed_folder(mixed):
    items = find_images(mixed)
    assert all(set(it) == KEYS for it in items)  # same keys: mixed batches collate
    by_name = {it["name"]: it for it in items}
    assert by_name["nifti/a"]["format"] == "nifti" and by_name["nifti/sub/b"]["image"].endswith("b.nii")
    assert by_name["dicom/one"]["image"] == str(mixed / "dicom" / "one") and by_name["dicom/one"]["series_uid"]
    assert by_name["enh"]["image"] == str(mixed / "enh.dcm")
    two = [it for it in items if it["name"].startswith("dicom/two/")]
    assert len(two) == 2 and sorted(len(it["image"]) for it in two) == [3, 5]
    assert len({it["series_uid"] for it in two}) == 2 and len(items) == 6
    # every item loads with the documented reader, values and shapes as written
    loader = LoadImaged("image", reader="monai_flow.data.ITKSeriesReader", image_only=True)
    expected = {"nifti/a": _vol(0), "nifti/sub/b": _vol(1), "dicom/one": _vol(2), "enh": _vol(4)}
    expected.update({it["name"]: _vol(10 + (len(it["image"]) == 3), (12, 10, len(it["image"]))) for it in two})
    for it in items:
        img = loader(dict(it))["image"]
        np.testing.assert_allclose(img.numpy(), expected[it["name"]], atol=1e-3, err_msg=it["name"])
        np.testing.assert_allclose(img.affine.numpy(), AFFINE, atol=1e-5, err_msg=it["name"])


def test_mixed_items_batch_through_dataloader(mixed):
    items = [it for it in find_images(mixed) if it["name"] in ("nifti/a", "dicom/one")]
    pipe = Compose([LoadImaged("image", reader="monai_flow.data.ITKSeriesReader"), EnsureChannelFirstd("image")])
    batch = next(iter(DataLoader(Dataset(items, pipe), batch_size=2)))
    assert tuple(batch["image"].shape) == (2, 1, 12, 10, 4) and sorted(batch["format"]) == ["dicom", "nifti"]


def test_single_file_and_series_folder(mixed):
    assert [it["format"] for it in find_images(mixed / "nifti" / "a.nii.gz")] == ["nifti"]
    (item,) = find_images(mixed / "dicom" / "one")
    assert item["image"] == str(mixed / "dicom" / "one") and item["name"] == "root"


def test_datalist_json_relative_paths_and_sections(mixed, tmp_path):
    dl = {"training": [{"image": "nifti/a.nii.gz", "label": 1}, "nifti/sub/b.nii"],
          "validation": [{"image": "dicom/one", "mask": "nifti/a.nii.gz"}]}
    path = mixed / "list.json"
    path.write_text(json.dumps(dl))
    sections = load_datalist(path)
    assert sections["training"][0] == {"image": str(mixed / "nifti" / "a.nii.gz"), "label": 1}
    assert sections["training"][1] == {"image": str(mixed / "nifti" / "sub" / "b.nii")}
    assert sections["validation"][0]["mask"] == str(mixed / "nifti" / "a.nii.gz")
    built = build_datalist(path)
    assert built["testing"] == built["validation"] and len(built["training"]) == 2
    path.write_text(json.dumps({"training": [{"image": "missing.nii.gz"}]}))
    with pytest.raises(FileNotFoundError, match="missing.nii.gz"):
        load_datalist(path)


def test_build_datalist_folder_split_deterministic(mixed):
    a, b = build_datalist(mixed, val_fraction=0.34, seed=1), build_datalist(mixed, val_fraction=0.34, seed=1)
    assert a == b and len(a["validation"]) == 2 and len(a["training"]) == 4 and len(a["testing"]) == 6
    names = {it["name"] for it in a["training"]} | {it["name"] for it in a["validation"]}
    assert names == {it["name"] for it in a["testing"]}
    train, val = split_datalist([{"image": str(i)} for i in range(10)], 0.2, seed=0)
    assert len(val) == 2 and not {t["image"] for t in train} & {v["image"] for v in val}
    assert split_datalist([{"image": "x"}], 0.2) == ([{"image": "x"}], [])
    assert [len(s) for s in split_datalist([{"image": str(i)} for i in range(3)], 0.01)] == [2, 1]


def test_errors_missing_empty_non_image(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_images(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="is empty"):
        find_images(tmp_path / "empty")
    junk = tmp_path / "junk"
    (junk / "deep").mkdir(parents=True)
    (junk / "readme.md").write_text("x")
    (junk / "deep" / "scan.png").write_bytes(b"\x89PNG....")
    (junk / "fake.dcm").write_bytes(b"not a dicom at all")
    with pytest.raises(ValueError, match="no NIfTI") as err:
        find_images(junk)
    for name in ("readme.md", "scan.png", "fake.dcm"):
        assert name in str(err.value)
    with pytest.raises(FileNotFoundError):
        build_datalist(tmp_path / "nope")


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_truncated_nifti_is_an_error(tmp_path, suffix):
    good = write_nifti(_vol(0, (16, 16, 8)), AFFINE, tmp_path / "data" / f"good{suffix}")
    bad = tmp_path / "data" / f"bad{suffix}"
    raw = good.read_bytes()
    bad.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match=r"bad\.nii"):
        find_images(tmp_path / "data")
    bad.unlink()
    assert [it["name"] for it in find_images(tmp_path / "data")] == ["good"]
    if suffix == ".nii.gz":  # a valid multi-member gzip (trailer size of the last member only) is accepted
        data = gzip.decompress(raw)
        bad.write_bytes(gzip.compress(data[:1000]) + gzip.compress(data[1000:]))
        assert len(find_images(tmp_path / "data")) == 2


def test_non_finite_nifti_is_refused_when_asked(tmp_path):
    vol = _vol(1).astype(np.float32)
    vol[3, 4, 1], vol[0, 0, 0] = np.nan, np.inf
    write_nifti(vol, AFFINE, tmp_path / "data" / "nan.nii.gz")
    assert [it["name"] for it in find_images(tmp_path / "data")] == ["nan"]  # sizes only by default
    with pytest.raises(ValueError, match=r"nan\.nii\.gz has 2 NaN/Inf voxel"):
        find_images(tmp_path / "data", check_finite=True)
    write_nifti(_vol(2), AFFINE, tmp_path / "ok" / "ok.nii.gz")
    assert len(find_images(tmp_path / "ok", check_finite=True)) == 1


def test_unreadable_dicom_is_an_error(tmp_path):
    s = write_dicom_series(_vol(0), tmp_path / "data" / "s", AFFINE)
    f = sorted(s.iterdir())[1]
    f.write_bytes(f.read_bytes()[:200])  # DICM preamble kept, header cut
    with pytest.raises(ValueError, match="unreadable DICOM"):
        find_images(tmp_path / "data")
