"""Adapting a denoiser to the input: the weight cache, the training on the input itself, the
inferer that ties them, and the messages for inputs that cannot be adapted on."""

import pytest
import torch

from monai_flow.adaptation import (
    AdaptationCache,
    AdaptationError,
    AdaptiveInferer,
    CTAdaptation,
    MRAdaptation,
    content_key,
)
from monai_flow.inferers import RelativeFlowInferer
from monai_flow.networks import SliceWise, VelocityUNet
from monai_flow.physics import CTScan, low_dose_ct_noise
from monai_flow.transforms import CTDegradation, MRDegradation

SPACING = (2.0, 2.0)


def tiny_net(dims=2):
    torch.manual_seed(0)
    return VelocityUNet(dims, 1, channels=(8, 8), attention_levels=(False, False), num_res_blocks=1,
                        norm_num_groups=4, mid_attention=False)


def water_cylinder(size=64, depth=3):
    """(1, 1, size, size, depth) HU: an elliptic water cylinder in air."""
    yy, xx = torch.meshgrid(torch.arange(float(size)) - (size - 1) / 2, torch.arange(float(size)) - (size - 1) / 2,
                            indexing="ij")
    inside = (xx / (0.44 * size)) ** 2 + (yy / (0.38 * size)) ** 2 < 1
    return torch.where(inside, 0.0, -1000.0)[None, None, ..., None].expand(1, 1, size, size, depth).contiguous()


@pytest.fixture(scope="module")
def ct_pair():
    """A water cylinder (64 x 64 x 3, 2 mm) acquired at i0 = 1e4 and the cylinder, in network units (HU + 1000) / 1000."""
    clean = water_cylinder()
    noisy = clean + low_dose_ct_noise(clean, 1.0, SPACING, CTScan(i0=1e4, num_views=180), input_noise="none",
                                      generator=torch.Generator().manual_seed(0))
    return (noisy + 1000) / 1000, (clean + 1000) / 1000


@pytest.fixture(scope="module")
def ct_volume(ct_pair):
    return ct_pair[0]


def ct_adaptation(**kw):
    kw = {"patch_size": (32, 32), "batch_size": 4, "budget_seconds": 2.0, "realizations": 2, "progress": False, **kw}
    return CTAdaptation(CTDegradation(spacing=SPACING, num_views=180), **kw)


def test_cache_stores_atomically_evicts_least_recent_and_clears(tmp_path):
    cache = AdaptationCache(tmp_path, max_bytes=10**9)
    state = {"w": torch.arange(1000.0)}
    keys = [content_key(torch.full((1, 1, 4, 4), float(i)), {"s": 1}) for i in range(3)]
    for key in keys[:2]:
        cache.put(key, state, {"input": "x"})
    assert torch.equal(cache.get(keys[0])["w"], state["w"])  # keys[0] is now the most recently used
    entry = cache.entries()[0]["bytes"]
    cache.max_bytes = 2 * entry + entry // 2  # room for two entries
    cache.put(keys[2], state, {"input": "y"})
    assert cache.get(keys[1]) is None and cache.get(keys[0]) is not None and cache.get(keys[2]) is not None
    assert not [p for p in (tmp_path / "adapted").iterdir() if p.name.startswith(".")]  # no temporary leftovers
    (tmp_path / "adapted" / f"{keys[0]}.json").unlink()  # weights without description: incomplete, ignored
    assert cache.get(keys[0]) is None
    assert cache.clear() == 1 and cache.entries() == []
    with pytest.raises(ValueError, match="hex"):
        cache.get("../escape")


def test_content_key_depends_on_every_voxel_and_the_settings():
    x = torch.rand(1, 1, 8, 8, 2)
    key = content_key(x, {"budget": 1})
    assert content_key(x.clone(), {"budget": 1}) == key
    y = x.clone()
    y[0, 0, 3, 3, 1] += 1e-3
    assert content_key(y, {"budget": 1}) != key
    assert content_key(x, {"budget": 2}) != key
    assert content_key(x.reshape(1, 1, 16, 4, 2), {"budget": 1}) != key


