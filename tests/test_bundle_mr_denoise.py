"""The mr_denoise bundle: tiny train, sliding-window inference, evaluation, resume (in a tmp copy).

Besides "it runs", properties checked against an independent expectation:

- the intensity normalisation of inference is a round trip: an untrained network has a zero
  velocity, so the denoised volume must be the input voxel for voxel, in the input's units;
- evaluation adds the Rician noise it says it adds: the input PSNR of every case and level equals
  the PSNR predicted from Rician moments (E[M] = s sqrt(pi/2) L_1/2(-A^2 / 2 s^2)) of the noise-free
  reference A at the added std s = s_ref sqrt(e^{2 dt} - 1), computed here from the NIfTI files
  with numpy / scipy; with a zero velocity the output scores equal the input scores.
"""

from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.transforms import LoadImage
from scipy.special import i0e, i1e

from bundle_helpers import copy_configs, run_bundle

from monai_flow.flows import RelativeFlow
from monai_flow.transforms import MRDegradation


# tiny but complete: a 48 x 56 x 32 demo, 1 epoch, 2 patches of 16^3 per volume, validation on a 32^3 centre crop
DEMO = {"demo#image_size": [48, 56, 32]}
TINY_TRAIN = {"max_epochs": 1, "val_interval": 1, "patches_per_volume": 2, "patch_size": [16, 16, 16],
              "val_roi": [32, 32, 32], **DEMO}
FAST_INFER = {"dt_schedule": [0.3], "roi_size": [32, 32, 32], "sw_batch_size": 8, **DEMO}
EVALUATE = ["train.json", "evaluate.json"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, single_thread):
    """A copy of the bundle's configs in a tmp folder, trained for one tiny epoch."""
    root = copy_configs(tmp_path_factory.mktemp("bundle"), "mr_denoise")
    run_bundle(root, "train.json", **TINY_TRAIN)
    return root


@pytest.fixture(scope="module")
def untrained_weights(trained):
    """The freshly initialised ``network_def`` (zero output layer: a zero velocity everywhere)."""
    parser = ConfigParser()
    parser.read_config(str(trained / "configs" / "inference.json"))
    torch.manual_seed(0)
    net = parser.get_parsed_content("network_def")
    assert torch.count_nonzero(net(torch.rand(1, 1, 16, 16, 16), torch.full((1,), 0.3))) == 0
    path = trained / "untrained.pt"
    torch.save(net.state_dict(), path)
    return path


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


def test_inference_with_a_zero_velocity_returns_the_input(trained, untrained_weights):
    """Fails if the output is not multiplied back by the same per-volume percentile it was divided by,
    if sliding-window stitching moves or re-weights voxels, or if the geometry is lost."""
    src = trained / "demo" / "images" / "mr_001.nii.gz"
    out = trained / "out_identity"
    run_bundle(trained, "inference.json", input_path=str(src), output_dir=str(out), ckpt_path=str(untrained_weights),
               **{**FAST_INFER, "roi_size": [64, 64, 32], "overlap": 0.5})  # 3 overlapping windows along z
    image = nib.load(str(src))
    pred = nib.load(str(out / "mr_001_denoised.nii.gz"))
    np.testing.assert_allclose(pred.affine, image.affine, atol=1e-5)
    np.testing.assert_allclose(pred.get_fdata(), image.get_fdata(), rtol=1e-5, atol=1e-5 * float(image.get_fdata().max()))


def rician_psnr(reference: np.ndarray, std: float, window: tuple[float, float]) -> float:
    """Expected PSNR (dB, data range = window width) of a Rician magnitude |A + n|, n ~ CN(0, 2 std^2), against A."""
    a = reference.astype(np.float64)
    v = a**2 / (2 * std**2)
    mean = std * np.sqrt(np.pi / 2) * ((1 + v) * i0e(v / 2) + v * i1e(v / 2))  # E[M]
    mse = np.mean(2 * a**2 + 2 * std**2 - 2 * a * mean)  # E[(M - A)^2] = E[M^2] - 2 A E[M] + A^2
    return 10 * np.log10((window[1] - window[0]) ** 2 / mse)


def test_evaluate_adds_the_rician_noise_it_reports(trained, untrained_weights):
    """Evaluation (train.json + evaluate.json overlay) with a zero-velocity network.

    The input PSNR is predicted from theory for each case and level: fails if dt is mapped to the
    wrong std (e.g. s_ref (e^dt - 1), or the dose mapping), if s_ref is estimated from the clean
    reference instead of eval_reference_std, if the noise is Gaussian instead of Rician (the air
    background would get half the error), or if the reference is scaled by another percentile than
    the image's. The output scores must equal the input scores (zero velocity)."""
    out = trained / "eval_metrics"
    levels = [0.5, 1.0]
    run_bundle(trained, EVALUATE, output_dir=str(out), levels=levels, ckpt_path=str(untrained_weights),
               **{**FAST_INFER, "roi_size": [64, 64, 64]})
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    testing = json.loads((trained / "demo" / "datalist.json").read_text())["testing"]
    parser = ConfigParser()
    parser.read_config([str(trained / "configs" / c) for c in EVALUATE])
    s_ref, window, percentile = parser["eval_reference_std"], parser["window"], parser["norm_percentile"]
    for level in levels:
        sel = [r for r in rows if float(r["dt"]) == level]
        assert len(sel) == len(testing) + 1  # every case and the mean
        for r, item in zip(sel, testing):
            image = nib.load(str(trained / "demo" / item["image"])).get_fdata()
            reference = nib.load(str(trained / "demo" / item["reference"])).get_fdata() / np.percentile(image, percentile)
            expected = rician_psnr(reference, s_ref * np.sqrt(np.exp(2 * level) - 1), window)
            assert float(r["input_psnr"]) == pytest.approx(expected, abs=0.05), (item["name"], level)
        for r in sel:
            for score in ("psnr", "ssim", "rmse"):
                assert float(r[f"output_{score}"]) == pytest.approx(float(r[f"input_{score}"]), rel=1e-4)
    assert (out / "example.png").is_file()
