"""Deployment export: the TorchScript file reproduces the eager inferer, for the bundles' networks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

from bundle_helpers import copy_configs

from monai_flow.bundle import BundleError
from monai_flow.checkpoints import CheckpointError
from monai_flow.export import FlowDenoiser, export_denoiser, load_metadata, main
from monai_flow.inferers.schedules import relative_template_schedule
from monai_flow.inferers import FlowInferer, RelativeFlowInferer, RestorationInferer
from monai_flow.networks import VelocityUNet


@pytest.fixture(autouse=True)
def _one_thread(single_thread):
    yield


def random_network(root: Path, seed: int = 0) -> torch.nn.Module:
    """The bundle's ``network_def`` with random weights (the zero-initialised output layer perturbed)."""
    parser = ConfigParser()
    parser.read_config(str(root / "configs" / "inference.json"))
    parser["bundle_root"] = str(root)
    torch.manual_seed(seed)
    net = parser.get_parsed_content("network_def")
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net.eval()


@pytest.fixture
def bundle(tmp_path, request):
    """(bundle folder, random network, its checkpoint) for the parametrised bundle name."""
    root = copy_configs(tmp_path, request.param)
    net = random_network(root)
    ckpt = tmp_path / "weights.pt"
    torch.save(net.state_dict(), ckpt)
    return root, net, ckpt


CASES = {
    # bundle: (steps, eager inferer with the same schedule, input shape)
    "ct_denoise": (3, None, (3, 1, 32, 48)),  # an auto bundle: the 3-step template
    "ct_restore": (3, RestorationInferer(num_steps=3), (2, 1, 40, 24)),
    "mr_denoise": (2, None, (1, 1, 16, 16, 24)),  # 3D network; schedule from the bundle's max_dt/min_dt
}


@pytest.mark.parametrize("bundle", sorted(CASES), indirect=True)
def test_export_reproduces_the_eager_inferer(bundle, request, tmp_path):
    root, net, ckpt = bundle
    name = root.name
    steps, eager, shape = CASES[name]
    out = export_denoiser(name, str(tmp_path / f"{name}.ts"), checkpoint=str(ckpt), steps=steps, bundle_root=str(root))
    meta = load_metadata(out)
    if eager is None:
        eager = RelativeFlowInferer(meta["dt_schedule"], max_dt=1.0)  # the exported steps as they are
        assert len(meta["dt_schedule"]) == steps
    loaded = torch.jit.load(str(out))
    for s in (shape, (1, *shape[1:-1], shape[-1] + 8)):  # the trace keeps batch and spatial sizes dynamic
        x = torch.rand(s, generator=torch.Generator().manual_seed(len(s)))
        with torch.no_grad():
            expected, got = eager(x, net), loaded(x)
        assert got.shape == x.shape
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
        assert (expected - x).abs().max() > 1e-2  # the network is not the zero map: the check has teeth
    assert meta["bundle"] == name and meta["export"]["method"] == "torch.jit.trace"
    assert meta["checkpoint"] == str(ckpt.resolve()) and meta["input"]["channels"] == 1
    if name == "ct_denoise":
        # dt_schedule "auto" (max_dt 0.6, min_dt 0.05): from the clean end min_dt, doubling: 0.2, 0.1, 0.05
        assert meta["method"] == "relative_flow" and meta["dt_schedule"] == pytest.approx([0.2, 0.1, 0.05])
        assert meta["intensity"]["a_min"] == -1000.0 and meta["intensity"]["a_max"] == 0.0
        assert meta["input"]["shape"] == "(B, C, H, W)" and meta["input"]["spatial_divisor"] == 4
    if name == "ct_restore":
        assert meta["method"] == "restoration" and meta["time_grid"] == pytest.approx([0, 1 / 3, 2 / 3, 1])
    with pytest.raises(Exception, match="divisible by 4"):
        loaded(torch.rand(1, 1, *[18] * (len(shape) - 2)))


