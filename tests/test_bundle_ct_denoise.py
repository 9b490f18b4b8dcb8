"""The ct_denoise bundle end to end on its demo data: train, infer (NIfTI and DICOM out), evaluate.

The bundle is copied into a temporary folder so that tests never write into the repository. The runs are
in process (``monai.bundle.run``, as ``python -m monai.bundle run`` calls it): ``tests/test_resume.py``
runs the same bundle as a separate ``python -m monai.bundle run`` command.
"""

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from bundle_helpers import run_bundle as run_in_process, stats_logged_to
from monai.bundle import ConfigParser
from monai.transforms import LoadImage

from monai_flow.inferers import QualityTimeCalibration

REPO = Path(__file__).resolve().parent.parent


# a smaller demo (2 training, 2 testing volumes of 64 x 64 x 6) for every run (inference on demo/images
# would otherwise ask for the default demo size and rebuild it); training on 32^2 patches, 60 views
DEMO = {"demo#num_images": 4, "demo#image_size": 64}
TRAIN = {"patches_per_volume": 2, "patch_size": [32, 32], "num_views": 60, "noise_realizations": 1}


def run_bundle(root: Path, config, **overrides) -> None:
    run_in_process(root, config, **DEMO, **overrides)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundles") / "ct_denoise"
    shutil.copytree(REPO / "bundles" / "ct_denoise", root, ignore=shutil.ignore_patterns("demo", "models", "eval", "output"))
    run_bundle(root, "train.json", max_epochs=2, val_interval=1, **TRAIN)
    return root


def test_training_writes_model_and_resumable_checkpoint(bundle, caplog):
    assert (bundle / "models" / "model.pt").is_file()
    ckpt = torch.load(bundle / "models" / "checkpoint_epoch=2.pt", weights_only=True)
    assert {"model", "optimizer", "objective", "trainer"} <= set(ckpt)
    assert ckpt["trainer"]["iteration"] == 2 * ckpt["trainer"]["epoch_length"] and ckpt["objective"]["curriculum"]["epoch"] == 2
    # demo: noisy references for training, clean phantoms apart for evaluation only
    assert (bundle / "demo" / "reference").is_dir()
    # the quality-time calibration, measured when training completed, beside the weights, read by inference
    calibration = QualityTimeCalibration.load(bundle / "models" / "model.quality_time.json")
    assert calibration.nominal == (0.0, *json.loads((bundle / "configs" / "train.json").read_text())["calibration_gaps"])
    assert calibration.reach() > 0  # even two epochs of training remove some noise
    validation = json.loads((bundle / "demo" / "datalist.json").read_text())["validation"]
    assert len(calibration.noise) == 3 * len(validation)  # a point per validation reference and noise scale
    # (at this toy scale, 64 x 64 phantoms, the estimator's reading is mostly anatomy: 240 - 280 HU whatever the
    # scale; the calibration maps that reading, as auto sees it, to what is reached)
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle)
    assert parser.get_parsed_content("flow_inferer").calibration == calibration
    # resume: the same command with more epochs continues from epoch 2
    with stats_logged_to(caplog):
        run_bundle(bundle, "train.json", max_epochs=3, val_interval=5, **TRAIN)
    assert "Epoch: 3/3" in caplog.text and "Epoch: 1/3" not in caplog.text


def test_inference_on_a_dicom_series_writes_nifti_and_dicom_with_the_input_geometry(bundle, tmp_path):
    series = sorted(p for p in (bundle / "demo" / "images").iterdir() if p.is_dir())[0]
    out_dir = tmp_path / "out"
    run_bundle(bundle, "inference.json", input_path=str(series), output_dir=str(out_dir), save_dicom=True, dt_schedule=[0.2])
    source = LoadImage(reader="ITKReader", image_only=True)(str(series))
    nifti = LoadImage(image_only=True)(str(next(out_dir.glob("*_denoised.nii.gz"))))
    assert nifti.shape == source.shape
    np.testing.assert_allclose(nifti.affine, source.affine, atol=1e-3)
    assert abs(float(nifti.mean() - source.mean())) < 50  # still HU
    dicom_dirs = [p for p in out_dir.iterdir() if p.is_dir()]
    assert len(dicom_dirs) == 1
    dicom = LoadImage(reader="ITKReader", image_only=True)(str(dicom_dirs[0]))
    assert dicom.shape == source.shape
    np.testing.assert_allclose(dicom.affine, source.affine, atol=1e-3)
    np.testing.assert_allclose(np.asarray(dicom), np.asarray(nifti), atol=1.0)  # HU stored as integers
    import pydicom

    src_ds = pydicom.dcmread(next(series.iterdir()))
    out_ds = pydicom.dcmread(next(dicom_dirs[0].iterdir()))
    assert out_ds.PatientID == src_ds.PatientID and out_ds.StudyInstanceUID == src_ds.StudyInstanceUID
    assert out_ds.SeriesInstanceUID != src_ds.SeriesInstanceUID and "DERIVED" in out_ds.ImageType


def test_inference_by_sliding_window_on_a_nifti_file(bundle, tmp_path):
    nifti = sorted((bundle / "demo" / "images").glob("*.nii.gz"))[0]
    run_bundle(bundle, "inference.json", input_path=str(nifti), output_dir=str(tmp_path), use_sliding_window=True,
               roi_size=[64, 64, 1], dt_schedule=[0.2])
    out = LoadImage(image_only=True)(str(next(tmp_path.glob("*_denoised.nii.gz"))))
    src = LoadImage(image_only=True)(str(nifti))
    assert out.shape == src.shape and np.allclose(out.affine, src.affine, atol=1e-4)


def test_evaluate_writes_metrics_for_every_level(bundle, tmp_path):
    run_bundle(bundle, ["train.json", "evaluate.json"], output_dir=str(tmp_path), doses=[0.5, 0.1],  # the overlay
               dt_schedule="auto", target_std_hu=30.0, max_dt=0.5, min_dt=0.2)  # the adaptive schedule in few steps
    with open(tmp_path / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    means = [r for r in rows if r["case"] == "mean"]
    assert len(means) == 2 and len(rows) == 2 + 2 * 2  # two test volumes
    assert float(means[0]["input_psnr"]) > float(means[1]["input_psnr"])  # dose 0.5 is cleaner than 0.1
    assert (tmp_path / "example.png").is_file()
