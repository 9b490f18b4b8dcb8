"""Running a bundle's configs in-process from a temporary copy (tests never write into the repo)."""

from __future__ import annotations

import logging
import shutil
from contextlib import contextmanager
from pathlib import Path

from monai.bundle import run

BUNDLES = Path(__file__).resolve().parent.parent / "bundles"


def run_bundle(root: Path, config: str | list[str], **override) -> None:
    """``monai.bundle.run`` on ``root/configs/<config>`` (a list merges overlays), bundle_root = root."""
    files = [str(root / "configs" / c) for c in ([config] if isinstance(config, str) else config)]
    run(config_file=files if len(files) > 1 else files[0], meta_file=str(root / "configs" / "metadata.json"),
        logging_file=False, bundle_root=str(root), **override)


@contextmanager
def stats_logged_to(caplog):
    """Capture the bundle's training/validation logs in ``caplog``, INFO and up.

    MONAI's ``StatsHandler`` logs to ``monai.handlers.StatsHandler``, a logger MONAI sets not to propagate,
    so pytest's root-level capture sees it only by chance of the logging state; attach to it directly.
    """
    logger = logging.getLogger("monai.handlers.StatsHandler")
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO):
            yield
    finally:
        logger.removeHandler(caplog.handler)


def copy_configs(tmp_root: Path, name: str) -> Path:
    """A bundle folder ``tmp_root/name`` holding a copy of ``bundles/<name>/configs``."""
    root = tmp_root / name
    shutil.copytree(BUNDLES / name / "configs", root / "configs")
    return root


def bundle_with_untrained_weights(tmp_root: Path, name: str, seed: int = 0) -> Path:
    """``copy_configs`` plus ``models/model.pt`` holding the freshly initialised ``network_def`` weights."""
    import torch
    from monai.bundle import ConfigParser

    folder = copy_configs(tmp_root, name)
    parser = ConfigParser()
    parser.read_config(str(folder / "configs" / "inference.json"))
    parser["bundle_root"] = str(folder)
    torch.manual_seed(seed)
    (folder / "models").mkdir()
    torch.save(parser.get_parsed_content("network_def").state_dict(), folder / "models" / "model.pt")
    return folder
