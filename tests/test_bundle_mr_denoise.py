"""The mr_denoise bundle: tiny train, sliding-window inference, evaluation, resume (in a tmp copy)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from monai.transforms import LoadImage

from bundle_helpers import copy_configs, run_bundle

from monai_flow.flows import RelativeFlow
from monai_flow.transforms import MRDegradation


# tiny but complete: 1 epoch, 2 patches of 16^3 per volume, validation on a 32^3 centre crop
TINY_TRAIN = {"max_epochs": 1, "val_interval": 1, "patches_per_volume": 2, "patch_size": [16, 16, 16], "val_roi": [32, 32, 32]}
FAST_INFER = {"dt_schedule": [0.3], "roi_size": [32, 32, 32], "sw_batch_size": 8}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, single_thread):
    """A copy of the bundle's configs in a tmp folder, trained for one tiny epoch."""
    root = copy_configs(tmp_path_factory.mktemp("bundle"), "mr_denoise")
    run_bundle(root, "train.json", **TINY_TRAIN)
    return root


def test_reference_std_key():
    """Patches without background: RelativeFlow passes the whole-volume noise estimate to the operator."""
    seen = {}

    def net(y, dt):
        seen["y"] = y
        return torch.zeros_like(y)

    x = torch.ones(2, 1, 8, 8, 8)  # no background at all: a per-patch estimate is impossible
    RelativeFlow(MRDegradation(), reference_std_key="noise_std", seed=0).loss(net, {"image": x, "noise_std": torch.tensor([0.0, 0.1])})
    assert torch.equal(seen["y"][0], x[0]) and seen["y"][1].std() > 0.01
    with pytest.raises(ValueError, match="noise_std"):
        RelativeFlow(MRDegradation(), reference_std_key="noise_std").loss(net, {"image": x})


def test_train_outputs(trained):
    assert (trained / "models" / "model.pt").is_file()
    assert (trained / "models" / "checkpoint_epoch=1.pt").is_file()
    assert (trained / "demo" / "datalist.json").is_file()  # demo generated inside the (copied) bundle only


def test_resume(trained):
    """A second run continues from checkpoint_epoch=1 up to max_epochs=2."""
    torch.set_num_threads(1)
    run_bundle(trained, "train.json", **{**TINY_TRAIN, "max_epochs": 2, "val_interval": 5})
    assert (trained / "models" / "checkpoint_epoch=2.pt").is_file()


def test_inference_nifti_and_dicom(trained):
    src = trained / "demo" / "images" / "mr_000.nii.gz"
    out = trained / "out"
    run_bundle(trained, "inference.json", input_path=str(src), output_dir=str(out), save_dicom=True, **FAST_INFER)
    image = LoadImage(image_only=True)(str(src))
    pred = LoadImage(image_only=True)(str(out / "mr_000_denoised.nii.gz"))
    assert pred.shape == image.shape
    np.testing.assert_allclose(pred.affine.numpy(), image.affine.numpy(), atol=1e-5)
    # output in the input's units (the network works on volume / 99th percentile), magnitudes >= 0
    assert float(pred.min()) >= 0 and 0.5 < float(np.percentile(pred, 99) / np.percentile(image, 99)) < 2.0
    dicom = out / "mr_000_dicom"
    assert dicom.is_dir() and len(list(dicom.iterdir())) == image.shape[-1]
    reread = LoadImage(reader="ITKReader", image_only=True)(str(dicom))
    assert reread.shape == image.shape
    np.testing.assert_allclose(reread.affine.numpy(), image.affine.numpy(), atol=1e-3)
    assert src.is_file()  # inputs untouched


def test_evaluate(trained):
    out = trained / "eval_metrics"
    run_bundle(trained, "evaluate.json", output_dir=str(out), levels=[0.5, 1.0], **{**FAST_INFER, "roi_size": [64, 64, 64]})
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    testing = json.loads((trained / "demo" / "datalist.json").read_text())["testing"]
    for level in ("0.5", "1.0"):
        sel = [r for r in rows if r["dt"] == level]
        assert len(sel) == len(testing) + 1  # every case and the mean
        assert all(np.isfinite(float(r["output_psnr"])) and float(r["input_ssim"]) <= 1 for r in sel)
    assert (out / "example.png").is_file()
