"""Distributed inference over many volumes (issue 15): ``torchrun`` ranks take disjoint shards, a killed
rank's volumes are done on rerun, and the union of the outputs equals the single-process outputs bit for
bit; the bundle overlay and the sharding helpers."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from bundle_helpers import BUNDLES, bundle_with_untrained_weights

from monai_flow.cli import main
from monai_flow.distributed import ProcessGroup, RankInfo, finished, rank_info, remove_stale_partials, shard

REPO = BUNDLES.parent
NUM_VOLUMES = 5

# rank 1 writes its first volume, waits until rank 0 has written all of its own, and is killed (SIGKILL) as
# it starts writing its second: torchrun then stops rank 0 (SIGTERM), which waits for rank 1 at the end
KILLER = """
import os, signal, sys, time
from pathlib import Path
import monai_flow.cli.pipeline as pipeline
if os.environ.get("RANK") == "1":
    write, calls = pipeline.VolumeDenoiser.write, []
    def die_on_second_write(self, item, pred, targets, out, overwrite):
        calls.append(1)
        if len(calls) == 2:
            while not all((out.path / f"vol{i}_denoised.nii.gz").exists() for i in (0, 2, 4)):
                time.sleep(0.05)
            os.kill(os.getpid(), signal.SIGKILL)
        return write(self, item, pred, targets, out, overwrite)
    pipeline.VolumeDenoiser.write = die_on_second_write
