"""Evaluation of denoisers / restorers on held-out volumes at simulated degradation levels."""

from __future__ import annotations

import csv
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import torch
from monai.metrics import PSNRMetric, RMSEMetric, SSIMMetric
from tqdm import tqdm

__all__ = ["evaluate_restoration", "image_scores"]


def _axial_slices(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W, D) -> (B * D, C, H, W); 2D batches unchanged."""
    return x.permute(0, 4, 1, 2, 3).reshape(-1, *x.shape[1:4]) if x.ndim == 5 else x


def image_scores(output: torch.Tensor, reference: torch.Tensor, window: Sequence[float]) -> dict[str, float]:
    """PSNR (dB), SSIM and RMSE of ``output`` against ``reference`` (B, C, *spatial) in ``window``.

    Both are clipped to ``window = (low, high)`` (e.g. a HU window in data units) whose width is
    the data range. SSIM is the 2D SSIM averaged over axial slices (the last axis for volumes).
    """
    low, high = float(window[0]), float(window[1])
    out, ref = output.float().clamp(low, high), reference.float().clamp(low, high)
    data_range = high - low
    psnr = PSNRMetric(max_val=data_range)(out, ref).mean().item()
    rmse = RMSEMetric()(out, ref).mean().item()
    ssim = SSIMMetric(spatial_dims=2, data_range=data_range)(_axial_slices(out), _axial_slices(ref)).mean().item()
    return {"psnr": psnr, "ssim": ssim, "rmse": rmse}


def _write_atomically(path: Path, write: Callable[[str], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _figure(path: Path, panels: Mapping[str, torch.Tensor], window: Sequence[float], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4.3))
    for ax, (name, img) in zip(axes, panels.items()):
        ax.imshow(img.T.cpu().numpy(), cmap="gray", vmin=window[0], vmax=window[1], origin="lower")
        ax.set_title(name)
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    _write_atomically(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)


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
) -> list[dict]:
    """Degrade held-out volumes at each level, restore them, and score input and output.

    For every batch of ``data`` (dicts of (B, C, *spatial) tensors in network units) and every
    level: ``source = batch[reference_key]`` if present (a clean reference) else
    ``batch[image_key]``; ``noisy = degradation(source, level)``; ``output = inferer(noisy,
    network)``; PSNR / SSIM / RMSE of the noisy input and of the output against the source
    (:func:`image_scores`). Writes ``metrics.csv`` (one row per case and level, plus the means)
    and ``example.png`` (input / output / reference, middle axial slice of the first case at the
    middle level) into ``output_dir``, atomically. Returns the rows.
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
                noisy = degradation(source, torch.full((source.shape[0],), float(level), device=device), generator=generator)
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

    def write_csv(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows + means)

    _write_atomically(out_dir / "metrics.csv", write_csv)
    if example is not None:
        panels, level = example
        _figure(out_dir / "example.png", panels, window, f"{level_name} = {level}")
    return rows + means
