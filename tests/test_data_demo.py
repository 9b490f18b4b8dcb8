"""Demo data: layout, readability with MONAI readers, noise levels measured against the kept-apart
references, determinism under the seed, idempotence, and refusal to write into foreign folders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from monai.transforms import LoadImage

from monai_flow.data import DEMO_MARKER, build_datalist, prepare_demo_data
from monai_flow.data.demo_datasets import MASK_LABELS
from monai_flow.transforms import estimate_rician_noise_std

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"), pytest.mark.filterwarnings("ignore::DeprecationWarning")]


@pytest.fixture(scope="module")
def ct_demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("ct") / "demo"
    return prepare_demo_data("ct_denoise", str(root), seed=0, num_images=4, image_size=128)


def _load(path):
    return LoadImage(reader="monai_flow.data.ITKSeriesReader", image_only=True)(path)


def test_ct_demo_layout_and_noise_levels(ct_demo):
    root = ct_demo["dataset_dir"]
    info = ct_demo["info"]
    assert json.load(open(f"{root}/{DEMO_MARKER}"))["kind"] == "ct_denoise"
    items = ct_demo["training"] + ct_demo["validation"]
    assert len(items) == 4 and len(ct_demo["validation"]) == 2
    assert {it["format"] for it in items} == {"dicom", "nifti"}
    assert all("reference" not in it for it in items)  # references only for evaluation (testing)
    assert all(it["reference"].startswith(f"{root}/reference/") for it in ct_demo["testing"])
    stds = []
    for vol in info["volumes"]:
        noisy = _load(f"{root}/{vol['image']}").numpy()
        ref_img = nib.load(f"{root}/{vol['reference']}")
        ref = ref_img.get_fdata()
        assert noisy.shape == ref.shape == tuple(vol["shape"])
        np.testing.assert_allclose(_load(f"{root}/{vol['image']}").affine.numpy(), ref_img.affine, atol=1e-4)
        body = ref > -900
        diff = (noisy - ref)[body]
        # nearly unbiased: the log of few counts along the longest rays (photon starvation) biases a little
        assert abs(diff.mean()) < 0.25 * diff.std()
        stds.append(diff.std())
        lung, soft = (ref > -950) & (ref < -750), (ref > 0) & (ref < 100)  # textured tissues: ranges, not values
        assert lung.sum() > 500 and soft.sum() > 500
        for tissue in (lung, soft):  # each tissue keeps its HU
            assert abs((noisy - ref)[tissue].mean()) < 0.25 * diff.std()
    doses = np.array([v["dose_fraction"] for v in info["volumes"]])
    assert doses.min() >= 0.25 and doses.max() <= 1.0 and doses.max() / doses.min() > 1.5
    stds = np.array(stds)
    assert stds.max() / stds.min() > 1.2  # heterogeneous noise levels
    np.testing.assert_allclose(stds, [v["noise_std_hu"] for v in info["volumes"]], rtol=0.05)
    spacing = np.array([v["spacing_mm"][0] for v in info["volumes"]])
    # lower dose, more noise (at comparable pixel size: std * spacing^1.5 removes the pixel-size effect)
    assert np.corrcoef(np.log(doses), np.log(stds * spacing**1.5))[0, 1] < -0.8
    dicom_dir = next(f"{root}/{v['image']}" for v in info["volumes"] if v["format"] == "dicom")
    files = sorted(Path(dicom_dir).iterdir())
    ds = pydicom.dcmread(files[0])
    assert ds.Modality == "CT" and ds.SeriesInstanceUID == next(v["series_uid"] for v in info["volumes"] if v["format"] == "dicom")
    stock = LoadImage(reader="ITKReader", image_only=True)(dicom_dir)  # stock MONAI reader works too
    assert stock.shape == _load(dicom_dir).shape


def test_demo_idempotent_and_deterministic(ct_demo, tmp_path):
    root = ct_demo["dataset_dir"]
    marker = f"{root}/{DEMO_MARKER}"
    mtime = os.stat(marker).st_mtime_ns
    again = prepare_demo_data("ct_denoise", root, seed=0, num_images=4, image_size=128)
    assert again == ct_demo and os.stat(marker).st_mtime_ns == mtime  # reused, not rewritten
    other = prepare_demo_data("ct_denoise", str(tmp_path / "same_seed"), seed=0, num_images=4, image_size=128)
    for a, b in zip(ct_demo["info"]["volumes"], other["info"]["volumes"]):
        assert a["dose_fraction"] == b["dose_fraction"] and a["shape"] == b["shape"]
        np.testing.assert_array_equal(_load(f"{root}/{a['image']}").numpy(),
                                      _load(f"{other['dataset_dir']}/{b['image']}").numpy())
    # a demo of ours with other parameters is replaced
    changed = prepare_demo_data("ct_denoise", str(tmp_path / "same_seed"), seed=1, num_images=3, image_size=128)
    assert changed["info"]["seed"] == 1 and len(changed["info"]["volumes"]) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["same_seed"]  # no staging leftovers


def test_refuses_foreign_folder(tmp_path):
    user = tmp_path / "my_scans"
    user.mkdir()
    (user / "patient.nii.gz").write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="not a monai-flow demo"):
        prepare_demo_data("mr_denoise", str(user))
    assert [p.name for p in user.iterdir()] == ["patient.nii.gz"] and (user / "patient.nii.gz").read_bytes() == b"precious"
    (tmp_path / "empty").mkdir()
    assert len(prepare_demo_data("mr_denoise", str(tmp_path / "empty"), num_images=3, image_size=(48, 48, 16))["training"]) == 1
    with pytest.raises(ValueError, match="kind"):
        prepare_demo_data("ct_nope", str(tmp_path / "x"))


def test_mr_demo_rician_levels(tmp_path):
    out = prepare_demo_data("mr_denoise", str(tmp_path / "mr"), seed=0, image_size=(64, 56, 24))
    vols = out["info"]["volumes"]
    assert len(vols) == 4 and len(out["validation"]) == 2
    fractions = np.array([v["noise_fraction_of_max"] for v in vols])
    assert fractions.min() >= 0.01 and fractions.max() <= 0.05 and fractions.max() / fractions.min() > 2
    for v in vols:
        noisy = _load(f"{out['dataset_dir']}/{v['image']}")
        ref = nib.load(f"{out['dataset_dir']}/{v['reference']}").get_fdata()
        assert tuple(noisy.shape) == (64, 56, 24)
        background = noisy.numpy()[ref == 0]
        assert background.mean() == pytest.approx(1.2533 * v["noise_std"], rel=0.05)  # Rayleigh background
        est = float(estimate_rician_noise_std(torch.as_tensor(noisy.numpy())[None, None])[0])
        assert est == pytest.approx(v["noise_std"], rel=0.1)


def test_motfm_demo_masks_and_classes(tmp_path):
    out = prepare_demo_data("motfm_generation", str(tmp_path / "motfm"), seed=0, num_images=24)
    items = out["training"] + out["validation"]
    assert len(items) == 24 and sorted({it["label"] for it in items}) == [0, 1]
    assert sum(it["label"] for it in items) == 12
    for it in items[:8]:
        img, mask = _load(it["image"]), _load(it["mask"])
        assert tuple(img.shape) == tuple(mask.shape) == (64, 64)
        m, x = mask.numpy(), img.numpy()
        assert (m == MASK_LABELS["lesion"]).any() == bool(it["label"])
        assert set(np.unique(m)) <= set(MASK_LABELS.values())
        # masks follow the phantom's tissue labels: air is air, lung is lung-dense, bone is dense
        air = x[m == MASK_LABELS["air"]]  # partial-volume edges: only most of an air voxel is air
        assert np.median(air) == -1000 and air.mean() < -950 and np.median(x[m == MASK_LABELS["lung"]]) < -600
        assert np.median(x[m == MASK_LABELS["bone"]]) > 150
        np.testing.assert_allclose(img.affine.numpy(), mask.affine.numpy())
    assert build_datalist(out["dataset_dir"])["training"] == out["training"]


def test_ct_restore_full_dose_and_cli(tmp_path):
    cmd = [sys.executable, "-m", "monai_flow.data.demo_datasets", "ct_restore", str(tmp_path / "r"), "--num-images", "3"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "1 training" in res.stdout
    info = json.load(open(tmp_path / "r" / "demo_info.json"))
    assert all(v["dose_fraction"] == 1.0 for v in info["volumes"]) and info["i0_full_dose"] == 1e5
    assert all(3 < v["noise_std_hu"] < 20 for v in info["volumes"])  # full-dose noise: small, not zero
