"""A one-minute tour of the degradation transforms on data shipped with our dependencies:
``python -m monai_flow.transforms_tour``.

Loads pydicom's real CT slice (``CT_small.dcm``, HU via rescale slope/intercept) and MR slice
(``MR_small.dcm``) with MONAI readers, degrades them at several levels with our transforms,
prints the measured noise against what the physics predicts, and writes the results as NIfTI
(original geometry kept) into ``--output-dir``. It never writes next to its inputs.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch
from monai.data import NibabelWriter
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged
from pydicom.data import get_testdata_file

from monai_flow.atomic import write_atomically
from monai_flow.transforms import LowDoseCTNoised, RicianMRNoised, estimate_ct_noise_std, estimate_rician_noise_std


def _load(name: str):
    loader = Compose([LoadImaged("image", reader="PydicomReader"), EnsureChannelFirstd("image")])
    return loader({"image": get_testdata_file(name)})


def _save(image, path: Path) -> None:
    writer = NibabelWriter()
    writer.set_data_array(image, channel_dim=0)
    writer.set_metadata(dict(image.meta), resample=False)
    write_atomically(path, lambda tmp: writer.write(tmp, verbose=False), suffix=".nii.gz")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", default="demo_output", help="folder for the degraded NIfTI files")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)

    ct = _load("CT_small.dcm")
    print("CT_small.dcm:", tuple(ct["image"].shape), "spacing", [round(float(s), 3) for s in ct["image"].pixdim])
    print("| dose fraction | added noise std in tissue (HU) | ratio to a=0.5 | theory sqrt(1/a-1) |")
    print("|---|---|---|---|")
    tissue = (ct["image"] > -300) & (ct["image"] < 300)
    reference = None
    for i, a in enumerate((0.5, 0.25, 0.1)):
        t = LowDoseCTNoised("image", dose_fraction=a, i0=1e5, input_noise="full_dose").set_random_state(args.seed + i)
        noisy = t(dict(ct))["image"]
        std = float((noisy - ct["image"])[tissue].std())
        reference = reference or std
        print(f"| {a} | {std:.1f} | {std / reference:.2f} | {math.sqrt(1 / a - 1):.2f} |")
        _save(noisy, out / f"ct_small_dose{a}.nii.gz")
    print(f"global noise level of the degraded a=0.1 slice: {float(estimate_ct_noise_std(noisy[None])[0]):.1f} HU\n")

    mr = _load("MR_small.dcm")
    print("MR_small.dcm:", tuple(mr["image"].shape))
    print("| std (% of max) | s (image units) | measured s = sqrt((E[M^2] - E[A^2]) / 2) |")
    print("|---|---|---|")
    peak = float(mr["image"].max())
    for pct in (1, 3, 5):
        noisy = RicianMRNoised("image", std=pct / 100, relative_to="max").set_random_state(args.seed)(dict(mr))["image"]
        measured = math.sqrt(float((noisy.square() - mr["image"].square()).mean()) / 2)
        print(f"| {pct} | {pct / 100 * peak:.1f} | {measured:.1f} |")
        _save(noisy, out / f"mr_small_std{pct}pct.nii.gz")
    # a synthetic head in air: the background estimator recovers the level
    head = torch.zeros(1, 1, 96, 96)
    yy, xx = torch.meshgrid(torch.arange(96) - 47.5, torch.arange(96) - 47.5, indexing="ij")
    head[..., (xx / 38) ** 2 + (yy / 44) ** 2 < 1] = 800.0
    noisy_head = RicianMRNoised("image", std=20.0, relative_to="absolute").set_random_state(args.seed)({"image": head[0]})["image"]
    print(f"phantom in air, s = 20: background (Rayleigh) estimate {float(estimate_rician_noise_std(noisy_head[None])[0]):.2f}")
    print(f"\nwrote degraded images to {out.resolve()}")


if __name__ == "__main__":
    main()
