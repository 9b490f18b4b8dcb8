"""Resumable training checkpoints: atomic saving, discovery of the newest one, and the ignite
handler that writes them at epoch and iteration level."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

from monai_flow.atomic import write_atomically

from .loading import read_checkpoint
from .unwrap import unwrap_network

__all__ = ["TrainingCheckpointSaver", "latest_checkpoint", "save_checkpoint"]

_CHECKPOINT_KINDS = ("epoch", "iteration")  # at an equal trainer iteration the epoch file wins (see below)


def _checkpoint_files(folder: Path, prefix: str) -> list[tuple[str, int, Path]]:
    """``(kind, number, path)`` of every ``{prefix}_epoch=N.pt`` / ``{prefix}_iteration=N.pt`` in ``folder``."""
    found = []
    for kind in _CHECKPOINT_KINDS:
        for path in folder.glob(f"{prefix}_{kind}=*.pt"):
            number = path.name[len(f"{prefix}_{kind}=") : -len(".pt")]
            if number.isdigit():
                found.append((kind, int(number), path))
    return found


def _trainer_iteration(path: Path) -> int | None:
    """``checkpoint["trainer"]["iteration"]`` of a training checkpoint, None if absent; raises if unreadable.

    ``mmap=True`` maps the tensors instead of reading them, so this is cheap even for large models.
    """
    checkpoint = read_checkpoint(path, mmap=True)
    trainer = checkpoint.get("trainer") if isinstance(checkpoint, dict) else None
    iteration = trainer.get("iteration") if isinstance(trainer, dict) else None
    return int(iteration) if iteration is not None else None


def latest_checkpoint(folder: str, prefix: str = "checkpoint") -> str | None:
    """The checkpoint a killed or finished training run resumes from, or None when there is none.

    Candidates are the files :class:`TrainingCheckpointSaver` writes in ``folder``:
    ``{prefix}_epoch=E.pt`` (end of an epoch) and ``{prefix}_iteration=I.pt`` (mid-epoch). The
    newest is the one whose stored trainer state has the largest ``iteration``
    (``checkpoint["trainer"]["iteration"]``, the count of optimisation steps, comparable across
    both kinds); at an equal iteration the epoch file wins, as it was written after the
    epoch-end handlers (LR schedule, curriculum, validation). Files without a trainer state are
    ordered by the number in their name after those with one. Unreadable files (truncated by a
    crash of a non-atomic writer) are skipped with a warning.
    """
    if not os.path.isdir(folder):
        return None
    ranked = []
    for kind, number, path in _checkpoint_files(Path(folder), prefix):
        try:
            iteration = _trainer_iteration(path)
        except Exception as e:  # a damaged file must not stop a resume from the previous one
            warnings.warn(f"skipping unreadable checkpoint {path}: {type(e).__name__}: {e}")
            continue
        known = iteration is not None
        ranked.append(((known, iteration if known else number, kind == "epoch", number), path))
    return str(max(ranked, key=lambda item: item[0])[1]) if ranked else None


def save_checkpoint(obj, path: str | os.PathLike) -> None:
    """``torch.save(obj, path)`` that never leaves a partial ``path``
    (:func:`monai_flow.atomic.write_atomically`): a crash leaves either the old file or the new
    one, plus at worst a stale hidden ``.<name>.*`` file that checkpoint discovery ignores."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            torch.save(obj, f)

    write_atomically(path, write, suffix=".tmp")  # stale ".<prefix>_*.tmp" files are cleaned on attach


