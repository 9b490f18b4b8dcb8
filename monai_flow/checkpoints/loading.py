"""Load network weights safely, with errors that say what is wrong with a checkpoint.

``load_network_weights(network, path)`` reads ``path`` with ``torch.load(..., weights_only=True)``
only (no arbitrary pickled objects, so an untrusted file cannot run code) and loads it strictly.
It accepts a plain ``state_dict`` (what the bundles' ``models/model.pt`` holds) or a training
checkpoint dict holding the weights under ``"model"``, ``"network"`` or ``"state_dict"`` (or
``key``). Every failure raises :class:`CheckpointError` naming the file and the problem: missing
file, corrupt or truncated file, content refused by ``weights_only``, or weights that do not fit
the network (missing / unexpected keys, shape mismatches).
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn as nn

from .unwrap import unwrap_network

__all__ = ["CheckpointError", "load_network_weights", "read_checkpoint"]

WEIGHT_KEYS = ("model", "network", "state_dict")
_MAX_LISTED = 5


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable, unsafe or does not fit the network."""


def read_checkpoint(path: str | os.PathLike, map_location="cpu", mmap: bool = False) -> object:
    """``torch.load(path, weights_only=True)`` with a :class:`CheckpointError` naming the file and the
    problem (corrupt or truncated file, or content other than tensors and plain containers)."""
    path = Path(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        message = str(e)
        detail = message.split("WeightsUnpickler error:", 1)[-1].strip()
        reason = detail.splitlines()[0] if detail else "unpickling failed"
        if "Unsupported global" in message or "allowed global" in message:
            raise CheckpointError(
                f"refused to load checkpoint {path}: it holds Python objects other than tensors and plain "
                f"containers ({reason}). Loading is restricted to weights (torch.load(weights_only=True)) "
                "because a pickled object can run code; save the network's state_dict instead."
            ) from e
        raise CheckpointError(f"corrupt or truncated checkpoint {path}: {reason or message}") from e
    except (RuntimeError, EOFError, KeyError, zipfile.BadZipFile, OSError, ValueError, AttributeError,
            IndexError, TypeError) as e:
        reason = str(e).splitlines()[0] if str(e) else f"{type(e).__name__} (file ended early?)"
        if isinstance(e, KeyError):
            reason = f"unexpected data ({type(e).__name__}: {e})"
        raise CheckpointError(f"corrupt or truncated checkpoint {path}: {reason}") from e


def _state_dict(obj: object, path: Path, key: str | None) -> Mapping[str, torch.Tensor]:
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"checkpoint {path} holds a {type(obj).__name__}, expected a state_dict or a dict with the "
            f"weights under one of {WEIGHT_KEYS}."
        )
    if key is not None:
        if key not in obj:
            raise CheckpointError(f"checkpoint {path} has no key '{key}'; its keys are {sorted(map(str, obj))[:10]}.")
        state = obj[key]
    elif obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state = obj
    else:
        found = [k for k in WEIGHT_KEYS if isinstance(obj.get(k), Mapping)]
        if not found:
            raise CheckpointError(
                f"checkpoint {path} is neither a state_dict nor a dict with the weights under one of "
                f"{WEIGHT_KEYS}; its keys are {sorted(map(str, obj))[:10]}."
            )
        state = obj[found[0]]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"checkpoint {path}: the weights must map parameter names to tensors.")
    return state


def _strip_prefix(state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]) -> dict:
    """Drop a ``module.`` (DDP) or ``network.`` (saved from a SliceWise) prefix the target lacks."""
    state = dict(state)
    for prefix in ("module.", "network."):
        if state and all(k.startswith(prefix) for k in state) and not any(k.startswith(prefix) for k in expected):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def _listed(names: list[str]) -> str:
    more = f", ... ({len(names) - _MAX_LISTED} more)" if len(names) > _MAX_LISTED else ""
    return ", ".join(names[:_MAX_LISTED]) + more


def _check_fit(state: Mapping[str, torch.Tensor], target: nn.Module, path: Path) -> None:
    expected = target.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs network {tuple(v.shape)}"
              for k, v in expected.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if not (missing or unexpected or shapes):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s): {_listed(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s): {_listed(unexpected)}")
    if shapes:
        parts.append(f"{len(shapes)} shape mismatch(es): {_listed(shapes)}")
    raise CheckpointError(
        f"checkpoint {path} does not fit the network {type(target).__name__}: " + "; ".join(parts)
        + ". The checkpoint was trained with a different network configuration: use the configs "
        "(network_def) it was trained with, or the checkpoint that belongs to this network."
    )


def load_network_weights(network: nn.Module, path: str | os.PathLike, map_location="cpu",
                         key: str | None = None) -> None:
    """Load the weights in ``path`` into ``network`` (strict), or raise :class:`CheckpointError`.

    Args:
        network: the module to load into; ``SliceWise`` and ``DataParallel`` wrappers load into
            the wrapped network (:func:`~monai_flow.checkpoints.unwrap_network`).
        path: a ``.pt`` file written by ``torch.save``: a ``state_dict``, or a dict holding it
            under ``key`` or, without ``key``, under ``"model"``, ``"network"`` or ``"state_dict"``.
            A ``module.`` (DDP) or ``network.`` (a saved ``SliceWise``) prefix is removed.
        map_location: passed to ``torch.load`` (e.g. the network's device).
        key: the entry of a checkpoint dict that holds the weights.

    Raises:
        CheckpointError: the file is missing, corrupt or truncated, holds objects that
            ``weights_only`` refuses, or its weights do not fit the network (the missing and
            unexpected keys and the first shape mismatches are named).
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist.")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} is not a file (expected a .pt file written by torch.save).")
    target = unwrap_network(network)
    state = _strip_prefix(_state_dict(read_checkpoint(path, map_location), path, key), target.state_dict())
    _check_fit(state, target, path)
    target.load_state_dict(state, strict=True)
