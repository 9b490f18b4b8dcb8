"""``monai-flow simulate``: reproducible low-dose CT / Rician MR degradation of one volume, safely written."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from test_cli import cli, ct_volume, dicom, files_in, hashes, mr_volume, nifti

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture
def ct(tmp_path) -> Path:
    return nifti(tmp_path / "ct.nii.gz", ct_volume((32, 32, 3)))


def test_ct_with_a_seed_is_bit_identical_and_noisier(tmp_path, capsys, ct):
    before = hashes(ct)
    outputs = []
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        code, out, err = cli(capsys, "simulate", "ct", ct, tmp_path / f"{name}.nii.gz", "--dose", 0.25, "--seed", seed)
        assert code == 0, err
        assert f"seed {seed}" in out
        outputs.append(tmp_path / f"{name}.nii.gz")
    a, b, c = (nib.load(p) for p in outputs)
    assert hashes(outputs[0])[str(outputs[0])] == hashes(outputs[1])[str(outputs[1])]  # same bytes
    np.testing.assert_array_equal(a.get_fdata(), b.get_fdata())
    assert not np.array_equal(a.get_fdata(), c.get_fdata())
    src = nib.load(ct)
    np.testing.assert_allclose(a.affine, src.affine)
    assert a.shape == src.shape
    assert (a.get_fdata() - src.get_fdata()).std() > 1.0  # noise added (HU)
    assert hashes(ct) == before
    code, out, _ = cli(capsys, "simulate", "ct", ct, tmp_path / "d.nii", "--dose", 0.5)
    assert code == 0 and "pass --seed to reproduce" in out and nib.load(tmp_path / "d.nii").shape == src.shape


def test_mr_std_in_percent_or_absolute(tmp_path, capsys):
    src = nifti(tmp_path / "mr.nii.gz", mr_volume(), affine=np.diag([3.0, 3.0, 3.0, 1.0]))
    background = mr_volume() < 50
    levels = {}
    for name, std in (("pct", "3%"), ("abs", "12.5")):
        code, _, err = cli(capsys, "simulate", "mr", src, tmp_path / f"{name}.nii.gz", "--std", std, "--seed", 0)
        assert code == 0, err
        levels[name] = nib.load(tmp_path / f"{name}.nii.gz").get_fdata()[background].mean()
    # Rician background mean is about 1.25 s: s = 3% of the max (about 3.3) vs s = 12.5
    assert 3 < levels["pct"] < 8 and 13 < levels["abs"] < 19


@pytest.mark.parametrize("args, message", [
    (["ct", "--dose", "-0.5"], "argument --dose: the dose fraction must lie in (0, 1]"),
    (["ct", "--dose", "0"], "argument --dose: the dose fraction must lie in (0, 1]"),
    (["ct", "--dose", "1.5"], "argument --dose: the dose fraction must lie in (0, 1]"),
    (["mr", "--std", "-3%"], "argument --std: the noise std must be finite and >= 0"),
    (["mr", "--std", "-2"], "argument --std: the noise std must be finite and >= 0"),
    (["mr", "--std", "nan"], "argument --std: the noise std must be finite and >= 0"),
    (["ct", "--std", "3%"], "simulate ct needs --dose"),
    (["mr", "--dose", "0.5"], "simulate mr needs --std"),
    (["ct", "--dose", "0.5", "--std", "1"], "not allowed with argument"),
    (["ct", "--dose", "0.5", "--target-mas", "50"], "not allowed with argument"),
    (["ct", "--target-mas", "-5"], "argument --target-mas"),
    (["ct", "--target-mas", "50"], "--target-mas needs the input's exposure"),  # NIfTI: no header exposure
    (["mr", "--target-mas", "50"], "simulate mr needs --std"),
    (["ct", "--dose", "0.5", "--geometry", "cone"], "argument --geometry: invalid choice"),
])
def test_level_errors(tmp_path, capsys, ct, args, message):
    kind, *options = args
    code, _, err = cli(capsys, "simulate", kind, ct, tmp_path / "out" / "x.nii.gz", *options)
    assert code == 2 and message in err and "monai-flow: error:" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_one_volume_only_and_inputs_are_never_outputs(tmp_path, capsys, ct):
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for i in range(2):
        for f in dicom(tmp_path / f"s{i}", ct_volume(seed=i)).iterdir():
            shutil.move(str(f), mixed / f"s{i}_{f.name}")
    series = dicom(tmp_path / "series", ct_volume(seed=7))
    before = hashes(mixed, series, ct)
    cases = [
        ([mixed, tmp_path / "o.nii.gz"], "holds 2 images / DICOM series"),
        ([ct, ct], "is the input"),
        ([series, series / "o.nii.gz"], "inside the input folder"),
        ([series, series, "--dicom-out", "--overwrite"], "is the input"),
        ([series, tmp_path, "--dicom-out", "--overwrite"], "contains the input"),  # replacing it would delete it
        ([ct, tmp_path / "o.txt"], "must end with .nii or .nii.gz"),
        ([tmp_path / "missing.nii.gz", tmp_path / "o.nii.gz"], "does not exist"),
    ]
    for paths, message in cases:
        code, _, err = cli(capsys, "simulate", "ct", *paths, "--dose", 0.5, "--seed", 0)
        assert code == 2 and message in err, (paths, err)
    existing = tmp_path / "exists.nii.gz"
    existing.write_bytes(b"keep me")
    code, _, err = cli(capsys, "simulate", "ct", ct, existing, "--dose", 0.5)
    assert code == 2 and "--overwrite" in err and existing.read_bytes() == b"keep me"
    assert hashes(mixed, series, ct) == before and not (tmp_path / "o.nii.gz").exists()


def test_dicom_in_dicom_out_and_modality_check(tmp_path, capsys):
    series = dicom(tmp_path / "series", ct_volume((32, 32, 3)))
    out = tmp_path / "low"
    code, _, err = cli(capsys, "simulate", "ct", series, out, "--dose", 0.3, "--seed", 1, "--dicom-out")
    assert code == 0, err
    files = sorted(out.iterdir())
    src, dst = pydicom.dcmread(next(series.iterdir())), pydicom.dcmread(files[0])
    assert len(files) == 3 and dst.Modality == "CT" and dst.StudyInstanceUID == src.StudyInstanceUID
    assert dst.SeriesInstanceUID != src.SeriesInstanceUID and "dose 0.3" in dst.SeriesDescription
    mr = dicom(tmp_path / "mr", mr_volume((16, 16, 3)), modality="MR")
    code, _, err = cli(capsys, "simulate", "ct", mr, tmp_path / "x.nii.gz", "--dose", 0.3)
    assert code == 2 and "DICOM Modality is MR but simulate ct expects CT" in err
    code, _, err = cli(capsys, "simulate", "mr", mr, tmp_path / "x.nii.gz", "--std", "2%")
    assert code == 0, err
    nan = ct_volume()
    nan[1, 1, 1] = np.nan
    src = nifti(tmp_path / "nan.nii.gz", nan)
    code, _, err = cli(capsys, "simulate", "ct", src, tmp_path / "y.nii.gz", "--dose", 0.3)
    assert code == 2 and "NaN/Inf" in err and not (tmp_path / "y.nii.gz").exists()


def test_a_failure_while_writing_leaves_no_partial_file(tmp_path, capsys, ct, monkeypatch):
    from monai.transforms import SaveImage

    def half_written(self, img, meta_data=None, filename=None):
        Path(f"{filename}{self.output_ext}").write_bytes(b"\x1f\x8b half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(SaveImage, "__call__", half_written)
    out = tmp_path / "out"
    code, _, err = cli(capsys, "simulate", "ct", ct, out / "low.nii.gz", "--dose", 0.5, "--seed", 0)
    assert code == 1 and "No space left on device" in err
    assert files_in(out) == []


def test_fan_geometry_bowtie_and_modulation_from_the_command_line(tmp_path, capsys):
    """The clinical options reach the transform: a fan-beam scan with bowtie and automatic modulation of a
    NIfTI volume, reproducible with a seed, with its exposure given on the command line."""
    src = nifti(tmp_path / "ct.nii.gz", ct_volume((48, 48, 2)), affine=np.diag([4.0, 4.0, 3.0, 1.0]))
    outs = []
    for name in ("a", "b"):
        code, out, err = cli(capsys, "simulate", "ct", src, tmp_path / f"{name}.nii.gz", "--target-mas", 25, "--input-mas", 100,
                             "--geometry", "fan", "--bowtie", "cylinder", "--modulation", "auto", "--seed", 2)
        assert code == 0, err
        assert "input exposure 100 mAs from --input-mas" in out
        outs.append(nib.load(tmp_path / f"{name}.nii.gz").get_fdata())
    np.testing.assert_array_equal(outs[0], outs[1])
    assert (outs[0] - nib.load(src).get_fdata()).std() > 1.0
