"""Evaluation of denoisers / restorers on held-out volumes at simulated degradation levels."""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import torch
from monai.metrics import PSNRMetric, RMSEMetric, SSIMMetric, compute_dice
from monai.networks.utils import one_hot
from tqdm import tqdm

from monai_flow.atomic import write_atomically

__all__ = ["evaluate_generation", "evaluate_restoration", "image_scores", "intensity_classes"]


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


def _write_csv(path: Path, rows: Sequence[Mapping]) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)

    write_atomically(path, write)


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
    write_atomically(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
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

    _write_csv(out_dir / "metrics.csv", rows + means)
    if example is not None:
        panels, level = example
        _figure(out_dir / "example.png", panels, window, f"{level_name} = {level}")
    return rows + means


def intensity_classes(image: torch.Tensor, thresholds: Sequence[float]) -> torch.Tensor:
    """Label map of ``image`` by increasing ``thresholds``: 0 below the first, k between the
    k-th and (k+1)-th, ``len(thresholds)`` above the last (same shape, int64).

    E.g. CT in HU with ``(-950, -500, 200)``: 0 air, 1 lung-like, 2 soft tissue, 3 bone-like.
    """
    bounds = torch.as_tensor(list(thresholds), dtype=image.dtype, device=image.device)
    if bounds.ndim != 1 or bounds.numel() == 0 or not bool((bounds[1:] > bounds[:-1]).all()):
        raise ValueError(f"thresholds must be a non-empty strictly increasing sequence, got {thresholds}.")
    return torch.bucketize(image.contiguous(), bounds, right=True)


def _region_means(x: torch.Tensor, labels: torch.Tensor, regions: Mapping[str, Sequence[int]]) -> dict[str, torch.Tensor]:
    """Per-sample mean of ``x`` (B, 1, ...) inside each region (a set of mask labels); NaN if empty."""
    out = {}
    for name, ids in regions.items():
        sel = torch.isin(labels, torch.as_tensor(list(ids), device=labels.device)).flatten(1).float()
        n = sel.sum(1)
        out[name] = torch.where(n > 0, (x.flatten(1).float() * sel).sum(1) / n.clamp_min(1), torch.nan)
    return out


def _nanmean(values: Sequence[float]) -> float:
    v = torch.tensor([float(x) for x in values], dtype=torch.float64)
    v = v[~torch.isnan(v)]
    return float(v.mean()) if v.numel() else float("nan")


def _grid_figure(path: Path, rows: Sequence[Mapping[str, torch.Tensor]], window: Sequence[float], num_labels: int,
                 title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = list(rows[0])
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(2.4 * len(cols), 2.4 * len(rows) + 0.5), squeeze=False)
    for r, panels in enumerate(rows):
        for c, (name, img) in enumerate(panels.items()):
            ax = axes[r, c]
            if name == "mask":
                ax.imshow(img.T.cpu().numpy(), cmap="tab10", vmin=0, vmax=max(num_labels - 1, 9), origin="lower",
                          interpolation="nearest")
            else:
                ax.imshow(img.T.cpu().numpy(), cmap="gray", vmin=window[0], vmax=window[1], origin="lower")
            if r == 0:
                ax.set_title(name, fontsize=9)
            ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    write_atomically(path, lambda tmp: fig.savefig(tmp, dpi=80, format="png"))
    plt.close(fig)


def evaluate_generation(
    network: torch.nn.Module,
    inferer: Callable[..., torch.Tensor],
    data: Iterable[Mapping[str, torch.Tensor]],
    output_dir: str,
    regions: Mapping[str, Sequence[int]],
    thresholds: Sequence[float],
    label_to_class: Sequence[int],
    class_names: Sequence[str] | None = None,
    classes: Sequence[int] = (0, 1),
    to_output_units: Callable[[torch.Tensor], torch.Tensor] | None = None,
    window: Sequence[float] = (-1000.0, 1000.0),
    image_key: str = "image",
    mask_key: str = "mask",
    mask_labels_key: str = "mask_labels",
    label_key: str = "label",
    name_key: str = "name",
    out_channels: int = 1,
    device: str | torch.device = "cpu",
    seed: int = 0,
    num_figure_cases: int = 6,
) -> list[dict]:
    """Generate images for held-out masks under every class in ``classes`` and score them.

    For every batch of ``data`` (dicts with the conditioning ``mask`` (B, M, *spatial) in network
    form, the label map ``mask_labels`` (B, 1, *spatial), the real ``image`` (B, C, *spatial) in
    network units and the true class ``label`` (B,)): one noise draw per case (seeded) is integrated
    with ``inferer(noise, network, class_labels=c, mask=mask)`` for each class ``c`` (the same noise
    and mask, so classes are compared on equal terms). Generated and real images are mapped to
    output units by ``to_output_units`` (e.g. HU) and scored:

    - ``gen_<region>`` / ``real_<region>``: mean intensity inside each region (a set of mask labels,
      e.g. ``{"lung": [2, 4]}``); with classes "no lesion" / "lesion", the lung mean of generated
      class 1 against class 0 measures lesion presence.
    - ``dice_<class>`` / ``real_dice_<class>``: mask adherence, the Dice (``monai.metrics.compute_dice``)
      of the image classified by intensity (:func:`intensity_classes` with ``thresholds``) against
      the mask mapped to the same classes (``label_to_class[mask label]``), per intensity class
      except the first; the real image's Dice is the ceiling of this crude classifier.

    Writes ``metrics.csv`` (one row per case and generated class, then one ``mean`` row per class:
    generated statistics over all cases, ``real_*`` over the real images *of that class*) and
    ``generation_grid.png`` (mask, real image and one generated image per class for the first
    ``num_figure_cases`` cases; middle slice of the last axis for volumes) into ``output_dir``,
    atomically. Returns the rows.
    """
    out_dir = Path(output_dir)
    to_units = to_output_units if to_output_units is not None else (lambda x: x)
    names = list(class_names) if class_names is not None else [f"class{k}" for k in range(len(thresholds) + 1)]
    if len(names) != len(thresholds) + 1:
        raise ValueError(f"class_names needs len(thresholds) + 1 = {len(thresholds) + 1} entries, got {len(names)}.")
    lut = torch.as_tensor(list(label_to_class), dtype=torch.long)
    if lut.numel() == 0 or int(lut.min()) < 0 or int(lut.max()) > len(thresholds):
        raise ValueError(f"label_to_class entries must lie in [0, {len(thresholds)}], got {list(label_to_class)}.")
    generator = torch.Generator().manual_seed(seed)
    network = network.to(device).eval()
    rows: list[dict] = []
    figure: list[dict] = []
    with torch.no_grad():
        for batch in tqdm(list(data), desc="evaluate"):
            for key in (image_key, mask_key, mask_labels_key, label_key):
                if key not in batch:
                    raise ValueError(f"evaluate_generation: batch has no '{key}', got keys {sorted(map(str, batch))}.")
            mask = torch.as_tensor(batch[mask_key]).to(device).float()
            labels_map = torch.as_tensor(batch[mask_labels_key]).to(device).long()
            real = to_units(torch.as_tensor(batch[image_key]).to(device).float())
            true = torch.as_tensor(batch[label_key]).reshape(-1).long()
            b = mask.shape[0]
            case_names = batch.get(name_key, [None] * b)
            if int(labels_map.max()) >= lut.numel() or int(labels_map.min()) < 0:
                raise ValueError(f"mask labels must lie in [0, {lut.numel() - 1}] (label_to_class), "
                                 f"got [{int(labels_map.min())}, {int(labels_map.max())}].")
            reference = one_hot(lut.to(device)[labels_map], len(names))
            real_means = _region_means(real, labels_map, regions)
            real_dice = compute_dice(one_hot(intensity_classes(real, thresholds), len(names)), reference,
                                     include_background=False)
            noise = torch.randn((b, out_channels, *mask.shape[2:]), generator=generator).to(device)
            generated = {}
            for c in classes:
                gen = to_units(inferer(noise, network, class_labels=torch.full((b,), int(c), dtype=torch.long, device=device),
                                       mask=mask))
                generated[c] = gen
                gen_means = _region_means(gen, labels_map, regions)
                gen_dice = compute_dice(one_hot(intensity_classes(gen, thresholds), len(names)), reference,
                                        include_background=False)
                for i in range(b):
                    row = {"case": case_names[i] if case_names[i] is not None else len(rows) // len(classes),
                           "true_label": int(true[i]), "generated_label": int(c)}
                    row.update({f"gen_{r}": float(v[i]) for r, v in gen_means.items()})
                    row.update({f"real_{r}": float(v[i]) for r, v in real_means.items()})
                    row.update({f"dice_{n}": float(gen_dice[i, k]) for k, n in enumerate(names[1:])})
                    row.update({f"real_dice_{n}": float(real_dice[i, k]) for k, n in enumerate(names[1:])})
                    rows.append(row)
            for i in range(min(b, num_figure_cases - len(figure))):
                pick = (lambda v: v[i, 0, ..., v.shape[-1] // 2]) if mask.ndim == 5 else (lambda v: v[i, 0])
                panels = {"mask": pick(labels_map), f"real (label {int(true[i])})": pick(real)}
                panels.update({f"generated label {c}": pick(generated[c]) for c in classes})
                figure.append(panels)
    if not rows:
        raise ValueError("evaluate_generation: no data to evaluate.")
    keys = [k for k in rows[0] if k not in ("case", "true_label", "generated_label")]
    means = []
    for c in classes:
        gen_rows = [r for r in rows if r["generated_label"] == c]
        real_rows = [r for r in rows if r["true_label"] == c and r["generated_label"] == classes[0]]
        mean = {"case": "mean", "true_label": int(c), "generated_label": int(c)}
        for k in keys:
            mean[k] = _nanmean([r[k] for r in (real_rows if k.startswith("real_") else gen_rows)])
        means.append(mean)

    _write_csv(out_dir / "metrics.csv", rows + means)
    _grid_figure(out_dir / "generation_grid.png", figure, window, lut.numel(),
                 f"conditioning masks, real images and generated images (classes {list(classes)})")
    return rows + means
