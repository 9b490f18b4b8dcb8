"""Generation evaluation: images generated from held-out masks under every class, scored
against the masks and the real images."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import torch
from monai.metrics import compute_dice
from monai.networks.utils import one_hot
from tqdm import tqdm

from .metrics import intensity_classes, region_means
from .reports import write_csv, write_figure

__all__ = ["evaluate_generation"]


def _nanmean(values: Sequence[float]) -> float:
    v = torch.tensor([float(x) for x in values], dtype=torch.float64)
    v = v[~torch.isnan(v)]
    return float(v.mean()) if v.numel() else float("nan")


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
            real_means = region_means(real, labels_map, regions)
            real_dice = compute_dice(one_hot(intensity_classes(real, thresholds), len(names)), reference,
                                     include_background=False)
            noise = torch.randn((b, out_channels, *mask.shape[2:]), generator=generator).to(device)
            generated = {}
            for c in classes:
                gen = to_units(inferer(noise, network, class_labels=torch.full((b,), int(c), dtype=torch.long, device=device),
                                       mask=mask))
                generated[c] = gen
                gen_means = region_means(gen, labels_map, regions)
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

    write_csv(out_dir / "metrics.csv", rows + means)
    write_figure(out_dir / "generation_grid.png", figure, window,
                 f"conditioning masks, real images and generated images (classes {list(classes)})",
                 label_maps=("mask",), num_labels=lut.numel(), panel_size=2.4, dpi=80)
    return rows + means
