"""``monai-flow generate`` (MOTFM over its bundle) and ``monai-flow demo`` (tiny training override)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from bundle_helpers import bundle_with_untrained_weights, copy_configs
from test_cli import cli, files_in, hashes, nifti

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def motfm(tmp_path_factory) -> Path:
    return bundle_with_untrained_weights(tmp_path_factory.mktemp("bundles"), "motfm_generation")


def chest_mask(shape=(64, 64)) -> np.ndarray:
    x, y = np.mgrid[: shape[0], : shape[1]]
    r = np.hypot(x - shape[0] / 2, (y - shape[1] / 2) * 1.3)
    mask = np.where(r < 28, 1, 0)
    mask[(r < 20) & (np.abs(x - shape[0] / 2) > 4)] = 2
    mask[(r > 25) & (r < 28)] = 3
    return mask.astype(np.uint8)


def test_generate_writes_the_bundle_outputs_reproducibly(tmp_path, capsys, motfm):
    mask = nifti(tmp_path / "m.nii.gz", chest_mask(), affine=np.diag([5.0, 5.0, 1.0, 1.0]))
    before = hashes(mask)
    args = ["--bundle", "motfm_generation", "--bundle-root", motfm, "--device", "cpu", "--mask", mask, "--label", 1,
            "--steps", 2, "--guidance", 2.0, "--seed", 3]
    code, out, err = cli(capsys, "generate", tmp_path / "out", *args)
    assert code == 0, err
    names = ["m_generated_label1.json", "m_generated_label1.nii.gz", "m_generated_label1_mask.nii.gz"]
    assert files_in(tmp_path / "out") == names  # no staging folder left
    image = nib.load(tmp_path / "out" / names[1])
    assert image.shape == (64, 64) and np.isfinite(image.get_fdata()).all()
    sidecar = json.loads((tmp_path / "out" / names[0]).read_text())
    assert sidecar["label"] == 1 and sidecar["num_steps"] == 2 and sidecar["seed"] == 3
    assert sidecar["mask_source"] == str(mask)
    code, _, err = cli(capsys, "generate", tmp_path / "out", *args)
    assert code == 2 and "output exists" in err
    code, _, _ = cli(capsys, "generate", tmp_path / "again", *args)
    np.testing.assert_array_equal(nib.load(tmp_path / "again" / names[1]).get_fdata(), image.get_fdata())
    assert hashes(mask) == before


def test_generate_checks_label_and_mask(tmp_path, capsys, motfm):
    base = ["--bundle-root", motfm, "--device", "cpu", "--steps", 1]
    mask = nifti(tmp_path / "m.nii.gz", chest_mask())
    code, _, err = cli(capsys, "generate", tmp_path / "out", *base, "--mask", mask, "--label", 2)
    assert code == 2 and "--label 2 is out of range: bundle motfm_generation has classes 0..1" in err
    volume = nifti(tmp_path / "v.nii.gz", np.stack([chest_mask()] * 4, axis=-1))
    code, _, err = cli(capsys, "generate", tmp_path / "out", *base, "--mask", volume, "--label", 0)
    assert code == 2 and "is 3D (shape (64, 64, 4)) but the bundle generates 2D images" in err
    labels = nifti(tmp_path / "bad.nii.gz", chest_mask() * 3)
    code, _, err = cli(capsys, "generate", tmp_path / "out", *base, "--mask", labels, "--label", 0)
    assert code == 2 and "outside the labels 0..4" in err
    code, _, err = cli(capsys, "generate", tmp_path / "out", *base, "--mask", tmp_path / "none.nii.gz", "--label", 0)
    assert code == 2 and "does not exist" in err
    assert not (tmp_path / "out").exists()


def test_demo_trains_denoises_and_plots(tmp_path, capsys):
    root = copy_configs(tmp_path / "bundles", "ct_denoise")
    out = tmp_path / "demo"
    code, stdout, err = cli(capsys, "demo", "--output", out, "--epochs", 1, "--num-images", 3, "--image-size", 64,
                            "--bundle-root", root, "--device", "cpu")
    assert code == 0, err[-3000:]
    assert (out / "models" / "model.pt").is_file() and (out / "data" / "datalist.json").is_file()
    assert len(list((out / "denoised").glob("*_denoised.nii.gz"))) == 2
    png = (out / "comparison.png").read_bytes()
    assert png.startswith(b"\x89PNG") and "PSNR noisy" in stdout
    assert not list(root.glob("demo")) and not (root / "models").exists()  # nothing written into the bundle
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    code, _, err = cli(capsys, "demo", "--output", foreign, "--quick", "--bundle-root", root)
    assert code == 2 and "is not a monai-flow demo folder" in err and files_in(foreign) == ["thesis.tex"]
