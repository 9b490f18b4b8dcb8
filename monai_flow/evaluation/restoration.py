"""Restoration evaluation: held-out volumes degraded at several levels, restored and scored."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from monai_flow.flows.base import degradation_kwargs

from .metrics import image_scores
from .reports import write_csv, write_figure

__all__ = ["evaluate_restoration"]


def evaluate_restoration(
    network: torch.nn.Module,
    inferer: Callable[[torch.Tensor, torch.nn.Module], torch.Tensor],
    data: Iterable[Mapping[str, torch.Tensor]],
    degradation: Callable[..., torch.Tensor],
    levels: Sequence[float],
    output_dir: str,
    window: Sequence[float] = (-1.0, 1.0),
    image_key: str = "image",
    reference_key: str = "reference",
    device: str | torch.device = "cpu",
    seed: int = 0,
    level_name: str = "level",
    degradation_keys: Mapping[str, str] | None = None,
) -> list[dict]:
    """Degrade held-out volumes at each level, restore them, and score input and output.

    For every batch of ``data`` (dicts of (B, C, *spatial) tensors in network units) and every
    level: ``source = batch[reference_key]`` if present (a clean reference) else
    ``batch[image_key]``; ``noisy = degradation(source, level)``; ``output = inferer(noisy,
    network)``; PSNR / SSIM / RMSE of the noisy input and of the output against the source
    (:func:`.image_scores`). Writes ``metrics.csv`` (one row per case and level, plus the means)
    and ``example.png`` (input / output / reference, middle axial slice of the first case at the
    middle level) into ``output_dir``, atomically. Returns the rows. ``degradation_keys`` maps
    operator arguments to batch keys of per-sample values (e.g. ``{"spacing": "spacing"}``).
    """
    out_dir = Path(output_dir)
    generator = torch.Generator(device=torch.device(device)).manual_seed(seed)
    network = network.to(device).eval()
    rows: list[dict] = []
    example = None
    with torch.no_grad():
        for case, batch in enumerate(tqdm(list(data), desc="evaluate")):
            source = batch.get(reference_key, batch[image_key])
            source = torch.as_tensor(source).to(device).float()
            for i, level in enumerate(levels):
                noisy = degradation(source, torch.full((source.shape[0],), float(level), device=device), generator=generator,
                                    **degradation_kwargs(batch, degradation_keys, source))
                output = inferer(noisy, network)
                row = {"case": case, level_name: level}
                row.update({f"input_{k}": v for k, v in image_scores(noisy, source, window).items()})
                row.update({f"output_{k}": v for k, v in image_scores(output, source, window).items()})
                rows.append(row)
                if case == 0 and i == len(levels) // 2:
                    pick = (lambda v: v[0, 0, ..., v.shape[-1] // 2]) if source.ndim == 5 else (lambda v: v[0, 0])
                    example = {"input": pick(noisy), "output": pick(output), "reference": pick(source)}, level
    if not rows:
        raise ValueError("evaluate_restoration: no data to evaluate.")
    keys = [k for k in rows[0] if k not in ("case", level_name)]
    means = []
    for level in levels:
        sel = [r for r in rows if r[level_name] == level]
        means.append({"case": "mean", level_name: level, **{k: sum(r[k] for r in sel) / len(sel) for k in keys}})

    write_csv(out_dir / "metrics.csv", rows + means)
    if example is not None:
        panels, level = example
        write_figure(out_dir / "example.png", panels, window, f"{level_name} = {level}")
    return rows + means
