"""Guards benchmarks/real_scans.py: a quick baseline run writes its tables and figures, the simulated noise
has the levels it claims, and a plugged-in method is run and timed."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("skimage")
pytest.importorskip("bm3d")

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("real_scans", ROOT / "benchmarks" / "real_scans.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def quick(bench, tmp_path_factory):
    out = tmp_path_factory.mktemp("real_scans")
    rows = bench.run(quick=True, methods=["noisy", "bm3d", "nlm"], out=out, log=lambda *a: None)
    return out, rows


def test_quick_run_writes_tables_and_small_figures(quick):
    out, rows = quick
    for modality in ("ct", "mr"):
        md = (out / "results" / f"real_scans_quick_{modality}.md").read_text()
        assert "| case |" in md and "BM3D (white, true std)" in md and "noisy input" in md
        assert json.loads((out / "results" / f"real_scans_quick_{modality}.json").read_text())
    pngs = sorted((out / "img").glob("real_scans_quick_*.png"))
    assert len(pngs) == 2 and all(0 < p.stat().st_size < 500_000 for p in pngs)
    assert {r["modality"] for r in rows} == {"CT", "MR"}
    assert all(r["seconds"] >= 0 for r in rows)


def test_noisy_psnr_matches_the_simulated_noise_std(quick):
    """PSNR = 20 log10(range / rmse), the rmse being the std of the zero-mean simulated noise in the mask."""
    _, rows = quick
    ct = [r for r in rows if r["modality"] == "CT" and r["method"] == "noisy"]
    assert len(ct) == 2
    for r in ct:
        assert r["psnr"] == pytest.approx(20 * math.log10(2000.0 / r["noise_std"]), abs=0.2)
    mr = [r for r in rows if r["modality"] == "MR" and r["method"] == "noisy" and r["std"] == 0.03]
    # Rician noise at high SNR: rmse ~ the Gaussian std (peak 1)
    assert mr[0]["psnr"] == pytest.approx(20 * math.log10(1.0 / mr[0]["noise_std"]), abs=0.5)


def test_dose_scaling_of_the_simulated_noise(bench, quick):
    """Yu et al.: the added variance scales as (1 - a) / a, so std(0.25) / std(0.1) = sqrt(3 / 9), here
    lowered a little by the electronic noise term (which grows faster at low dose)."""
    _, rows = quick
    std = {r["dose"]: r["noise_std"] for r in rows if r["modality"] == "CT" and r["method"] == "noisy"}
    expected = math.sqrt((1 / 0.25 - 1) / (1 / 0.1 - 1))
    assert 0.88 * expected < std[0.25] / std[0.1] < 1.03 * expected
    # without electronic noise, independent draws: the ratio up to sampling error (~2 %)
    case = bench.ct_cases(quick=True)[0]
    sim = bench.CTSimulator(case.image, case.spacing, num_views=180)
    mask = bench.body_mask(case.image)
    old, bench.ELECTRONIC_STD = bench.ELECTRONIC_STD, 0.0
    try:
        rng = np.random.default_rng(1)
        ratios = [sim.noise(0.25, 1e4, rng)[mask].std() / sim.noise(0.1, 1e4, rng)[mask].std() for _ in range(3)]
    finally:
        bench.ELECTRONIC_STD = old
    assert np.mean(ratios) == pytest.approx(expected, rel=0.05)


def test_bm3d_beats_the_noisy_input(quick):
    _, rows = quick
    for r in (r for r in rows if r["method"] == "bm3d"):
        noisy = next(q for q in rows if q["method"] == "noisy" and q["case"] == r["case"] and q["level"] == r["level"])
        assert r["psnr"] > noisy["psnr"] + 1.0 and r["ssim"] > noisy["ssim"], (r, noisy)


def test_a_plugged_in_method_is_run_and_timed(bench, tmp_path):
    plugin = tmp_path / "my_method.py"
    plugin.write_text(
        "from scipy import ndimage\n"
        "def smooth(noisy, ctx):\n"
        "    assert ctx.modality == 'MR' and ctx.noise_std > 0 and len(ctx.spacing) == noisy.ndim\n"
        "    return ndimage.uniform_filter(noisy, 3)\n"
        "METHODS = {'box3': smooth}\n")
    bench.load_plugin(str(plugin))
    try:
        rows = bench.main(["--quick", "--modalities", "MR", "--methods", "noisy", "box3", "--out", str(tmp_path),
                           "--no-figures"])
    finally:
        bench.REGISTRY.pop("box3", None)
    box = [r for r in rows if r["method"] == "box3"]
    assert len(box) == 3 and all(r["seconds"] >= 0 for r in box)
    assert "box3" in (tmp_path / "results" / "real_scans_quick_mr.md").read_text()
