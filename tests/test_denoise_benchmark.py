"""Guards benchmarks/denoise_quality.py: its pieces compute what they claim and a tiny run completes."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("denoise_quality", ROOT / "benchmarks" / "denoise_quality.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tasks(bench):
    return {"CT": bench.ct_task(2, 1, 1, i0=2e4), "MR": bench.mr_task(2, 1, 1)}


def test_score_matches_definitions(bench, tasks):
    ct = tasks["CT"]
    clean = ct.test[0][1].clamp(-0.9, 0.9)  # inside the scoring window, so nothing saturates
    out = clean + 0.02  # 20 HU everywhere
    s = bench.score(ct, out, clean)
    assert s["rmse"] == pytest.approx(20.0, rel=1e-3)
    assert s["psnr"] == pytest.approx(20 * math.log10(2000 / 20), rel=1e-3)
    assert bench.score(ct, clean, clean)["ssim"] == pytest.approx(1.0)
    mr = tasks["MR"]
    clean = mr.test[0][1]
    out = clean.clone()
    out[~mr.foreground(clean)] += 0.5  # background errors are not scored
    assert bench.score(mr, out, clean)["psnr"] > 150


def test_noisy_references_have_their_levels(bench, tasks):
    mr = tasks["MR"]
    refs, ref_std = bench.noisy_references(mr, seed=0)
    clean = torch.stack(mr.train)
    assert refs.shape == clean.shape and not torch.equal(refs, clean)
    stds = [bench.true_noise_std(mr, r, c) for r, c in zip(refs, clean)]
    lo, hi = mr.reference_range
    assert all(0.8 * lo < s < 1.2 * hi for s in stds)
    # the operator's per-reference argument: each reference's Rician std as estimated in practice
    # (estimate_mr_noise_std: the background fit on the phantoms, the high-frequency estimate on the last,
    # real abdominal slice, which has too little air: the background fit read it 17x too high)
    assert torch.allclose(ref_std[:-1], torch.tensor(stds[:-1]), rtol=0.25)
    assert 0.7 < float(ref_std[-1]) / stds[-1] < 1.6  # the abdominal slice: was 17x with the background fit
    assert torch.equal(refs, bench.noisy_references(mr, seed=0)[0])  # deterministic under a seed
    ct = tasks["CT"]
    _, photons = bench.noisy_references(ct, seed=0)  # known exposure: dose x i0, dose in the reference range
    assert bool(((photons >= 0.25 * 2e4) & (photons <= 2e4)).all())


def test_ct_simulation_follows_dose(bench, tasks):
    ct = tasks["CT"]
    clean = ct.test[0][1][None]
    gen = torch.Generator().manual_seed(0)
    s_half, s_tenth = (bench.true_noise_std(ct, ct.simulate(clean, d, generator=gen), clean) for d in (0.5, 0.1))
    assert s_tenth / s_half == pytest.approx(math.sqrt(5), rel=0.15)  # std ~ dose^-1/2


def test_noise2noise_pair_is_two_independent_degradations(bench):
    objective = bench.Noise2NoiseRegression(lambda x, level, generator=None: x + level.view(-1, 1, 1, 1) * torch.randn(
        x.shape, generator=generator), level_range=(0.5, 0.5), target="direct", seed=0)
    x = torch.zeros(4, 1, 32, 32)
    y, target = objective.pair({"image": x}, objective.generator("cpu"))
    assert y.std() == pytest.approx(0.5, rel=0.1) and target.std() == pytest.approx(0.5, rel=0.1)
    assert abs(torch.corrcoef(torch.stack([y.flatten(), target.flatten()]))[0, 1]) < 0.1


def test_validation_picks_the_best_candidate(bench, tasks):
    mr = tasks["MR"]
    candidates = {"identity": 1.0, "zero": 0.0}
    den, chosen = bench.best_on_validation(mr, candidates, lambda a: lambda y, std: a * y, per_level=True, seed=0)
    assert set(chosen.values()) == {"identity"}
    y = torch.ones(1, 1, 8, 8)
    assert torch.equal(den(y, 0.05), y)


def test_tiny_run_writes_table_and_plots(bench, tmp_path):
    md, img = tmp_path / "table.md", tmp_path / "img"
    text = bench.main([
        "--quick", "--iterations", "2", "--batch", "2", "--num-train", "2", "--num-val", "1", "--num-test", "1",
        "--methods", "noisy", "nlm", "simsdl", "n2n", "relflow", "oracle", "irflow", "flowmap",
        "--out-md", str(md), "--out-img", str(img),
    ])
    assert md.read_text() == text
    for method in ("noisy input", "NLM (true std)", "SimSDL", "Noise2Noise-style", "RelativeFlow, 1 step",
                   "RelativeFlow, 3 steps", "RelativeFlow, auto", "oracle (clean targets)", "IR-Flow, 2 steps",
                   "flow map, lookahead 0"):
        assert text.count(f"| {method}") == 2, method  # one row per modality
    assert (tmp_path / "img_psnr.png").stat().st_size > 10_000
    assert (tmp_path / "img_panel.png").stat().st_size > 10_000