@pytest.mark.usefixtures("single_thread")
def test_ct_adaptation_estimates_the_dose_and_learns_to_denoise_the_input(ct_pair):
    noisy, clean = ct_pair
    adaptation = ct_adaptation(budget_seconds=600.0, max_iterations=60, learning_rate=1e-3, batch_size=8,
                               dt_range=(0.3, 1.0))
    prepared = adaptation.prepare(noisy, {"spacing": SPACING})
    i0 = torch.tensor(prepared.noise["i0_per_slice"])
    assert prepared.noise["i0_source"] == "estimate" and torch.all((i0 / 1e4 - 1).abs() < 0.15)
    net = tiny_net()
    core, result = adaptation(net, noisy, {"spacing": SPACING})
    assert result["iterations"] > 5
    assert not torch.equal(next(core.parameters()), next(net.parameters()))  # a copy was trained, not the input
    with torch.no_grad():
        out = RelativeFlowInferer((0.6,))(noisy, SliceWise(core))
    body = clean > 0.5  # above -500 HU
    mse_in, mse_out = ((noisy - clean)[body] ** 2).mean(), ((out - clean)[body] ** 2).mean()
    # never saw a clean image, yet removes noise (a perfect step of 0.6 would leave e^{-1.2} = 0.30 of the MSE)
    assert mse_out < 0.6 * mse_in, (mse_in, mse_out)


def test_header_exposure_is_used_when_given(ct_volume):
    adaptation = ct_adaptation()
    prepared = adaptation.prepare(ct_volume, {"spacing": SPACING, "i0": [1e4, 2e4, 4e4]})
    assert prepared.noise["i0_source"] == "given" and prepared.noise["i0_per_slice"] == [1e4, 2e4, 4e4]
    # relative exposure (tube-current modulation) distributes the measured level over the slices
    prepared = adaptation.prepare(ct_volume, {"spacing": SPACING, "relative_exposure": [1.0, 1.0, 2.0]})
    i0 = prepared.noise["i0_per_slice"]
    assert i0[2] == pytest.approx(2 * i0[0], rel=1e-4) and "header" in prepared.noise["i0_source"]
    # the noise basis scales with the photons: twice the photons, half the variance
    var = prepared.quantum.float().var(dim=(0, 1, 2))
    assert (var[0] / var[2]).item() == pytest.approx(2.0, rel=0.25)


def test_learning_rate_rises_linearly_over_the_warmup_then_decays_as_a_cosine():
    from monai_flow.adaptation.training import learning_rate_factor

    assert [learning_rate_factor(d, 0.2) for d in (0.0, 0.05, 0.1, 0.2)] == pytest.approx([0.0, 0.25, 0.5, 1.0])
    assert learning_rate_factor(0.6, 0.2) == pytest.approx(0.5)  # half-way through the decay: cos(pi / 2)
    assert learning_rate_factor(1.0, 0.2) == pytest.approx(0.0, abs=1e-12)
    assert learning_rate_factor(0.25, 0.0) == pytest.approx((1 + 2 ** -0.5) / 2)  # no warm-up: the plain cosine
    with pytest.raises(ValueError, match="warmup must be a fraction"):
        ct_adaptation(warmup=1.0)


def _first_update(ct_volume, **kw):
    """The largest weight change of one adaptation step, and the settings that key the cache."""
    net = SliceWise(tiny_net())
    adaptation = ct_adaptation(budget_seconds=1e6, max_iterations=1, learning_rate=1e-2, **kw)
    core, _ = adaptation(net, ct_volume, {"spacing": SPACING})
    start = net.network.state_dict()
    return max(float((v - start[k]).abs().max()) for k, v in core.state_dict().items() if v.is_floating_point()), \
        adaptation.settings()


def test_warmup_holds_back_the_first_updates_and_keys_the_cache(ct_volume):
    jolt, plain_settings = _first_update(ct_volume)
    held, warm_settings = _first_update(ct_volume, warmup=0.5)
    assert jolt > 1e-3  # Adam's first step moves weights by about the learning rate (1e-2)
    assert held < 1e-3 * jolt  # the warm-up starts from a learning rate of about 0
    assert "warmup" not in plain_settings and warm_settings["warmup"] == 0.5


