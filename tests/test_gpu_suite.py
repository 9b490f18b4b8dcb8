"""``benchmarks/gpu_suite.py --quick`` runs on the CPU and writes every section (issue 15), so that the
one-command GPU measurement does not rot while no GPU is at hand."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _suite():
    spec = importlib.util.spec_from_file_location("gpu_suite", REPO / "benchmarks" / "gpu_suite.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_cpu_run_writes_every_section(tmp_path, single_thread):
    out = tmp_path / "benchmarks_gpu.md"
    assert _suite().main(["--quick", "--device", "cpu", "--out", str(out)]) == 0
    text = out.read_text()
    assert "device: **CPU" in text and "mode: quick" in text
    for section in ("1. Training", "2. ct_denoise", "3. 3D sliding", "4. CT projection", "5. Sampling"):
        assert f"## {section}" in text, section
    assert "failed" not in text and "skipped" not in text, text
    records = json.loads(out.with_suffix(".json").read_text())["records"]
    assert {r["bundle"] for r in records if r["section"] == "training"} == {
        "ct_denoise", "mr_denoise", "ct_restore", "motfm_generation"}
    assert {r["method"] for r in records if r["section"] == "sliding"} == {"monai_one_pass", "per_step", "per_window"}
    assert {(r["steps"], r["amp"]) for r in records if r["section"] == "ct_slices"} == {
        (1, "fp32"), (3, "fp32"), (1, "bf16"), (3, "bf16")}
    assert len([r for r in records if r["section"] == "sampling"]) == 5
    assert all(v > 0 for r in records for k, v in r.items() if k in ("it_per_s", "seconds", "ms", "ms_per_slice"))


def test_a_failing_section_is_reported_and_the_others_run(tmp_path, monkeypatch, single_thread):
    suite = _suite()

    def broken(s, lines):
        raise RuntimeError("no such device feature")

    monkeypatch.setattr(suite, "section_ct_noise", broken)
    out = tmp_path / "b.md"
    assert suite.main(["--quick", "--device", "cpu", "--out", str(out), "--only", "4", "2"]) == 0
    text = out.read_text()
    assert "**failed**: RuntimeError: no such device feature" in text and "| 3 | bf16 |" in text


def test_documented_gpu_page_names_the_command_and_says_when_unmeasured():
    text = (REPO / "docs" / "benchmarks_gpu.md").read_text()
    assert "python benchmarks/gpu_suite.py" in text
    assert "device:" in text or "not yet measured on a GPU" in text
