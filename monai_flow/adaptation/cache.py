"""A size-capped cache of adapted network weights, keyed by the content of the input they were
adapted to (and everything else that determines the result).

Location: ``$MONAI_FLOW_CACHE`` if set, else ``$XDG_CACHE_HOME/monai-flow`` (``~/.cache/monai-flow``);
entries live in its ``adapted/`` folder as ``<key>.pt`` (the weights, a ``state_dict``) plus
``<key>.json`` (what they were adapted to, when, how long it took). Both are written atomically and
the ``.json`` last: an interrupted adaptation leaves no entry. The cache keeps at most ``max_bytes``
(``$MONAI_FLOW_CACHE_MAX_BYTES``, default 2 GiB); the least recently used entries go first.
``monai-flow cache list`` and ``monai-flow cache clear`` inspect and empty it.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from monai_flow.atomic import write_atomically
from monai_flow.checkpoints import read_checkpoint, save_checkpoint

__all__ = ["AdaptationCache", "content_key", "default_cache_dir"]

DEFAULT_MAX_BYTES = 2 * 1024**3


def default_cache_dir() -> Path:
    """``$MONAI_FLOW_CACHE``, else ``$XDG_CACHE_HOME/monai-flow``, else ``~/.cache/monai-flow``."""
    if os.environ.get("MONAI_FLOW_CACHE"):
        return Path(os.environ["MONAI_FLOW_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "monai-flow"


def content_key(volume: torch.Tensor, settings: Mapping) -> str:
    """SHA-256 of the voxel values (as float32) and shape of ``volume`` and of the JSON of ``settings``."""
    digest = hashlib.sha256()
    array = np.ascontiguousarray(volume.detach().cpu().float().numpy())
    digest.update(str(array.shape).encode())
    digest.update(array.tobytes())
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return digest.hexdigest()


class AdaptationCache:
    """Adapted weights by key (see the module docstring).

    Args:
        folder: the cache folder (default :func:`default_cache_dir`); entries go to ``folder/adapted``.
        max_bytes: size cap of the entries; ``None`` reads ``$MONAI_FLOW_CACHE_MAX_BYTES`` (default 2 GiB).
    """

    def __init__(self, folder: str | os.PathLike | None = None, max_bytes: int | None = None) -> None:
        self.folder = (Path(folder).expanduser() if folder is not None else default_cache_dir()) / "adapted"
        if max_bytes is None:
            max_bytes = int(os.environ.get("MONAI_FLOW_CACHE_MAX_BYTES", DEFAULT_MAX_BYTES))
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}.")
        self.max_bytes = int(max_bytes)

    def _paths(self, key: str) -> tuple[Path, Path]:
        if not key or not all(c in "0123456789abcdef" for c in key):
            raise ValueError(f"cache keys are lowercase hex digests, got {key!r}.")
        return self.folder / f"{key}.pt", self.folder / f"{key}.json"

    def get(self, key: str) -> dict | None:
        """The cached ``state_dict`` for ``key``, or None (also for an incomplete or unreadable entry)."""
        weights, info = self._paths(key)
        if not (weights.is_file() and info.is_file()):
            return None
        try:
            state = read_checkpoint(weights)
        except ValueError:
            return None
        now = time.time()
        for path in (weights, info):
            os.utime(path, (now, now))  # least recently used goes first
        return state

    def put(self, key: str, state_dict: Mapping[str, torch.Tensor], info: Mapping) -> Path:
        """Store ``state_dict`` (atomically) with its description ``info``; then evict beyond the cap."""
        weights, meta = self._paths(key)
        self.folder.mkdir(parents=True, exist_ok=True)
        save_checkpoint({k: v.detach().cpu() for k, v in state_dict.items()}, weights)
        record = {"key": key, "created": time.strftime("%Y-%m-%d %H:%M:%S"), **dict(info)}
        write_atomically(meta, lambda tmp: Path(tmp).write_text(json.dumps(record, indent=1, default=str)))
        self.evict()
        return weights

    def entries(self) -> list[dict]:
        """Complete entries, most recently used first: their ``.json`` content plus ``bytes`` and ``path``."""
        found = []
        for info in self.folder.glob("*.json") if self.folder.is_dir() else []:
            weights = info.with_suffix(".pt")
            if not weights.is_file():
                continue
            try:
                record = json.loads(info.read_text())
            except (OSError, ValueError):
                record = {"key": info.stem}
            record.update(bytes=weights.stat().st_size + info.stat().st_size, path=str(weights),
                          used=max(weights.stat().st_mtime, info.stat().st_mtime))
            found.append(record)
        return sorted(found, key=lambda r: r["used"], reverse=True)

    def size(self) -> int:
        return sum(e["bytes"] for e in self.entries())

    def evict(self) -> list[str]:
        """Delete least recently used entries until the cache fits ``max_bytes`` (the most recent one is
        always kept); returns their keys."""
        removed, total = [], 0
        for i, entry in enumerate(self.entries()):
            total += entry["bytes"]
            if total > self.max_bytes and i > 0:
                self.remove(entry["key"])
                removed.append(entry["key"])
        return removed

    def remove(self, key: str) -> None:
        for path in self._paths(key):
            path.unlink(missing_ok=True)

    def clear(self) -> int:
        """Remove every entry (and stray temporary files); returns the number of entries removed."""
        keys = [e["key"] for e in self.entries()]
        for key in keys:
            self.remove(key)
        for stray in self.folder.glob(".*") if self.folder.is_dir() else []:
            stray.unlink(missing_ok=True)
        return len(keys)