def test_adaptive_inferer_reuses_cached_weights_and_leaves_the_network_alone(ct_volume, tmp_path):
    net = SliceWise(tiny_net())
    start = {k: v.clone() for k, v in net.state_dict().items()}
    inferer = AdaptiveInferer(RelativeFlowInferer((0.3,)), ct_adaptation(budget_seconds=3.0),
                              cache=AdaptationCache(tmp_path), meta_reader=lambda x: {"spacing": SPACING})
    with torch.no_grad():
        first = inferer(ct_volume, net)
        second = inferer(ct_volume, net)
    assert [r["cached"] for r in inferer.results] == [False, True] and inferer.results[0]["iterations"] > 0
    torch.testing.assert_close(first, second)
    assert all(torch.equal(v, start[k]) for k, v in net.state_dict().items())
    with torch.no_grad():
        plain = RelativeFlowInferer((0.3,))(ct_volume, net)
    assert not torch.allclose(first, plain)  # the adapted copy denoised, not the starting network
    assert len(AdaptationCache(tmp_path).entries()) == 1


def test_an_interrupted_adaptation_leaves_no_cache_entry(ct_volume, tmp_path):
    class Interrupted(type(ct_adaptation())):
        def batches(self, prepared, generator):
            yield next(super().batches(prepared, generator))
            raise KeyboardInterrupt

    adaptation = Interrupted(CTDegradation(spacing=SPACING, num_views=180), patch_size=(32, 32), batch_size=2,
                             realizations=1, progress=False)
    inferer = AdaptiveInferer(RelativeFlowInferer((0.3,)), adaptation, cache=AdaptationCache(tmp_path),
                              meta_reader=lambda x: {"spacing": SPACING})
    with pytest.raises(KeyboardInterrupt), torch.no_grad():
        inferer(ct_volume, SliceWise(tiny_net()))
    folder = tmp_path / "adapted"
    assert not folder.exists() or not list(folder.iterdir())


def test_inputs_that_cannot_be_adapted_on_get_clear_messages(ct_volume):
    with pytest.raises(AdaptationError, match="too small"):
        ct_adaptation(patch_size=(96, 96)).prepare(ct_volume, {"spacing": SPACING})
    mr_like = (800 * torch.rand(1, 1, 64, 64, 3) + 1000) / 1000  # MR magnitudes read as HU: no air
    with pytest.raises(AdaptationError, match="CT"):
        ct_adaptation().prepare(mr_like, {"spacing": SPACING})
    air_and_bone = torch.zeros(1, 1, 64, 64, 3)  # -1000 HU with a bone square: no soft tissue to measure
    air_and_bone[..., 20:40, 20:40, :] = 2.0
    with pytest.raises(AdaptationError, match="cannot be estimated.*no soft tissue"):
        ct_adaptation().prepare(air_and_bone, {"spacing": SPACING})
    yy, xx = torch.meshgrid(torch.arange(64.0) - 31.5, torch.arange(64.0) - 31.5, indexing="ij")
    noise_free = ((xx / 28) ** 2 + (yy / 24) ** 2 < 1).float()[None, None, ..., None].expand(1, 1, 64, 64, 2)  # water in air
    with pytest.raises(AdaptationError, match="cannot be estimated.*no measurable noise"):
        ct_adaptation().prepare(noise_free, {"spacing": SPACING})
    mr = MRAdaptation(MRDegradation(), patch_size=(16, 16, 16), progress=False)
    with pytest.raises(AdaptationError, match="magnitude MR"):
        mr.prepare(ct_volume - 1.0, {})  # HU-like values, negative in air
    with pytest.raises(AdaptationError, match="too small"):
        mr.prepare(torch.rand(1, 1, 8, 32, 32), {})
    thin = MRAdaptation(MRDegradation(), patch_size=(48, 48, 48), progress=False)  # a stack of 40 thick slices
    assert thin.prepare(torch.rand(1, 1, 64, 56, 40) + 0.5, {"noise_std": 0.05}).patch == (48, 48, 32)


