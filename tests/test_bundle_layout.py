"""Every bundle has the files MONAI expects and complete metadata."""

import json

import pytest
from bundle_helpers import BUNDLES

REQUIRED = ("metadata.json", "train.json", "inference.json", "evaluate.json", "multi_gpu_train.json", "logging.conf")


@pytest.mark.parametrize("name", ["ct_denoise", "mr_denoise", "ct_restore", "motfm_generation"])
def test_bundle_files_and_metadata(name):
    root = BUNDLES / name
    for file in REQUIRED:
        assert (root / "configs" / file).is_file(), f"{name}: configs/{file}"
    assert (root / "docs" / "README.md").is_file() and (root / "LICENSE").is_file()
    meta = json.loads((root / "configs" / "metadata.json").read_text())
    for key in ("version", "changelog", "monai_version", "pytorch_version", "task", "description", "authors",
                "network_data_format", "intended_use", "limitations"):
        assert meta.get(key), f"{name}: metadata.json lacks {key}"
    assert meta["version"] in meta["changelog"]
    fmt = meta["network_data_format"]
    assert fmt["inputs"] and fmt["outputs"]
    if name == "ct_restore":
        assert (root / "configs" / "train_flowmap.json").is_file() and (root / "configs" / "inference_flowmap.json").is_file()
    for config in root.glob("configs/*.json"):
        json.loads(config.read_text())  # valid JSON
