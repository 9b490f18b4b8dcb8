"""A bundle's config as code uses it: locate, read, override, build parts, load the weights.

Used by the ``monai-flow`` command line and by :mod:`monai_flow.export`, so that both read a
bundle the same way: ``Bundle("ct_denoise")`` parses ``bundles/ct_denoise/configs/inference.json``
with ``monai.bundle.ConfigParser``; overrides (``set``) must name keys the config has.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

__all__ = ["Bundle", "BundleError"]


class BundleError(ValueError):
    """A bundle cannot be found, read, or does not have what is asked of it."""


class Bundle:
    """The parsed config ``configs/<config>`` of bundle ``name``.

    Args:
        name: bundle name (``ct_denoise``, ...) or, with ``bundle_root=None``, a bundle folder.
        bundle_root: the folder holding ``configs/``; default: found by
            :func:`~monai_flow.bundle.bundle_root` (this repository's ``bundles/<name>``).
        config: a config file name in ``configs/``, or several to merge in order (overlays).
    """

    def __init__(self, name: str, bundle_root: str | None = None, config: str | Sequence[str] = "inference.json") -> None:
        from monai.bundle import ConfigParser

        if bundle_root is None and Path(name).is_dir() and (Path(name) / "configs").is_dir():
            bundle_root, name = name, Path(name).resolve().name
        self.name = name
        self.root = self._folder(name, bundle_root)
        names = [config] if isinstance(config, str) else list(config)
        self.config_files = [self.root / "configs" / c for c in names]
        missing = [str(f) for f in self.config_files if not f.is_file()]
        if missing:
            raise BundleError(f"bundle folder {self.root} has no {', '.join(missing)}; give the folder that holds "
                              f"configs/ (--bundle-root /path/to/{name}).")
        self.config_file = self.config_files[-1]
        self.parser = ConfigParser()
        try:
            self.parser.read_config([str(f) for f in self.config_files])
        except Exception as e:
            raise BundleError(f"cannot read bundle config {self.config_file}: {e}") from e
        self.parser["bundle_root"] = str(self.root)

    @staticmethod
    def _folder(name: str, bundle_root: str | None) -> Path:
        if bundle_root:
            root = Path(bundle_root).expanduser().absolute()
            if not root.is_dir():
                raise BundleError(f"bundle folder {bundle_root} is not a folder.")
            return root
        from .paths import bundle_root as find

        try:
            return Path(find(name)).absolute()
        except ValueError as e:
            raise BundleError(f"cannot find bundle {name}: give its folder (--bundle-root /path/to/{name}).") from e

    # ------------------------------------------------------------------------------ overrides
    def has(self, key: str) -> bool:
        try:
            self.parser[key]
        except (KeyError, ValueError, IndexError, TypeError):
            return False
        return True

    def set(self, key: str, value) -> None:
        """Override ``key`` (it must exist in the config)."""
        if not self.has(key):
            raise BundleError(f"bundle {self.name} ({self.config_file}) has no '{key}' setting.")
        self.parser[key] = value

    def set_device(self, device: str) -> None:
        self.set("device", f"$torch.device('{device}')")

    def get(self, key: str):
        """Parsed (instantiated) content of ``key``; errors name the key and the config file."""
        try:
            return self.parser.get_parsed_content(key)
        except Exception as e:
            message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise BundleError(f"bundle config {self.config_file}: cannot build '{key}': {message}") from e

    def find_transform(self, key: str, target_suffix: str) -> str | None:
        """Config id (``key#transforms#i``) of the first transform in ``key`` whose ``_target_``
        ends with ``target_suffix``, or None."""
        try:
            transforms = self.parser[key]["transforms"]
        except (KeyError, TypeError):
            return None
        if not isinstance(transforms, list):
            return None
        for i, t in enumerate(transforms):
            if isinstance(t, dict) and str(t.get("_target_", "")).endswith(target_suffix):
                return f"{key}#transforms#{i}"
        return None

    def setting(self, item_id: str | None, name: str, default=None):
        """Parsed value of ``item_id#name`` (e.g. a transform's argument), or ``default``."""
        if item_id is None or not self.has(f"{item_id}#{name}"):
            return default
        return self.get(f"{item_id}#{name}")

    # -------------------------------------------------------------------------------- weights
    @property
    def default_checkpoint(self) -> Path:
        return self.root / "models" / "model.pt"

    def train_command(self) -> str:
        return f"python -m monai.bundle run --config_file {self.root / 'configs' / 'train.json'}"

    def checkpoint(self, path: str | None = None) -> Path:
        """``path``, or the bundle's ``models/model.pt``; a missing default says how to train it."""
        if path:
            return Path(path).expanduser().absolute()
        ckpt = self.default_checkpoint
        if not ckpt.exists():
            raise BundleError(f"bundle {self.name} has no trained model: {ckpt} does not exist. Train it first:\n"
                              f"    {self.train_command()}\nor pass --checkpoint PATH.")
        return ckpt

    def load_network(self, checkpoint: Path, device: str):
        """``network_def`` with the checked weights of ``checkpoint`` (:func:`~monai_flow.checkpoints.load_network_weights`,
        a :class:`~monai_flow.checkpoints.CheckpointError` names what is wrong), then ``network`` on ``device``, in
        eval mode."""
        from monai_flow.checkpoints import load_network_weights

        network_def = self.get("network_def")
        load_network_weights(network_def, checkpoint, map_location=device)
        network = self.get("network") if self.has("network") else network_def.to(device)
        return network.eval()
