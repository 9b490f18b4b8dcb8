"""A bundle's configs as the command line uses them: locate, override, parse, load the weights.

The commands stay thin over ``bundles/<name>/configs/*.json``: they read the config with
``monai.bundle.ConfigParser``, set a few overrides (``ckpt_path``, ``device``, step counts,
``roi_size``) and take the parsed pieces (``network_def``, ``network``, ``preprocessing``,
``inferer``, ``postprocessing``) from it.
"""

from __future__ import annotations

import re
from pathlib import Path

from .errors import CLIError

__all__ = ["Bundle", "parse_device"]


def parse_device(text: str) -> str:
    """``cpu``, ``cuda`` or ``cuda:N``; CUDA must be available."""
    import torch

    if not re.fullmatch(r"cpu|cuda(:\d+)?", text):
        raise CLIError(f"--device must be cpu, cuda or cuda:N, got {text!r}.")
    if text.startswith("cuda"):
        if not torch.cuda.is_available():
            raise CLIError(f"--device {text}: CUDA is not available on this machine (torch {torch.__version__}); "
                           "use --device cpu.")
        index = int(text.split(":")[1]) if ":" in text else 0
        if index >= torch.cuda.device_count():
            raise CLIError(f"--device {text}: only {torch.cuda.device_count()} CUDA device(s) present.")
    return text


class Bundle:
    """The parsed config ``configs/<config>`` of bundle ``name`` (folder ``bundle_root`` or found)."""

    def __init__(self, name: str, bundle_root: str | None = None, config: str = "inference.json") -> None:
        from monai.bundle import ConfigParser

        self.name = name
        self.root = self._folder(name, bundle_root)
        self.config_file = self.root / "configs" / config
        if not self.config_file.is_file():
            raise CLIError(f"bundle folder {self.root} has no configs/{config}; pass --bundle-root "
                           f"/path/to/{name} (the folder that holds configs/).")
        self.parser = ConfigParser()
        try:
            self.parser.read_config(str(self.config_file))
        except Exception as e:
            raise CLIError(f"cannot read bundle config {self.config_file}: {e}") from e
        self.parser["bundle_root"] = str(self.root)

    @staticmethod
    def _folder(name: str, bundle_root: str | None) -> Path:
        if bundle_root:
            root = Path(bundle_root).expanduser().absolute()
            if not root.is_dir():
                raise CLIError(f"--bundle-root {bundle_root} is not a folder.")
            return root
        from monai_flow.bundle_support import bundle_root as find

        try:
            return Path(find(name)).absolute()
        except ValueError as e:
            raise CLIError(f"cannot find bundle {name}: pass --bundle-root /path/to/{name}.") from e

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
            raise CLIError(f"bundle {self.name} ({self.config_file}) has no '{key}' setting.")
        self.parser[key] = value

    def set_device(self, device: str) -> None:
        self.set("device", f"$torch.device('{device}')")

    def get(self, key: str):
        """Parsed (instantiated) content of ``key``; errors name the key and the config file."""
        try:
            return self.parser.get_parsed_content(key)
        except Exception as e:
            message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CLIError(f"bundle config {self.config_file}: cannot build '{key}': {message}") from e

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

    def checkpoint(self, path: str | None) -> Path:
        """``path``, or the bundle's ``models/model.pt``; a missing default says how to train it."""
        if path:
            return Path(path).expanduser().absolute()
        ckpt = self.default_checkpoint
        if not ckpt.exists():
            raise CLIError(f"bundle {self.name} has no trained model: {ckpt} does not exist. Train it first:\n"
                           f"    {self.train_command()}\nor pass --checkpoint PATH.")
        return ckpt

    def load_network(self, checkpoint: Path, device: str):
        """``network_def`` with the checked weights of ``checkpoint``, then ``network`` (on device), eval mode."""
        from monai_flow.checkpoints import CheckpointError, load_network_weights

        network_def = self.get("network_def")
        try:
            load_network_weights(network_def, checkpoint, map_location=device)
        except CheckpointError as e:
            raise CLIError(str(e)) from e
        network = self.get("network") if self.has("network") else network_def.to(device)
        return network.eval()
