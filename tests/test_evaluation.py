"""Tests of monai_flow.evaluation: restoration scores, intensity classes and the figure writer."""

import csv

import numpy as np
import pytest
import torch

from monai_flow.evaluation import evaluate_restoration, intensity_classes, region_means, write_figure


def test_evaluate_restoration_writes_scores_and_figure(tmp_path):
    torch.manual_seed(0)
    clean = torch.zeros(1, 1, 16, 16, 4)
    clean[..., 4:12, 4:12, :] = 0.5

    def degrade(x, level, generator=None):
        return x + level.reshape(-1, 1, 1, 1, 1) * torch.randn(x.shape, generator=generator)

    def oracle(noisy, network):  # "restores" perfectly: the output scores must be perfect
        return clean.expand_as(noisy)

    data = [{"image": clean + 0.01, "reference": clean}]
    rows = evaluate_restoration(torch.nn.Identity(), oracle, data, degrade, levels=(0.05, 0.2), output_dir=str(tmp_path))
    per_level = {r["level"]: r for r in rows if r["case"] == "mean"}
    assert per_level[0.05]["input_psnr"] > per_level[0.2]["input_psnr"] + 6  # 4x the noise: -12 dB
    assert per_level[0.2]["output_rmse"] == 0 and per_level[0.2]["output_ssim"] > 0.999
    with open(tmp_path / "metrics.csv") as f:
        assert len(list(csv.DictReader(f))) == 4  # 2 levels x 1 case + 2 means
    assert (tmp_path / "example.png").stat().st_size > 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["example.png", "metrics.csv"]  # no temporary left


def test_intensity_classes_and_region_means():
    x = torch.tensor([[[-1000.0, -700.0, 40.0, 900.0]]])
    assert intensity_classes(x, (-950, -500, 200)).tolist() == [[[0, 1, 2, 3]]]
    with pytest.raises(ValueError, match="strictly increasing"):
        intensity_classes(x, (0, 0))
    means = region_means(x, torch.tensor([[[0, 1, 1, 3]]]), {"body": [1], "lesion": [4]})
    assert means["body"].tolist() == [-330.0] and torch.isnan(means["lesion"]).all()


def test_figure_is_radiological(tmp_path):
    """[x, y] with x from the patient's right to left, y from anterior to posterior (LoadImage of
    a DICOM series): anterior at the top, the patient's right on the viewer's left."""
    from matplotlib.image import imread

    img = torch.zeros(40, 20)  # x: 40 columns, y: 20 rows
    img[:20, :5] = 1.0  # patient's right half, the 5 most anterior rows
    write_figure(tmp_path / "f.png", {"": img}, window=(-1.0, 1.0))
    png = imread(tmp_path / "f.png")[..., :3].mean(-1)
    image = np.argwhere(np.abs(png - 0.5) < 0.1)  # the grey (0) part of the panel
    top, left = image.min(0)
    bottom, right = image.max(0)
    assert (right - left) / (bottom - top) == pytest.approx(2.0, rel=0.05)  # x across, y down
    white = np.argwhere(png > 0.95)
    white = white[(white[:, 0] >= top) & (white[:, 0] <= bottom) & (white[:, 1] >= left) & (white[:, 1] <= right)]
    (w_top, w_left), (w_bottom, w_right) = white.min(0), white.max(0)
    assert abs(w_top - top) <= 2 and abs(w_left - left) <= 2  # top left
    assert (w_bottom - top) / (bottom - top) == pytest.approx(0.25, abs=0.05)
    assert (w_right - left) / (right - left) == pytest.approx(0.5, abs=0.05)
    assert [p.name for p in tmp_path.iterdir()] == ["f.png"]


def test_figure_label_maps_and_bad_shapes(tmp_path):
    rows = [{"mask": torch.arange(16).reshape(4, 4) % 5, "image": torch.rand(4, 4)}] * 2
    write_figure(tmp_path / "g.png", rows, (0, 1), "grid", label_maps=("mask",), num_labels=5, panel_size=2.4, dpi=80)
    assert (tmp_path / "g.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="2D image"):
        write_figure(tmp_path / "h.png", {"volume": torch.zeros(4, 4, 4)}, (0, 1))
    assert not (tmp_path / "h.png").exists()
