"""The ct_restore bundle: tiny IR-Flow and flow-map training, inference (NIfTI + DICOM), evaluation (tmp copy).

Besides "it runs", two properties are checked against an independent expectation:

- the HU <-> network-units mapping of inference is a round trip (an untrained network has a zero
  velocity, so the restored volume must be the input, voxel for voxel, in HU);
- evaluation simulates the doses it reports: the input PSNR falls by 10 log10(d1 / d2) dB (the
  Poisson part of the noise variance scales like 1 / dose) when the dose falls from d1 to d2, and
  with a zero velocity the output scores are the input scores.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.transforms import LoadImage

from bundle_helpers import copy_configs, run_bundle

# a smaller demo (2 training, 2 validation volumes), used by every run so it is generated once
DEMO = {"demo#num_images": 4}
TINY_TRAIN = {**DEMO, "max_epochs": 1, "val_interval": 1, "patches_per_volume": 2, "patch_size": [32, 32],
              "slice_size": [64, 64], "mct_steps": [2, 2]}
EVALUATE = ["train.json", "evaluate.json"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, single_thread):
    """A copy of the bundle's configs in a tmp folder, IR-Flow and flow map trained for one tiny epoch."""
    root = copy_configs(tmp_path_factory.mktemp("bundle"), "ct_restore")
    run_bundle(root, "train.json", **TINY_TRAIN)
    run_bundle(root, ["train.json", "train_flowmap.json"], **TINY_TRAIN)
    return root


@pytest.fixture(scope="module")
def untrained_weights(trained) -> Path:
    """The freshly initialised ``network_def`` (zero output layer: a zero velocity everywhere)."""
    parser = ConfigParser()
    parser.read_config(str(trained / "configs" / "inference.json"))
    torch.manual_seed(0)
    net = parser.get_parsed_content("network_def")
    x = torch.rand(1, 1, 16, 16)
    assert torch.count_nonzero(net(x, torch.full((1,), 0.3))) == 0  # the premise of the identity checks
    path = trained / "untrained.pt"
    torch.save(net.state_dict(), path)
    return path


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


def test_inference_with_a_zero_velocity_returns_the_input_in_hu(trained, untrained_weights):
    """Fails if preprocessing and postprocessing disagree on the HU scale or offset (hu_scale / hu_offset),
    if the divisible padding is not inverted in place, or if the restoration steps change x for a zero
    velocity: the restored volume must equal the input voxel for voxel, on the input's grid."""
    src = trained / "demo" / "images" / "ct_001.nii.gz"  # 128 x 128 x D at ~2.5 mm: padded for the network
    out = trained / "out_identity"
    run_bundle(trained, "inference.json", **DEMO, input_path=str(src), output_dir=str(out), ckpt_path=str(untrained_weights),
               num_steps=3, solver="heun")
    image = LoadImage(image_only=True)(str(src))
    pred = LoadImage(image_only=True)(str(out / "ct_001_restored.nii.gz"))
    assert pred.shape == image.shape
    np.testing.assert_allclose(pred.affine.numpy(), image.affine.numpy(), atol=1e-5)
    np.testing.assert_allclose(pred.numpy(), image.numpy(), atol=0.01)  # HU, float32 round trip


def test_inference_flowmap(trained):
    src = trained / "demo" / "images" / "ct_001.nii.gz"
    out = trained / "out_fm"
    run_bundle(trained, ["inference.json", "inference_flowmap.json"], **DEMO, input_path=str(src), output_dir=str(out),
               lookahead=0.5)
    _check_like(out / "ct_001_flowmap.nii.gz", src)


def test_evaluate_simulates_the_reported_doses(trained, untrained_weights):
    """Evaluation (train.json + evaluate.json overlay) with a zero-velocity network.

    - input PSNR: halving the dose doubles the Poisson noise variance (plus a little more from the
      electronic noise, which does not scale with dose), so every case loses between 3.01 dB and
      3.6 dB from dose 0.5 to 0.25. Fails if the levels are not applied, applied as dt of the CoT
      mapping (dose e^{-2 dt}: a 6 dB step), or to the wrong image.
    - output = input for a zero velocity, so the output scores must equal the input scores: fails
      if the evaluation scores something else than the inferer's output against the same reference.
    """
    out = trained / "eval_metrics"
    run_bundle(trained, EVALUATE, **DEMO, output_dir=str(out), ckpt_path=str(untrained_weights), doses=[0.5, 0.25],
               num_steps=2)
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    testing = json.loads((trained / "demo" / "datalist.json").read_text())["testing"]
    levels = sorted({r["dt"] for r in rows}, key=float)
    assert np.allclose([float(v) for v in levels], [-np.log(0.5), -np.log(0.25)])
    by_level = {level: [r for r in rows if r["dt"] == level] for level in levels}
    for sel in by_level.values():
        assert len(sel) == len(testing) + 1  # every case and the mean
        for r in sel:
            for score in ("psnr", "ssim", "rmse"):
                assert float(r[f"output_{score}"]) == pytest.approx(float(r[f"input_{score}"]), rel=1e-6, abs=1e-9)
    half, quarter = by_level[levels[0]], by_level[levels[1]]
    for a, b in zip(half, quarter):
        assert a["case"] == b["case"]
        drop = float(a["input_psnr"]) - float(b["input_psnr"])
        assert 10 * np.log10(2) - 0.15 < drop < 3.6, (a["case"], drop)
    assert 30 < float(half[-1]["input_psnr"]) < 60  # a CT-like noise level in the [-1000, 1000] HU window
    assert (out / "example.png").is_file()
