"""The ct_restore bundle: tiny IR-Flow and flow-map training, inference (NIfTI + DICOM), evaluation (tmp copy)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from monai.transforms import LoadImage

from bundle_helpers import copy_configs, run_bundle



# a smaller demo (2 training, 2 validation volumes), used by every run so it is generated once
DEMO = {"demo": "$monai_flow.data.prepare_demo_data('ct_restore', @demo_dir, num_images=4)"}
TINY_TRAIN = {**DEMO, "max_epochs": 1, "val_interval": 1, "patches_per_volume": 2, "patch_size": [32, 32],
              "slice_size": [64, 64], "mct_steps": [2, 2]}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, single_thread):
    """A copy of the bundle's configs in a tmp folder, IR-Flow and flow map trained for one tiny epoch."""
    root = copy_configs(tmp_path_factory.mktemp("bundle"), "ct_restore")
    run_bundle(root, "train.json", **TINY_TRAIN)
    run_bundle(root, ["train.json", "train_flowmap.json"], **TINY_TRAIN)
    return root


def test_train_outputs(trained):
    assert (trained / "models" / "model.pt").is_file()
    assert (trained / "models" / "flowmap" / "model.pt").is_file()  # the flow map never overwrites IR-Flow's model
    assert (trained / "demo" / "datalist.json").is_file()


def _check_like(pred_path: Path, src: Path):
    image = LoadImage(reader="monai_flow.data.ITKSeriesReader", image_only=True)(str(src))
    pred = LoadImage(image_only=True)(str(pred_path))
    assert pred.shape == image.shape
    np.testing.assert_allclose(pred.affine.numpy(), image.affine.numpy(), atol=1e-4)
    # HU: air stays near -1000, output not in network units
    assert float(pred.min()) < -500 and float(pred.max()) > 0
    return image


def test_inference_dicom_series(trained):
    src = trained / "demo" / "images" / "ct_000"  # a DICOM series folder
    assert src.is_dir()
    out = trained / "out"
    run_bundle(trained, "inference.json", **DEMO, input_path=str(src), output_dir=str(out), save_dicom=True, num_steps=1)
    image = _check_like(out / "ct_000_restored.nii.gz", src)
    dicom = out / "ct_000_dicom"
    reread = LoadImage(reader="ITKReader", image_only=True)(str(dicom))
    assert reread.shape == image.shape
    np.testing.assert_allclose(reread.affine.numpy(), image.affine.numpy(), atol=1e-3)
    nifti = LoadImage(image_only=True)(str(out / "ct_000_restored.nii.gz"))
    np.testing.assert_allclose(reread.numpy(), nifti.numpy(), atol=1.0)  # HU to integer precision
    assert len(list(src.iterdir())) == image.shape[-1]  # input series untouched


def test_inference_flowmap(trained):
    src = trained / "demo" / "images" / "ct_001.nii.gz"
    out = trained / "out_fm"
    run_bundle(trained, ["inference.json", "inference_flowmap.json"], **DEMO, input_path=str(src), output_dir=str(out),
         lookahead=0.5)
    _check_like(out / "ct_001_flowmap.nii.gz", src)


def test_evaluate(trained):
    out = trained / "eval_metrics"
    run_bundle(trained, "evaluate.json", **DEMO, output_dir=str(out), doses=[0.5, 0.25], num_steps=1)
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    testing = json.loads((trained / "demo" / "datalist.json").read_text())["testing"]
    levels = sorted({r["dt"] for r in rows}, key=float)
    assert np.allclose([float(v) for v in levels], [-np.log(0.5), -np.log(0.25)])
    for level in levels:
        sel = [r for r in rows if r["dt"] == level]
        assert len(sel) == len(testing) + 1  # every case and the mean
        assert all(np.isfinite(float(r["output_psnr"])) for r in sel)
    assert (out / "example.png").is_file()