@pytest.mark.parametrize("bundle", ["ct_denoise"], indirect=True)
def test_defaults_overwrite_and_errors(bundle, tmp_path):
    root, net, ckpt = bundle
    out = tmp_path / "den.ts"
    config = json.loads((root / "configs" / "inference.json").read_text())
    (root / "configs" / "inference.json").write_text(json.dumps({**config, "dt_schedule": [0.5, 0.3, 0.2]}))
    export_denoiser("ct_denoise", str(out), checkpoint=str(ckpt), bundle_root=str(root))  # a fixed schedule, as it is
    assert load_metadata(out)["dt_schedule"] == [0.5, 0.3, 0.2]
    before = out.read_bytes()
    with pytest.raises(FileExistsError, match="overwrite"):
        export_denoiser("ct_denoise", str(out), checkpoint=str(ckpt), steps=2, bundle_root=str(root))
    assert out.read_bytes() == before
    export_denoiser(str(root), str(out), checkpoint=str(ckpt), dt_schedule=[0.3, 0.1], overwrite=True)  # a folder works too
    assert load_metadata(out)["dt_schedule"] == [0.3, 0.1]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporary left

    with pytest.raises(CheckpointError):  # weights of another network
        other = tmp_path / "other.pt"
        torch.save(VelocityUNet(2, channels=(8, 8), attention_levels=(False, False), norm_num_groups=8).state_dict(), other)
        export_denoiser("ct_denoise", str(tmp_path / "x.ts"), checkpoint=str(other), bundle_root=str(root))
    with pytest.raises(CheckpointError, match="does not exist"):  # default: the bundle's models/model.pt
        export_denoiser("ct_denoise", str(tmp_path / "x.ts"), bundle_root=str(root))
    with pytest.raises(ValueError, match="steps or dt_schedule"):
        export_denoiser("ct_denoise", str(tmp_path / "x.ts"), checkpoint=str(ckpt), steps=2, dt_schedule=[0.1], bundle_root=str(root))
    with pytest.raises(BundleError, match="inference.json"):
        export_denoiser("ct_denoise", str(tmp_path / "x.ts"), checkpoint=str(ckpt), bundle_root=str(tmp_path))
    config = json.loads((root / "configs" / "inference.json").read_text())
    (root / "configs" / "inference.json").write_text(json.dumps({**config, "dt_schedule": "auto"}))
    with pytest.raises(ValueError, match="auto"):
        export_denoiser("ct_denoise", str(tmp_path / "x.ts"), checkpoint=str(ckpt), bundle_root=str(root))
    export_denoiser("ct_denoise", str(tmp_path / "x.ts"), checkpoint=str(ckpt), steps=1, bundle_root=str(root))
    assert not (tmp_path / "y.ts").exists() and (tmp_path / "x.ts").is_file()


def test_generation_bundles_are_refused(tmp_path):
    root = copy_configs(tmp_path, "motfm_generation")
    with pytest.raises(ValueError, match="flow_inferer|infers with"):
        export_denoiser("motfm_generation", str(tmp_path / "g.ts"), checkpoint=str(tmp_path / "w.pt"), bundle_root=str(root))
    with pytest.raises(ValueError, match="RelativeFlowInferer"):
        FlowDenoiser(torch.nn.Identity(), FlowInferer(num_steps=2))
    with pytest.raises(ValueError, match="auto"):
        FlowDenoiser(torch.nn.Identity(), RelativeFlowInferer("auto", noise_estimator=lambda x: x.std(), target_std=0.1))


def test_template_schedule():
    assert relative_template_schedule(3) == pytest.approx([0.2, 0.1, 0.05])
    assert relative_template_schedule(5, max_dt=0.3) == pytest.approx([0.3, 0.3, 0.2, 0.1, 0.05])
    with pytest.raises(ValueError, match="steps"):
        relative_template_schedule(0)


@pytest.mark.parametrize("bundle", ["ct_restore"], indirect=True)
def test_module_entry_point_and_torch_only_loading(bundle, tmp_path, capsys):
    root, net, ckpt = bundle
    out = tmp_path / "restore.ts"
    assert main(["ct_restore", str(out), "--checkpoint", str(ckpt), "--steps", "2", "--bundle-root", str(root)]) == 0
    assert "restoration" in capsys.readouterr().out
    assert main(["ct_restore", str(out), "--checkpoint", str(ckpt), "--bundle-root", str(root)]) == 2  # exists
    assert "overwrite" in capsys.readouterr().err
    # the file runs where neither monai nor monai_flow can be imported
    script = (
        "import sys; sys.modules['monai'] = sys.modules['monai_flow'] = None\n"
        "import torch\n"
        f"m = torch.jit.load({str(out)!r})\n"
        "print(tuple(m(torch.rand(2, 1, 16, 32)).shape))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0 and result.stdout.strip() == "(2, 1, 16, 32)", result.stderr[-2000:]
