"""The ``monai-flow`` command line: help, ``denoise`` (batch behaviour, input checks, no data loss), ``export``.

Commands run in-process through ``monai_flow.cli.main`` on tiny volumes, with bundle copies in a
temporary folder whose ``models/model.pt`` holds freshly initialised weights (no training).
Every failure test checks the exit status, the message, that no output (partial or temporary)
is left, and that the inputs' bytes are unchanged (sha256).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from bundle_helpers import bundle_with_untrained_weights, copy_configs, run_bundle

from monai_flow.cli import main
from monai_flow.data import write_dicom_series, write_nifti

pytestmark = pytest.mark.usefixtures("single_thread")

AFFINE = np.diag([-2.0, -2.0, 3.0, 1.0])
SUBCOMMANDS = ("denoise", "simulate", "generate", "demo", "export")


# ------------------------------------------------------------------------------------ helpers
def ct_volume(shape=(16, 16, 3), seed=0) -> np.ndarray:
    """A water disc in air (HU) with some noise, (X, Y, Z)."""
    x, y = np.mgrid[: shape[0], : shape[1]]
    disc = np.hypot(x - shape[0] / 2, y - shape[1] / 2) < shape[0] * 0.4
    hu = np.where(disc, 40.0, -1000.0)[..., None].repeat(shape[2], axis=-1)
    return (hu + np.random.default_rng(seed).normal(0, 20, shape)).astype(np.float32)


def mr_volume(shape=(16, 16, 16), seed=0) -> np.ndarray:
    x, y, z = np.mgrid[: shape[0], : shape[1], : shape[2]]
    ball = np.hypot(np.hypot(x - shape[0] / 2, y - shape[1] / 2), z - shape[2] / 2) < shape[0] * 0.35
    return (np.where(ball, 100.0, 0.0) + np.abs(np.random.default_rng(seed).normal(0, 3, shape))).astype(np.float32)


def nifti(path: Path, array: np.ndarray, affine=AFFINE) -> Path:
    return write_nifti(array, affine, path)


def dicom(path: Path, array: np.ndarray, modality: str = "CT") -> Path:
    return write_dicom_series(array, path, spacing=(2.0, 2.0, 3.0), origin=(0.0, 0.0, 0.0), modality=modality)


def hashes(*paths: Path) -> dict[str, str]:
    """sha256 of every file under ``paths`` (files or folders)."""
    out = {}
    for p in paths:
        for f in [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file()):
            out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def files_in(folder: Path) -> list[str]:
    """Every file and folder under ``folder`` (hidden temporary ones included), relative."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


def cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, Path]:
    """Copies of the three denoising bundles with untrained weights in models/model.pt."""
    root = tmp_path_factory.mktemp("bundles")
    out = {name: bundle_with_untrained_weights(root, name) for name in ("ct_denoise", "mr_denoise", "ct_restore")}
    return out


@pytest.fixture
def ct_args(bundles):
    return ["--bundle", "ct_denoise", "--bundle-root", bundles["ct_denoise"], "--device", "cpu"]


# --------------------------------------------------------------------------------------- help
def test_help_of_every_subcommand(capsys):
    code, out, _ = cli(capsys, "--help")
    assert code == 0 and all(c in out for c in SUBCOMMANDS) and "exit status" in out
    for command in SUBCOMMANDS:
        code, out, _ = cli(capsys, command, "--help")
        assert code == 0, command
        assert out.startswith(f"usage: monai-flow {command}") and "examples:" in out and "--verbose" in out, command
    code, _, err = cli(capsys, "denoise")  # missing arguments: usage error
    assert code == 2 and "monai-flow: error:" in err
    code, _, err = cli(capsys, "denoise", "a.nii.gz", "out", "--bundle", "ct_denoise", "--device", "gpu")
    assert code == 2 and "--device must be cpu, cuda or cuda:N, got 'gpu'" in err
    if not torch.cuda.is_available():
        code, _, err = cli(capsys, "denoise", "a.nii.gz", "out", "--bundle", "ct_denoise", "--device", "cuda")
        assert code == 2 and "CUDA is not available" in err


