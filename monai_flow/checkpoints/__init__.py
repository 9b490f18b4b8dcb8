"""Checkpoints in one place: safe loading (``weights_only=True``, errors that name the problem),
atomic saving, discovery of the checkpoint to resume from, the resumable-training handler, and
unwrapping networks from their DDP / DataParallel / slice-wise wrappers."""

from .loading import CheckpointError, load_network_weights, read_checkpoint
from .training import TrainingCheckpointSaver, latest_checkpoint, save_checkpoint
from .unwrap import unwrap_network

__all__ = [
    "CheckpointError",
    "TrainingCheckpointSaver",
    "latest_checkpoint",
    "load_network_weights",
    "read_checkpoint",
    "save_checkpoint",
    "unwrap_network",
]
