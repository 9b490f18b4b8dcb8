"""The motfm_generation bundle end to end on its demo data: train (2D, 3D overlay, torchrun on 2 CPU
processes), generate for a mask and a label, evaluate.

The bundle is copied into a temporary folder so that tests never write into the repository. Every
run uses tiny overrides (a few images, one iteration, one or two ODE steps). The runs are in process
(``monai.bundle.run``, as ``python -m monai.bundle run`` calls it), except the torchrun one, which runs
the command line.
"""

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from bundle_helpers import run_bundle, stats_logged_to
from monai.transforms import LoadImage

REPO = Path(__file__).resolve().parent.parent
DEMO_IMAGES = 18  # of the demo's 96: generating the realistic phantoms is most of a tiny run
TINY = {
    "max_epochs": 1, "epoch_length": 1, "batch_size": 2, "val_interval": 1, "val_num_steps": 1,
    "train#dataset#data": "$@datalist['training'][:4]", "validate#dataset#data": "$@datalist['validation'][:2]",
    "demo#num_images": DEMO_IMAGES,
}
TINY_ARGS = [arg for key, value in TINY.items() for arg in (f"--{key}", str(value))]  # the same, as command-line flags


def run(cmd: list[str], timeout: int = 300) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr




@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundles") / "motfm_generation"
    shutil.copytree(REPO / "bundles" / "motfm_generation" / "configs", root / "configs")
    run_bundle(root, "train.json", **TINY)
    return root


def test_training_writes_model_checkpoint_and_validation_dice(bundle):
    assert (bundle / "models" / "model.pt").is_file()
    ckpt = torch.load(bundle / "models" / "checkpoint_epoch=1.pt", weights_only=True)
    assert {"model", "optimizer", "lr_scheduler", "trainer"} <= set(ckpt)
    assert any(k.startswith("controlnet.") for k in ckpt["model"])  # mask conditioning through a ControlNet
    assert (bundle / "demo" / "masks").is_dir() and list((bundle / "eval").glob("events.out.tfevents*"))


def test_inference_for_a_mask_and_label_saves_image_mask_and_sidecar(bundle, tmp_path):
    mask_file = sorted((bundle / "demo" / "masks").glob("*.nii.gz"))[0]
    run_bundle(bundle, "inference.json", mask_path=str(mask_file), label=1, num_steps=2, guidance_scale=2.0,
               solver="heun", seed=3, output_dir=str(tmp_path))
    generated = tmp_path / f"{mask_file.name[:-7]}_generated_label1.nii.gz"
    mask_copy = tmp_path / f"{mask_file.name[:-7]}_generated_label1_mask.nii.gz"
    sidecar = json.loads((tmp_path / f"{mask_file.name[:-7]}_generated_label1.json").read_text())
    load = LoadImage(image_only=True)
    image, mask, copy = load(str(generated)), load(str(mask_file)), load(str(mask_copy))
    assert image.shape == mask.shape == (64, 64) and image.dtype == torch.float32
    np.testing.assert_allclose(image.affine, mask.affine, atol=1e-5)  # on the mask's grid
    np.testing.assert_array_equal(np.asarray(copy), np.asarray(mask))  # the conditioning mask, unchanged
    assert sidecar["label"] == 1 and sidecar["mask"] == mask_copy.name and sidecar["image"] == generated.name
    assert sidecar["num_steps"] == 2 and sidecar["guidance_scale"] == 2.0 and sidecar["solver"] == "heun"
    assert sidecar["seed"] == 3 and sidecar["mask_source"] == str(mask_file)
    assert mask_file.is_file() and len(list(mask_file.parent.glob("*"))) == DEMO_IMAGES  # inputs untouched


def test_evaluate_writes_metrics_csv_and_grid(bundle, tmp_path):
    run_bundle(bundle, ["train.json", "evaluate.json"], output_dir=str(tmp_path), num_steps=1,
               **{"dataset#data": "$@datalist['testing'][:3]", "demo#num_images": DEMO_IMAGES})
    with open(tmp_path / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 * 2 + 2  # every case generated as class 0 and class 1, then one mean row per class
    means = [r for r in rows if r["case"] == "mean"]
    assert [r["generated_label"] for r in means] == ["0", "1"]
    assert {"gen_lung", "real_lung", "dice_lung", "real_dice_lung", "dice_bone"} <= set(rows[0])
    # the intensity classifier is right on real images: the realistic phantom's lung label also holds
    # vessels and partial-volume edges, which intensity calls soft tissue (~0.8 at 64 x 64); a broken
    # classifier or threshold scores near 0 or the lung's area fraction
    assert float(means[0]["real_dice_lung"]) > 0.7
    assert -900 < float(means[0]["real_lung"]) < -650  # parenchyma with vessels: about -700 HU at 64 x 64
    assert (tmp_path / "generation_grid.png").stat().st_size > 1000


def test_3d_overlay_trains_one_step(tmp_path, caplog):
    root = tmp_path / "motfm_generation"
    shutil.copytree(REPO / "bundles" / "motfm_generation" / "configs", root / "configs")
    with stats_logged_to(caplog):
        run_bundle(root, ["train.json", "train_3d.json"], **TINY)
    assert "val_mask_dice" in caplog.text
    state = torch.load(root / "models_3d" / "model.pt", weights_only=True)
    assert state["unet.conv_in.conv.weight"].ndim == 5  # a 3D network
    assert LoadImage(image_only=True)(str(next((root / "demo_3d" / "images").glob("*.nii.gz")))).shape == (32, 32, 16)
    assert not (root / "models").exists()  # the 2D model folder is left alone


def test_torchrun_two_cpu_processes(bundle, tmp_path):
    """The issue's acceptance command: torchrun with train.json + multi_gpu_train.json (gloo on CPU)."""
    root = tmp_path / "motfm_generation"
    shutil.copytree(REPO / "bundles" / "motfm_generation" / "configs", root / "configs")
    shutil.copytree(bundle / "demo", root / "demo")  # the same demo data, already made: the ranks only train
    configs = repr([str(root / "configs" / "train.json"), str(root / "configs" / "multi_gpu_train.json")])
    out = run([
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "monai.bundle", "run",
        "--config_file", configs, "--bundle_root", str(root), *TINY_ARGS,
    ])
    assert (root / "models" / "model.pt").is_file() and (root / "models" / "checkpoint_epoch=1.pt").is_file()
    assert "val_mask_dice" in out
    state = torch.load(root / "models" / "model.pt", weights_only=True)
    assert not any(k.startswith("module.") for k in state)  # saved without the DDP wrapper