@pytest.mark.usefixtures("single_thread")
def test_cli_adapts_caches_and_clears(tmp_path, capsys, monkeypatch, ct_volume):
    """``monai-flow denoise --adapt`` on a NIfTI volume (bundle without weights: adapts from scratch),
    a rerun reuses the cache, ``monai-flow cache list / clear`` see and empty it, and bad uses are refused."""
    import nibabel as nib
    import numpy as np

    from monai_flow.cli import main

    from bundle_helpers import copy_configs

    root = copy_configs(tmp_path / "bundles", "ct_denoise")
    monkeypatch.setenv("MONAI_FLOW_CACHE", str(tmp_path / "cache"))
    hu = ct_volume[0, 0].numpy() * 1000 - 1000  # (H, W, D)
    image = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(hu.astype(np.float32), np.diag([2.0, 2.0, 3.0, 1.0])), image)
    args = ["denoise", str(image), str(tmp_path / "out"), "--bundle", "ct_denoise", "--bundle-root", str(root),
            "--adapt", "--adapt-budget", "3"]
    overrides = {"adapt_patch_size": [32, 32], "adapt_batch_size": 2}
    from monai_flow.bundle import Bundle

    real_init = Bundle.__init__

    def small(self, *a, **kw):  # tiny patches: the test image is 64 x 64
        real_init(self, *a, **kw)
        if self.has("adapt_patch_size"):
            for k, v in overrides.items():
                self.set(k, v)

    monkeypatch.setattr(Bundle, "__init__", small)
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "adapting from an untrained network" in err and "adapted in" in err and "noise level from estimate" in err
    out = nib.load(tmp_path / "out" / "scan_denoised.nii.gz").get_fdata()
    assert out.shape == hu.shape and not np.allclose(out, hu)
    assert main(args[:2] + [str(tmp_path / "out2")] + args[3:]) == 0
    assert "reused from the cache" in capsys.readouterr().err
    np.testing.assert_allclose(nib.load(tmp_path / "out2" / "scan_denoised.nii.gz").get_fdata(), out, atol=1e-4)
    assert main(["cache", "list"]) == 0 and "1 entry" in capsys.readouterr().out
    assert main(["cache", "clear"]) == 0 and "removed 1" in capsys.readouterr().out
    assert main(args[:3] + ["--bundle", "ct_restore", "--adapt"]) == 2
    assert "--adapt works with" in capsys.readouterr().err
    assert main(args[:-3] + ["--no-cache"]) == 2  # --no-cache without --adapt



class SlowPreparation(CTAdaptation):
    """A CT adaptation whose preparation takes ``delay`` seconds longer."""

    delay = 0.6

    def prepare(self, volume, meta=None):
        import time

        time.sleep(self.delay)
        return super().prepare(volume, meta)


def test_the_budget_covers_the_preparation(ct_volume):
    """A preparation that outlasts the budget leaves no time to train: a clear error, not an unadapted network."""
    slow = SlowPreparation(CTDegradation(spacing=SPACING, num_views=180), patch_size=(32, 32), batch_size=4,
                           budget_seconds=0.5, realizations=2, progress=False)
    with pytest.raises(AdaptationError, match="budget of 0.5 s was spent before the first training step"):
        slow(SliceWise(tiny_net()), ct_volume, {"spacing": SPACING})


def test_the_warmup_starts_when_training_starts(ct_volume):
    """The preparation takes about 15 % of the budget: the warm-up over 95 % of the training time must still begin
    at a learning rate of about 0 (timed from the budget's start, the first step would run at about 15 % of the peak)."""
    net = SliceWise(tiny_net())
    slow = SlowPreparation(CTDegradation(spacing=SPACING, num_views=180), patch_size=(32, 32), batch_size=4,
                           budget_seconds=30.0, realizations=2, progress=False, max_iterations=1,
                           learning_rate=1e-2, warmup=0.95)
    slow.delay = 4.0
    core, result = slow(net, ct_volume, {"spacing": SPACING})
    start = net.network.state_dict()
    change = max(float((v - start[k]).abs().max()) for k, v in core.state_dict().items() if v.is_floating_point())
    # Adam's first step moves weights by about the learning rate: 1.5e-3 at 15 % of the peak, below 4e-4 when the
    # warm-up starts with the training (even if the first batch took a second)
    assert result["iterations"] == 1 and change < 8e-4