class TrainingCheckpointSaver:
    """Resumable training checkpoints, written atomically, at epoch and at iteration level.

    Files in ``save_dir`` (``prefix="checkpoint"``):

    - ``checkpoint_epoch=E.pt`` after every ``epoch_interval``-th epoch;
    - ``checkpoint_iteration=I.pt`` every ``iteration_interval`` iterations (``I`` counts
      iterations since the start of training, across epochs), so a run killed mid-epoch loses
      at most ``iteration_interval - 1`` iterations.

    Each file holds ``{key: obj.state_dict()}`` of ``save_dict`` (a DDP / DataParallel model is
    saved unwrapped); with the trainer in it (``"trainer": engine``) a rerun that loads the file
    with ``monai.handlers.CheckpointLoader`` continues at that iteration: ignite sets
    ``epoch = iteration // epoch_length`` and runs the remaining ``epoch_length - iteration %
    epoch_length`` iterations of the interrupted epoch. :func:`latest_checkpoint` picks the file
    to resume from.

    Consistency: handlers on ``EPOCH_COMPLETED`` (LR schedule, RelativeFlow curriculum,
    validation) must run before a checkpoint taken at the end of an epoch, or a resume would skip
    them. Attach this saver after them (the bundles attach it in ``run``); an iteration checkpoint
    that falls on the last iteration of an epoch is taken at ``EPOCH_COMPLETED`` instead of
    ``ITERATION_COMPLETED`` (and not at all when the epoch checkpoint is written).

    Robustness: files are written by :func:`save_checkpoint` (MONAI's ``CheckpointSaver`` uses
    ignite's ``DiskSaver`` with ``atomic=False``), and older files are deleted only after the new
    one is in place: the ``n_saved`` newest of each kind are kept, iteration files at or before
    the newest epoch file are deleted, files left by earlier runs included. Only rank 0 of a
    ``torch.distributed`` job writes.

    Args:
        save_dir: output folder (created).
        save_dict: objects with ``state_dict()``, e.g. model, optimizer, lr_scheduler, objective
            (RelativeFlow curriculum state), trainer.
        iteration_interval: iterations between mid-epoch checkpoints; 0 disables them.
        epoch_interval: epochs between epoch checkpoints; 0 disables them.
        n_saved: files kept per kind (None keeps all).
        prefix: file name prefix.
    """

    def __init__(
        self,
        save_dir: str,
        save_dict: dict,
        iteration_interval: int = 50,
        epoch_interval: int = 1,
        n_saved: int | None = 1,
        prefix: str = "checkpoint",
    ) -> None:
        if not save_dict:
            raise ValueError("save_dict must name at least one object to save.")
        bad = [k for k, v in save_dict.items() if not hasattr(v, "state_dict")]
        if bad:
            raise ValueError(f"every save_dict entry needs a state_dict() method, these do not: {bad}.")
        for name, value in (("iteration_interval", iteration_interval), ("epoch_interval", epoch_interval)):
            if int(value) != value or value < 0:
                raise ValueError(f"{name} must be an integer >= 0 (0 disables), got {value!r}.")
        if n_saved is not None and (int(n_saved) != n_saved or n_saved < 1):
            raise ValueError(f"n_saved must be an integer >= 1 or None, got {n_saved!r}.")
        self.save_dir, self.save_dict, self.prefix = Path(save_dir), dict(save_dict), prefix
        self.iteration_interval, self.epoch_interval, self.n_saved = int(iteration_interval), int(epoch_interval), n_saved

    def attach(self, engine) -> None:
        from ignite.engine import Events

        self.save_dir.mkdir(parents=True, exist_ok=True)
        for stale in self.save_dir.glob(f".{self.prefix}_*.tmp"):  # left by a run killed while saving
            stale.unlink(missing_ok=True)
        if self.iteration_interval:
            engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.epoch_completed)

    @staticmethod
    def _at_epoch_end(state) -> bool:
        return bool(state.epoch_length) and state.iteration % state.epoch_length == 0

    def iteration_completed(self, engine) -> None:
        state = engine.state
        if state.iteration % self.iteration_interval == 0 and not self._at_epoch_end(state):
            self.save(engine, "iteration")

    def epoch_completed(self, engine) -> None:
        state = engine.state
        if self.epoch_interval and state.epoch % self.epoch_interval == 0:
            self.save(engine, "epoch")
        elif self.iteration_interval and state.iteration % self.iteration_interval == 0:
            self.save(engine, "iteration")  # deferred from the epoch's last ITERATION_COMPLETED

    def save(self, engine, kind: str) -> Path | None:
        """Write the checkpoint of ``kind`` ("epoch" or "iteration") now; returns its path (None off rank 0)."""
        if kind not in _CHECKPOINT_KINDS:
            raise ValueError(f"kind must be one of {_CHECKPOINT_KINDS}, got {kind!r}.")
        if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_rank() != 0:
            return None
        number = engine.state.epoch if kind == "epoch" else engine.state.iteration
        path = self.save_dir / f"{self.prefix}_{kind}={number}.pt"
        state = {key: (unwrap_network(obj, slice_wise=False) if isinstance(obj, torch.nn.Module) else obj).state_dict()
                 for key, obj in self.save_dict.items()}
        save_checkpoint(state, path)
        engine.logger.info(f"Saved {kind} checkpoint {path.name} (iteration {engine.state.iteration}).")
        self._prune(engine.state.iteration if kind == "epoch" else None)
        return path

    def _prune(self, epoch_iteration: int | None) -> None:
        files = _checkpoint_files(self.save_dir, self.prefix)
        doomed = []
        for kind in _CHECKPOINT_KINDS:
            numbers = sorted((n, p) for k, n, p in files if k == kind)
            if self.n_saved is not None:
                doomed += [p for _, p in numbers[: max(len(numbers) - self.n_saved, 0)]]
            if kind == "iteration" and epoch_iteration is not None:  # superseded by the new epoch file
                doomed += [p for n, p in numbers if n <= epoch_iteration]
        for path in set(doomed):
            path.unlink(missing_ok=True)