def test_console_script_and_python_m_entry_points():
    for cmd in ([sys.executable, "-m", "monai_flow.cli", "simulate", "--help"],
                *([[shutil.which("monai-flow"), "denoise", "--help"]] if shutil.which("monai-flow") else [])):
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0 and "examples:" in result.stdout, result.stderr
    cmd = [sys.executable, "-m", "monai_flow.cli", "simulate", "ct", "a.nii.gz", "b.nii.gz", "--dose", "2"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "monai-flow: error: argument --dose" in result.stderr
    assert "Traceback" not in result.stderr


# ------------------------------------------------------------------------------------ denoise
def test_denoise_a_folder_of_nifti_and_dicom_matches_the_bundle(tmp_path, capsys, bundles, ct_args):
    src = tmp_path / "in"
    nifti(src / "a.nii.gz", ct_volume(seed=1))
    dicom(src / "series", ct_volume(seed=2))
    before = hashes(src)
    out = tmp_path / "out"
    code, stdout, _ = cli(capsys, "denoise", src, out, *ct_args, "--dicom-out")
    assert code == 0 and "denoised 2 input(s)" in stdout
    assert files_in(out)[:2] == ["a_denoised.nii.gz", "a_denoised_dicom"] and "series_denoised_dicom" in files_in(out)
    assert not [f for f in files_in(out) if f.startswith(".")]
    assert hashes(src) == before
    got = nib.load(out / "series_denoised.nii.gz")
    import pydicom

    derived = pydicom.dcmread(next((out / "series_denoised_dicom").iterdir()))
    source = pydicom.dcmread(next((src / "series").iterdir()))
    assert derived.StudyInstanceUID == source.StudyInstanceUID and derived.SeriesInstanceUID != source.SeriesInstanceUID
    # the same bundle run the MONAI way gives the same volume
    ref_dir = tmp_path / "bundle_out"
    run_bundle(bundles["ct_denoise"], "inference.json", input_path=str(src / "series"), output_dir=str(ref_dir),
               device="$torch.device('cpu')")
    ref = nib.load(next(ref_dir.glob("*_denoised.nii.gz")))
    np.testing.assert_allclose(got.get_fdata(), ref.get_fdata(), atol=1e-4)
    np.testing.assert_allclose(got.affine, ref.affine, atol=1e-5)


def test_batch_with_one_bad_input_writes_the_others_and_exits_1(tmp_path, capsys, ct_args):
    src = tmp_path / "in"
    nifti(src / "good1.nii.gz", ct_volume(seed=1))
    nifti(src / "sub" / "good2.nii.gz", ct_volume(seed=2))  # subfolders are kept in the output
    bad = ct_volume(seed=3)
    bad[2, 3, 1] = np.nan
    nifti(src / "bad.nii.gz", bad)
    before = hashes(src)
    out = tmp_path / "out"
    code, stdout, err = cli(capsys, "denoise", src, out, *ct_args)
    assert code == 1
    assert files_in(out) == ["good1_denoised.nii.gz", "sub", "sub/good2_denoised.nii.gz"]
    assert "1 of 3 input(s) failed" in err and "bad" in err.split("failed (")[1] and "NaN/Inf" in err
    assert hashes(src) == before


def test_two_series_in_one_folder_are_two_inputs(tmp_path, capsys, ct_args):
    src = tmp_path / "mixed"
    for i in range(2):
        series = dicom(tmp_path / f"s{i}", ct_volume(seed=i))
        for f in series.iterdir():
            src.mkdir(exist_ok=True)
            shutil.move(str(f), src / f"s{i}_{f.name}")
    code, _, _ = cli(capsys, "denoise", src, tmp_path / "out", *ct_args)
    assert code == 0 and len(list((tmp_path / "out").glob("*_denoised.nii.gz"))) == 2


def _bad_input(kind: str, tmp: Path) -> Path:
    if kind == "missing":
        return tmp / "nope.nii.gz"
    if kind == "empty folder":
        (tmp / "empty").mkdir()
        return tmp / "empty"
    if kind == "no images":
        (tmp / "docs").mkdir()
        (tmp / "docs" / "notes.txt").write_text("not an image")
        (tmp / "docs" / "scan.dcm").write_bytes(b"\x00" * 300)
        return tmp / "docs"
    if kind == "2D image":
        return nifti(tmp / "slice.nii.gz", ct_volume()[:, :, 0])
    if kind == "NaN":
        vol = ct_volume()
        vol[0, 0, 0] = np.inf
        return nifti(tmp / "inf.nii.gz", vol)
    if kind == "MR series":
        return dicom(tmp / "mr_series", np.abs(ct_volume()), modality="MR")
    if kind == "truncated":
        path = nifti(tmp / "cut.nii.gz", ct_volume())
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        return path
    raise AssertionError(kind)


@pytest.mark.parametrize("kind, code, message", [
    ("missing", 2, "does not exist"),
    ("empty folder", 2, "is empty"),
    ("no images", 2, "no NIfTI (.nii, .nii.gz) or DICOM image"),
    ("2D image", 1, "2D image of shape (16, 16), but bundle ct_denoise needs 3D volumes"),
    ("NaN", 1, "1 NaN/Inf voxel(s)"),
    ("MR series", 1, "DICOM Modality is MR but bundle ct_denoise expects CT; pass --force-modality"),
    ("truncated", 1, "truncated NIfTI file"),
])
def test_bad_inputs_are_refused_without_output(tmp_path, capsys, ct_args, kind, code, message):
    src = _bad_input(kind, tmp_path)
    before = hashes(src) if src.exists() else {}
    out = tmp_path / "out"
    got, _, err = cli(capsys, "denoise", src, out, *ct_args)
    assert got == code, err
    assert message in err and "Traceback" not in err
    assert not out.exists()  # nothing written, not even the folder
    assert (hashes(src) if src.exists() else {}) == before


def test_force_modality_accepts_an_mr_series(tmp_path, capsys, ct_args):
    src = _bad_input("MR series", tmp_path)
    code, _, _ = cli(capsys, "denoise", src, tmp_path / "out", *ct_args, "--force-modality")
    assert code == 0 and (tmp_path / "out" / "mr_series_denoised.nii.gz").is_file()


def test_roi_must_be_divisible_by_the_network(tmp_path, capsys, ct_args, bundles):
    src = nifti(tmp_path / "a.nii.gz", ct_volume())
    code, _, err = cli(capsys, "denoise", src, tmp_path / "out", *ct_args, "--roi", 10, 12, 1)
    assert code == 2 and "--roi 10 12 1 is not divisible by the network's downsampling factor (4, 4, 1)" in err
    assert "--roi 12 12 1" in err and not (tmp_path / "out").exists()
    code, _, _ = cli(capsys, "denoise", src, tmp_path / "out", *ct_args, "--roi", 8, 8, 1)
    assert code == 0 and (tmp_path / "out" / "a_denoised.nii.gz").is_file()


def test_mr_bundle_sliding_window_and_steps(tmp_path, capsys, bundles):
    src = nifti(tmp_path / "head.nii.gz", mr_volume(), affine=np.diag([3.0, 3.0, 3.0, 1.0]))
    code, _, err = cli(capsys, "denoise", src, tmp_path / "out", "--bundle", "mr_denoise", "--bundle-root",
                       bundles["mr_denoise"], "--device", "cpu", "--roi", 16, 16, 16, "--steps", 2)
    assert code == 0, err
    out = nib.load(tmp_path / "out" / "head_denoised.nii.gz")
    assert out.shape == (16, 16, 16) and np.isfinite(out.get_fdata()).all()


def test_steps_split_the_relative_schedule_and_set_uniform_restoration_steps(bundles):
    from monai_flow.bundle import Bundle
    from monai_flow.cli.denoise import Denoiser
    from monai_flow.inferers import RelativeFlowInferer

    x = torch.zeros(1, 1, 8, 8)
    two = RelativeFlowInferer((0.2, 0.1, 0.05), num_steps=2).dt_table(x)[0]  # same total (0.35), coarse to fine
    assert two.tolist() == pytest.approx([0.35 * 2 / 3, 0.35 / 3])
    assert RelativeFlowInferer((0.2, 0.1, 0.05), num_steps=3).dt_table(x)[0].tolist() == pytest.approx([0.2, 0.1, 0.05])
    # auto: each sample's own gap ln(sigma / target) in 4 steps; a sample below the target takes none
    auto = RelativeFlowInferer("auto", noise_estimator=lambda v: torch.tensor([0.4, 0.05]), target_std=0.1,
                               max_dt=0.5, min_dt=0.05, num_steps=4)
    table = auto.dt_table(torch.zeros(2, 1, 8, 8))
    assert table[0].tolist() == pytest.approx([d * np.log(4) / 0.75 for d in (0.4, 0.2, 0.1, 0.05)])
    assert table[1].tolist() == [0.0] * 4
    for name in ("ct_denoise", "mr_denoise"):
        bundle = Bundle(name, str(bundles[name]))
        denoiser = Denoiser(bundle, bundle.default_checkpoint, "cpu", steps=5)
        inferer = getattr(denoiser.inferer, "flow_inferer", denoiser.inferer)
        assert inferer.num_steps == 5
    bundle = Bundle("ct_restore", str(bundles["ct_restore"]))
    denoiser = Denoiser(bundle, bundle.default_checkpoint, "cpu", steps=3)
    assert denoiser.inferer.time_grid.numel() == 4 and denoiser.postfix == "restored"


def test_flip_ensemble_averages_the_bundles_inferer_over_mirror_images(tmp_path, capsys, bundles):
    from monai_flow.bundle import Bundle
    from monai_flow.cli.denoise import Denoiser

    bundle = Bundle("ct_denoise", str(bundles["ct_denoise"]))
    plain = Denoiser(bundle, bundle.default_checkpoint, "cpu", amp="fp32")
    flipped = Denoiser(Bundle("ct_denoise", str(bundles["ct_denoise"])), bundle.default_checkpoint, "cpu", amp="fp32",
                       flip_ensemble=True)
    torch.manual_seed(0)
    with torch.no_grad():  # untrained weights end in a zero convolution (the identity): give them random values
        for p in plain.network.parameters():
            p.copy_(torch.randn_like(p) * 0.05)
    flipped.network.load_state_dict(plain.network.state_dict())
    x = torch.rand(1, 1, 16, 12, 2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = sum(plain.inferer(x.flip(d), plain.network).flip(d) if d else plain.inferer(x, plain.network)
                       for d in ([], [2], [3], [2, 3])) / 4  # in-plane mirror images only, never across slices
        got = flipped.inferer(x, flipped.network)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert not torch.allclose(got, plain.inferer(x, plain.network), atol=1e-5)  # the network is not mirror-symmetric
    src = nifti(tmp_path / "a.nii.gz", ct_volume())
    code, _, err = cli(capsys, "denoise", src, tmp_path / "out", "--bundle", "ct_restore", "--bundle-root",
                       bundles["ct_restore"], "--device", "cpu", "--flip-ensemble")
    assert code == 2 and "bundle ct_restore has no flip_ensemble setting" in err


def test_checkpoint_problems_are_reported_before_any_work(tmp_path, capsys, bundles):
    src = nifti(tmp_path / "a.nii.gz", ct_volume())
    out = tmp_path / "out"
    base = ["denoise", src, out, "--bundle", "ct_denoise", "--bundle-root", bundles["ct_denoise"], "--device", "cpu"]
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes((bundles["ct_denoise"] / "models" / "model.pt").read_bytes()[:5000])
    code, _, err = cli(capsys, *base, "--checkpoint", corrupt)
    assert code == 2 and f"corrupt or truncated checkpoint {corrupt}" in err
    other = tmp_path / "mr.pt"
    shutil.copy(bundles["mr_denoise"] / "models" / "model.pt", other)  # the 3D MR network
    code, _, err = cli(capsys, *base, "--checkpoint", other)
    assert code == 2 and "does not fit the network VelocityUNet" in err and "shape mismatch" in err
    assert "checkpoint (16, 1, 3, 3, 3) vs network (16, 1, 3, 3)" in err and "different network configuration" in err
    empty_bundle = copy_configs(tmp_path / "b", "ct_denoise")
    code, _, err = cli(capsys, "denoise", src, out, "--bundle", "ct_denoise", "--bundle-root", empty_bundle)
    assert code == 2 and "has no trained model" in err
    assert f"python -m monai.bundle run --config_file {empty_bundle / 'configs' / 'train.json'}" in err
    assert not out.exists()


def test_outputs_never_replace_inputs(tmp_path, capsys, ct_args):
    src = nifti(tmp_path / "a.nii.gz", ct_volume())
    series = dicom(tmp_path / "series", ct_volume(seed=4))
    before = hashes(src, series)
    code, _, err = cli(capsys, "denoise", src, src, *ct_args)
    assert code == 2 and "is the input" in err
    code, _, err = cli(capsys, "denoise", series, series, *ct_args, "--overwrite")
    assert code == 2 and "is the input folder" in err
    code, _, err = cli(capsys, "denoise", series, series / "out", *ct_args)
    assert code == 2 and "inside the input folder" in err
    assert hashes(src, series) == before and not (series / "out").exists()


def test_existing_outputs_need_overwrite(tmp_path, capsys, ct_args):
    src = nifti(tmp_path / "a.nii.gz", ct_volume())
    out = tmp_path / "out"
    out.mkdir()
    (out / "a_denoised.nii.gz").write_bytes(b"previous result")
    code, _, err = cli(capsys, "denoise", src, out, *ct_args)
    assert code == 2 and "output exists" in err and "--overwrite" in err
    assert (out / "a_denoised.nii.gz").read_bytes() == b"previous result"
    code, _, _ = cli(capsys, "denoise", src, out, *ct_args, "--overwrite")
    assert code == 0 and nib.load(out / "a_denoised.nii.gz").shape == (16, 16, 3)


def test_unwritable_output_folder_is_refused_before_any_work(tmp_path, capsys, ct_args, monkeypatch):
    src = nifti(tmp_path / "a.nii.gz", ct_volume())
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder is expected")
    code, _, err = cli(capsys, "denoise", src, blocker / "out", *ct_args)
    assert code == 2 and f"{blocker} is a file, not a folder" in err
    code, _, err = cli(capsys, "denoise", src, blocker, *ct_args)
    assert code == 2 and "is a file, expected a folder" in err
    # no write permission (os.access), and a folder that refuses writes although access says yes
    # (e.g. a read-only file system; chmod does not stop root, so the test write is what counts)
    monkeypatch.setattr(os, "access", lambda *a, **k: False)
    code, _, err = cli(capsys, "denoise", src, tmp_path / "out", *ct_args)
    assert code == 2 and "is not writable: no write permission" in err
    monkeypatch.undo()
    import tempfile

    def refuse(*a, **k):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    code, _, err = cli(capsys, "denoise", src, tmp_path / "out", *ct_args)
    assert code == 2 and "is not writable: Read-only file system" in err
    assert not (tmp_path / "out").exists() and blocker.read_text().startswith("a file")


def test_a_failure_while_writing_leaves_no_partial_file(tmp_path, capsys, ct_args, monkeypatch):
    from monai.transforms import SaveImage

    src = tmp_path / "in"
    nifti(src / "a.nii.gz", ct_volume())
    dicom(src / "series", ct_volume(seed=5))
    before = hashes(src)

    def half_written(self, img, meta_data=None, filename=None):
        Path(f"{filename}{self.output_ext}").write_bytes(b"\x1f\x8b half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(SaveImage, "__call__", half_written)
    out = tmp_path / "out"
    code, _, err = cli(capsys, "denoise", src, out, *ct_args)
    assert code == 1 and "No space left on device" in err and "2 of 2 input(s) failed" in err
    assert files_in(out) == []  # no output, no temporary file (the empty folder it made is gone too)
    monkeypatch.undo()

    import monai_flow.data

    def dicom_fails(volume, out_dir, *a, **k):
        Path(out_dir).mkdir()
        (Path(out_dir) / "0001.dcm").write_bytes(b"partial")
        raise RuntimeError("writer crashed")

    monkeypatch.setattr(monai_flow.data, "write_dicom_series", dicom_fails)
    out.mkdir()
    code, _, err = cli(capsys, "denoise", src, out, *ct_args, "--dicom-out")
    assert code == 1 and "writer crashed" in err
    assert files_in(out) == []  # the NIfTI staged before the DICOM failure was removed as well
    assert hashes(src) == before


# ------------------------------------------------------------------------------------- export
def test_export_is_a_thin_call(tmp_path, capsys, monkeypatch):
    calls = []

    def export_denoiser(bundle, output, checkpoint=None, steps=None, bundle_root=None, overwrite=False):
        calls.append(dict(bundle=bundle, output=output, checkpoint=checkpoint, steps=steps, bundle_root=bundle_root,
                          overwrite=overwrite))
        if Path(output).exists() and not overwrite:
            raise FileExistsError(f"{output} exists; pass overwrite=True.")
        Path(output).write_bytes(b"ts")
        return Path(output)

    monkeypatch.setitem(sys.modules, "monai_flow.export", types.SimpleNamespace(export_denoiser=export_denoiser))
    target = tmp_path / "d.ts"
    code, out, _ = cli(capsys, "export", "--bundle", "ct_restore", target, "--steps", 2)
    assert code == 0 and f"wrote {target}" in out
    assert calls[0] == dict(bundle="ct_restore", output=str(target), checkpoint=None, steps=2, bundle_root=None,
                            overwrite=False)
    code, _, err = cli(capsys, "export", "--bundle", "ct_restore", target)
    assert code == 2 and "monai-flow: error:" in err and "exists" in err
    monkeypatch.setitem(sys.modules, "monai_flow.export", None)  # module missing: a clear message
    code, _, err = cli(capsys, "export", "--bundle", "ct_restore", tmp_path / "e.ts")
    assert code == 1 and "export is not available" in err


def test_export_with_the_real_module(tmp_path, capsys, bundles):
    pytest.importorskip("monai_flow.export")
    target = tmp_path / "restore.ts"
    base = ["export", "--bundle", "ct_restore", "--bundle-root", bundles["ct_restore"]]
    code, out, err = cli(capsys, *base, target, "--steps", 2)
    assert code == 0, err
    module = torch.jit.load(str(target))
    x = torch.rand(1, 1, 16, 16)
    assert module(x).shape == x.shape
    code, _, err = cli(capsys, *base, target, "--steps", 2)
    assert code == 2 and "exists" in err and "--overwrite" in err
    mr = ["export", "--bundle", "mr_denoise", "--bundle-root", bundles["mr_denoise"]]
    code, _, err = cli(capsys, *mr, tmp_path / "mr.ts")
    assert code == 2 and "auto" in err and not (tmp_path / "mr.ts").exists()
