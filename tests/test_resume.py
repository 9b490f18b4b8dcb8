"""Resuming training: atomic iteration/epoch checkpoints and a bundle run killed mid-epoch.

The end-to-end test runs the ct_denoise bundle in a subprocess (tiny overrides), SIGKILLs it in
the middle of its second epoch right after an iteration checkpoint was written, reruns the same
command and checks that the second run continued from that iteration instead of restarting.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine, Events
from monai.bundle import ConfigParser
from monai.handlers import CheckpointLoader

from bundle_helpers import BUNDLES, copy_configs

from monai_flow.checkpoints import TrainingCheckpointSaver, latest_checkpoint, save_checkpoint

REPO = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------------------------
# the saver and latest_checkpoint on a plain ignite Engine (fast, in-process)
# --------------------------------------------------------------------------------------------
class Counter:
    """A stateful object standing in for a model / curriculum: counts epoch-end events."""

    def __init__(self) -> None:
        self.epochs = 0

    def state_dict(self) -> dict:
        return {"epochs": self.epochs}

    def load_state_dict(self, state: dict) -> None:
        self.epochs = int(state["epochs"])


def make_engine(seen: list, counter: Counter, fail_at: int | None = None) -> Engine:
    def step(engine, batch):
        if engine.state.iteration == fail_at:
            raise KeyboardInterrupt  # a crash in the middle of an iteration
        seen.append(engine.state.iteration)
        return batch

    engine = Engine(step)
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: setattr(counter, "epochs", counter.epochs + 1))
    return engine


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_saver_files_pruning_and_epoch_end_deferral(tmp_path):
    counter, seen = Counter(), []
    engine = make_engine(seen, counter)
    saved = []
    saver = TrainingCheckpointSaver(str(tmp_path), {"counter": counter, "trainer": engine}, iteration_interval=2)
    saver.attach(engine)
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: saved.append(names(tmp_path)))
    engine.run(range(4), max_epochs=3)  # 12 iterations, epoch ends at 4, 8, 12
    # iteration 4 and 8 fall on epoch ends: covered by the epoch file, no iteration file there
    assert saved == [["checkpoint_epoch=1.pt"], ["checkpoint_epoch=2.pt"], ["checkpoint_epoch=3.pt"]]
    ckpt = torch.load(tmp_path / "checkpoint_epoch=3.pt", weights_only=True)
    assert ckpt["trainer"]["iteration"] == 12 and ckpt["counter"]["epochs"] == 3  # after the epoch-end handler

    # without epoch files the epoch-end iteration checkpoint is deferred to EPOCH_COMPLETED
    counter2, folder = Counter(), tmp_path / "iter_only"
    engine2 = make_engine([], counter2)
    TrainingCheckpointSaver(str(folder), {"counter": counter2, "trainer": engine2}, iteration_interval=4, epoch_interval=0, n_saved=2).attach(engine2)
    engine2.run(range(4), max_epochs=2)
    assert names(folder) == ["checkpoint_iteration=4.pt", "checkpoint_iteration=8.pt"]
    assert torch.load(folder / "checkpoint_iteration=4.pt", weights_only=True)["counter"]["epochs"] == 1


def test_latest_checkpoint_orders_by_stored_iteration(tmp_path):
    assert latest_checkpoint(str(tmp_path / "missing")) is None and latest_checkpoint(str(tmp_path)) is None

    def write(name: str, iteration: int | None) -> None:
        torch.save({"model": {"w": torch.zeros(2)}, **({"trainer": {"iteration": iteration}} if iteration is not None else {})}, tmp_path / name)

    write("checkpoint_epoch=2.pt", 20)
    write("checkpoint_iteration=15.pt", 15)  # stale, older than the epoch file
    assert latest_checkpoint(str(tmp_path)).endswith("checkpoint_epoch=2.pt")
    write("checkpoint_iteration=25.pt", 25)  # mid-epoch 3: newer
    assert latest_checkpoint(str(tmp_path)).endswith("checkpoint_iteration=25.pt")
    write("checkpoint_iteration=30.pt", 30)
    write("checkpoint_epoch=3.pt", 30)  # same iteration: the epoch file ran the epoch-end handlers
    assert latest_checkpoint(str(tmp_path)).endswith("checkpoint_epoch=3.pt")
    (tmp_path / "checkpoint_epoch=4.pt").write_bytes(b"PK\x03\x04 truncated")  # a damaged newer file
    with pytest.warns(UserWarning, match="unreadable"):
        assert latest_checkpoint(str(tmp_path)).endswith("checkpoint_epoch=3.pt")
    write("other_epoch=9.pt", 99)  # another prefix is ignored
    assert latest_checkpoint(str(tmp_path / "nothing")) is None
    assert latest_checkpoint(str(tmp_path), prefix="other").endswith("other_epoch=9.pt")


def test_atomic_save_never_leaves_a_partial_file(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint_epoch=1.pt"
    save_checkpoint({"a": torch.ones(3)}, path)
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)

    def crash(obj, f, *args, **kwargs):  # the process dies halfway through writing
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"a": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert names(tmp_path) == ["checkpoint_epoch=1.pt"]  # no temporary left, the old file intact
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(3))
    # a temporary left by a SIGKILL during a save is removed when the next run attaches a saver
    (tmp_path / ".checkpoint_iteration=7.pt.abc.tmp").write_bytes(b"x")
    TrainingCheckpointSaver(str(tmp_path), {"a": Counter()}).attach(Engine(lambda e, b: None))
    assert names(tmp_path) == ["checkpoint_epoch=1.pt"]


def test_saver_validates_its_arguments(tmp_path):
    with pytest.raises(ValueError, match="state_dict"):
        TrainingCheckpointSaver(str(tmp_path), {"x": 3})
    with pytest.raises(ValueError, match="iteration_interval"):
        TrainingCheckpointSaver(str(tmp_path), {"c": Counter()}, iteration_interval=-1)
    with pytest.raises(ValueError, match="n_saved"):
        TrainingCheckpointSaver(str(tmp_path), {"c": Counter()}, n_saved=0)
    with pytest.raises(ValueError, match="save_dict"):
        TrainingCheckpointSaver(str(tmp_path), {})


def test_ignite_resumes_mid_epoch_from_an_iteration_checkpoint(tmp_path):
    """A crash at iteration 7 of 12 (epoch 2 of 3, epoch_length 4): the rerun resumes after iteration 6."""
    counter, seen = Counter(), []
    engine = make_engine(seen, counter, fail_at=7)
    TrainingCheckpointSaver(str(tmp_path), {"counter": counter, "trainer": engine}, iteration_interval=3).attach(engine)
    with pytest.raises(KeyboardInterrupt):
        engine.run(range(4), max_epochs=3)
    path = latest_checkpoint(str(tmp_path))
    assert path.endswith("checkpoint_iteration=6.pt") and seen == [1, 2, 3, 4, 5, 6]

    counter2, seen2 = Counter(), []
    engine2 = make_engine(seen2, counter2)
    epochs = []
    engine2.add_event_handler(Events.EPOCH_STARTED, lambda e: epochs.append(e.state.epoch))
    CheckpointLoader(path, {"counter": counter2, "trainer": engine2}).attach(engine2)
    TrainingCheckpointSaver(str(tmp_path), {"counter": counter2, "trainer": engine2}, iteration_interval=3).attach(engine2)
    engine2.run(range(4), max_epochs=3)
    assert seen2 == [7, 8, 9, 10, 11, 12] and epochs == [2, 3]  # the rest of epoch 2, then epoch 3
    assert counter2.epochs == 3 and engine2.state.iteration == 12
    assert names(tmp_path) == ["checkpoint_epoch=3.pt"]  # the stale iteration file was pruned


def test_every_bundle_saves_iteration_checkpoints():
    """Every training config (and with its multi-GPU overlay, which inherits the handlers) uses the saver with a
    ``checkpoint_every`` key."""
    configs = sorted(BUNDLES.glob("*/configs/train*.json"))
    assert len(configs) >= 6
    for train in configs:
        if train.name != "train.json":
            continue
        root = train.parent
        for files in ([train], [train, root / "multi_gpu_train.json"]):
            parser = ConfigParser()
            parser.read_config([str(f) for f in files])
            key = "train#checkpoint_handlers"
            savers = [h for h in parser[key] if h["_target_"] == "monai_flow.checkpoints.TrainingCheckpointSaver"]
            assert len(savers) == 1 and savers[0]["iteration_interval"] == "@checkpoint_every", (train, key)
            assert isinstance(parser["checkpoint_every"], int) and parser["checkpoint_every"] > 0
            assert savers[0]["save_dict"] == "@checkpoint_dict" and "trainer" in parser["checkpoint_dict"]
    for overlay in (BUNDLES / "ct_restore/configs/train_flowmap.json", BUNDLES / "motfm_generation/configs/train_3d.json"):
        assert not any("checkpoint_handlers" in k for k in json.loads(overlay.read_text())), overlay  # inherit the saver


# --------------------------------------------------------------------------------------------
# end to end: the ct_denoise bundle killed mid-epoch and rerun
# --------------------------------------------------------------------------------------------
TINY = ["--max_epochs", "3", "--val_interval", "100", "--patches_per_volume", "2", "--patch_size", "[32, 32]",
        "--num_views", "60", "--noise_realizations", "1", "--checkpoint_every", "1", "--demo#num_images", "5",
        "--demo#image_size", "64"]
HANG_AT = 5  # iteration 2 of epoch 2 (3 training volumes, one per batch: epoch_length 3)
ITERATION_LOG = re.compile(r"Epoch: (\d+)/3, Iter: (\d+)/(\d+) -- train_loss")


def bundle_command(root: Path, *overlays: Path) -> list[str]:
    files = [str(root / "configs" / "train.json"), *map(str, overlays)]
    return [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(files), *TINY]


def env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


def test_bundle_run_killed_mid_epoch_resumes_from_the_iteration(tmp_path):
    root = copy_configs(tmp_path, "ct_denoise")
    models = root / "models"
    # the first run stalls after iteration HANG_AT (its iteration checkpoint is written first) so that the
    # SIGKILL lands mid-epoch at a known point; the rerun is the plain command
    hang = tmp_path / "hang.json"
    hang.write_text(json.dumps({
        "hang_event": "$monai.utils.optional_import('ignite.engine', name='Events')[0]"
                      f".ITERATION_COMPLETED(once={HANG_AT})",
        "hang": "$lambda engine: __import__('time').sleep(300)",
        "run": [
            "$[h.attach(@train#trainer) for h in @train#checkpoint_handlers]",
            "$@train#trainer.add_event_handler(@hang_event, @hang)",
            "$@train#trainer.run()",
        ],
    }))
    log1 = tmp_path / "run1.log"
    with open(log1, "w") as out:
        first = subprocess.Popen(bundle_command(root, hang), stdout=out, stderr=subprocess.STDOUT, env=env())
        target = models / f"checkpoint_iteration={HANG_AT}.pt"
        deadline = time.monotonic() + 240
        while not target.exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    assert first.returncode == -signal.SIGKILL and target.exists(), log1.read_text()[-3000:]
    assert not (models / "checkpoint_epoch=2.pt").exists() and not (models / "model.pt").exists()

    resume = latest_checkpoint(str(models))
    assert resume == str(target)
    ckpt = torch.load(resume, weights_only=True)
    epoch_length = ckpt["trainer"]["epoch_length"]
    assert epoch_length == 3 and ckpt["trainer"]["iteration"] == HANG_AT
    assert ckpt["objective"]["curriculum"]["epoch"] == 1 and ckpt["lr_scheduler"]["last_epoch"] == 1  # epoch 1 done

    second = subprocess.run(bundle_command(root), capture_output=True, text=True, env=env(), timeout=300)
    log2 = second.stdout + second.stderr
    assert second.returncode == 0, log2[-3000:]
    assert f"Restored all variables from {resume}" in log2
    ran = [(int(e), int(i)) for e, i, _ in ITERATION_LOG.findall(log2)]
    # an uninterrupted run does 3 epochs x 3 iterations; the rerun did only what the killed run had not
    assert ran == [(2, 3), (3, 1), (3, 2), (3, 3)], ran

    final = torch.load(models / "checkpoint_epoch=3.pt", weights_only=True)
    assert final["trainer"]["iteration"] == 3 * epoch_length and final["trainer"]["epoch_length"] == epoch_length
    assert final["objective"]["curriculum"]["epoch"] == 3  # restored at 1, two more epoch ends
    assert final["lr_scheduler"]["last_epoch"] == 3
    steps = {int(s["step"]) for s in final["optimizer"]["state"].values()}
    assert steps == {3 * epoch_length}  # AdamW kept its moments and step count across the kill
    assert sorted(p.name for p in models.iterdir()) == ["checkpoint_epoch=3.pt", "model.pt", "model.quality_time.json"]