from monai_flow.cli import main
sys.exit(main())
"""


def _volumes(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for i in range(NUM_VOLUMES):
        hu = (40 + 60 * rng.standard_normal((24, 24, 4))).astype(np.float32)
        nib.save(nib.Nifti1Image(hu, np.diag([0.8, 0.8, 2.5, 1.0])), str(folder / f"vol{i}.nii.gz"))
    return folder


def _trained_like(root: Path) -> Path:
    """ct_denoise with untrained weights, perturbed so that the network is not the identity."""
    bundle = bundle_with_untrained_weights(root, "ct_denoise")
    state = torch.load(bundle / "models" / "model.pt", weights_only=True)
    g = torch.Generator().manual_seed(0)
    torch.save({k: v + 0.02 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v
                for k, v in state.items()}, bundle / "models" / "model.pt")
    return bundle


def _outputs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    return _volumes(root / "in"), _trained_like(root), root


def test_two_gloo_ranks_with_a_killed_rank_equal_one_process_bit_for_bit(setup, single_thread, capsys):
    """torchrun, 2 CPU processes (gloo): disjoint shards (rank 0: volumes 0, 2, 4; rank 1: 1, 3), each
    written once; rank 1 is killed before its second volume, torchrun stops the job (status != 0); the
    rerun (here one process) does only the killed rank's missing volume; the union equals one process's
    outputs bit for bit, with no temporary file left."""
    inputs, bundle, root = setup
    single = root / "single"
    assert main(["denoise", str(inputs), str(single), "--bundle", "ct_denoise", "--bundle-root", str(bundle),
                 "--device", "cpu"]) == 0
    reference = _outputs(single)
    assert len(reference) == NUM_VOLUMES

    out = root / "torchrun"
    script = root / "killer.py"
    script.write_text(KILLER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "--monitor-interval=0.2", str(script), "denoise", str(inputs), str(out), "--bundle", "ct_denoise",
           "--bundle-root", str(bundle), "--device", "cpu"]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    log = res.stdout + res.stderr
    assert res.returncode != 0, log[-3000:]  # a killed process fails the job
    writes = re.findall(r"\[rank (\d)/2\] wrote \S+/(vol\d)_denoised.nii.gz", log)
    assert sorted(writes) == [("0", "vol0"), ("0", "vol2"), ("0", "vol4"), ("1", "vol1")], log[-3000:]
    assert sorted(p.name for p in out.iterdir()) == [f"vol{i}_denoised.nii.gz" for i in (0, 1, 2, 4)]

    capsys.readouterr()
    assert main(["denoise", str(inputs), str(out), "--bundle", "ct_denoise", "--bundle-root", str(bundle),
                 "--device", "cpu", "--skip-existing"]) == 0
    rerun = capsys.readouterr().out
    assert re.findall(r"wrote \S+/(vol\d)_denoised", rerun) == ["vol3"] and "skipped 4 input(s)" in rerun
    assert _outputs(out) == reference  # the union, bit for bit; nothing else in the folder


def test_rerun_skips_finished_outputs_and_redoes_missing_ones(setup, single_thread, capsys):
    inputs, bundle, root = setup
    out = root / "rerun"
    args = ["denoise", str(inputs), str(out), "--bundle", "ct_denoise", "--bundle-root", str(bundle), "--device", "cpu"]
    assert main(args) == 0
    before = _outputs(out)
    (out / "vol2_denoised.nii.gz").unlink()
    (out / ".vol2_denoised.partial-deadbeef.nii.gz").write_bytes(b"left by a killed process")
    assert main(args) == 2  # without --skip-existing existing outputs are refused, as before
    capsys.readouterr()
    assert main(args + ["--skip-existing"]) == 0
    text = capsys.readouterr()
    assert "skipped 4 input(s)" in text.out + text.err and "vol2_denoised" in text.out
    assert _outputs(out) == before  # redone bit for bit, the stale temporary file removed


def test_shards_are_disjoint_and_cover_everything():
    items = list(range(11))
    for world in (1, 2, 3, 4, 11, 16):
        parts = [shard(items, r, world) for r in range(world)]
        assert sorted(x for p in parts for x in p) == items
    with pytest.raises(ValueError):
        shard(items, 2, 2)


def test_rank_info_reads_the_torchrun_environment():
    assert rank_info({}) == RankInfo(0, 1, 0) and not rank_info({}).distributed
    info = rank_info({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert info == RankInfo(3, 4, 1) and info.distributed and not info.is_main and info.prefix() == "[rank 3/4] "
    with pytest.raises(ValueError):
        rank_info({"RANK": "4", "WORLD_SIZE": "4"})
    with ProcessGroup(RankInfo()) as group:  # one process: no process group, gather is local
        assert group.gather("x") == ["x"] and not group.owned


def test_finished_and_stale_partials(tmp_path):
    a, b = tmp_path / "a_denoised.nii.gz", tmp_path / "a_denoised_dicom"
    assert not finished([]) and not finished([a])
    a.write_bytes(b"x")
    assert finished([a]) and not finished([a, b])
    (tmp_path / ".a_denoised.partial-1234.nii.gz").write_bytes(b"x")
    (tmp_path / ".a_denoised_dicom.partial-5678").mkdir()
    (tmp_path / ".other.partial-1.nii.gz").write_bytes(b"x")
    assert remove_stale_partials([a, b]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.partial-1.nii.gz", "a_denoised.nii.gz"]


@pytest.mark.parametrize("name", ["ct_denoise", "mr_denoise", "ct_restore"])
def test_multi_gpu_inference_overlay_runs_the_shared_loop(name, tmp_path, monkeypatch):
    """The overlay replaces ``run`` by the sharded loop with the bundle's own components and a per-rank
    device; run merged with inference.json in one process it writes what ``monai-flow denoise`` writes."""
    overlay = json.loads((BUNDLES / name / "configs" / "multi_gpu_inference.json").read_text())
    assert overlay["run"][0].startswith(f"$monai_flow.distributed.run_bundle_inference('{name}', @datalist,")
    inference = json.loads((BUNDLES / name / "configs" / "inference.json").read_text())
    for key in overlay:  # repeats nothing of inference.json
        assert key.startswith("+") or inference.get(key) != overlay[key], key
    if name != "ct_denoise":
        return
    from bundle_helpers import run_bundle

    inputs = _volumes(tmp_path / "in")
    bundle = _trained_like(tmp_path / "b")
    shutil.copy(BUNDLES / name / "configs" / "multi_gpu_inference.json", bundle / "configs")
    torch.set_num_threads(1)
    run_bundle(bundle, ["inference.json", "multi_gpu_inference.json"], input_path=str(inputs),
               output_dir=str(tmp_path / "overlay"))
    assert main(["denoise", str(inputs), str(tmp_path / "cli"), "--bundle", name, "--bundle-root", str(bundle),
                 "--device", "cpu"]) == 0
    assert _outputs(tmp_path / "overlay") == _outputs(tmp_path / "cli")
