"""``monai-flow demo``: train ct_denoise on its demo data, denoise the held-out volumes, plot.

Everything goes into one folder (default ``monai_flow_demo``): ``data/`` (synthesized demo CT:
noisy phantoms as DICOM series and NIfTI, noise-free references apart), ``models/`` (the
bundle's training output), ``logs/`` (TensorBoard), ``denoised/`` and ``comparison.png`` (noisy /
denoised / noise-free reference, middle slice). Training is the bundle's own
``python -m monai.bundle run --config_file .../train.json`` with overrides; rerunning the demo in
the same folder resumes from its checkpoint.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

from monai_flow.bundle import Bundle

from .arguments import parse_device, positive_int
from .pipeline import Denoiser, denoise_items
from .errors import EXIT_OK, CLIError
from .inputs import load_volume
from .safe_io import OutputFolder, Staged

__all__ = ["add_parser", "run"]

MARKER = ".monai_flow_cli_demo.json"
QUICK_EPOCHS = 20
WINDOW = (-160.0, 240.0)  # soft-tissue display window (HU)

DESCRIPTION = """\
Train the ct_denoise bundle (RelativeFlow, learned from noisy CT only) on its synthetic demo
data, denoise the two held-out volumes and write comparison.png (noisy / denoised / noise-free
reference of a middle slice, with PSNR) into the output folder.

The default training is the bundle's (150 epochs on 512 x 512 phantoms, about 13 minutes on one CPU
core); --quick trains 20 epochs (a visibly weaker model), --image-size 256 makes 4x smaller phantoms. The folder holds data/, models/,
logs/ (TensorBoard), denoised/ and comparison.png. Running the demo again in the same folder
resumes training from its checkpoint (more --epochs continue it); a non-empty folder that is not
a demo folder is refused."""

EPILOG = """\
examples:
  monai-flow demo                              # bundle defaults, ./monai_flow_demo
  monai-flow demo --quick --output /tmp/demo
  monai-flow demo --epochs 300 --device cuda"""


def add_parser(subparsers, parents) -> None:
    p = subparsers.add_parser("demo", parents=parents, help="train ct_denoise on demo data, denoise, plot a comparison",
                              description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", default="monai_flow_demo", metavar="DIR", help="demo folder (default ./monai_flow_demo)")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=positive_int, metavar="N", help="training epochs (default: the bundle's, 150)")
    length.add_argument("--quick", action="store_true", help=f"train {QUICK_EPOCHS} epochs only")
    p.add_argument("--image-size", type=positive_int, metavar="N",
                   help="in-plane size of the synthetic CT volumes (default 512, about 0.74 mm pixels; smaller is quicker)")
    p.add_argument("--num-images", type=positive_int, metavar="N",
                   help="demo volumes to synthesize (default 8: 6 training, 2 held out; at least 3)")
    p.add_argument("--device", metavar="DEV", help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument("--bundle-root", metavar="PATH", help="ct_denoise bundle folder (default: this repository's)")
    p.set_defaults(func=run)


def _prepare_folder(path: str) -> OutputFolder:
    folder = OutputFolder(path)
    p = folder.path
    if p.is_dir() and any(p.iterdir()) and not (p / MARKER).is_file():
        raise CLIError(f"demo folder {p} exists, is not empty and is not a monai-flow demo folder (no {MARKER}); "
                       "choose a new or empty folder with --output.")
    folder.prepare()
    if not (p / MARKER).exists():
        with Staged() as staged:
            tmp = staged.file(p / MARKER, ".json")
            tmp.write_text(json.dumps({"kind": "monai-flow demo", "bundle": "ct_denoise"}))
            staged.commit()
    return folder


def _train(bundle: Bundle, data_dir: Path, folder: Path, epochs: int | None, device: str | None) -> None:
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(bundle.root / "configs" / "train.json"),
           "--bundle_root", str(bundle.root), "--dataset_dir", str(data_dir), "--ckpt_dir", str(folder / "models"),
           "--output_dir", str(folder / "logs")]
    if epochs is not None:
        cmd += ["--max_epochs", str(epochs)]
    if device is not None:
        cmd += ["--device", f"$torch.device('{device}')"]
    print("training: " + " ".join(cmd), flush=True)
    result = subprocess.run(cmd, env=os.environ.copy())
    if result.returncode != 0:
        raise CLIError(f"training failed (exit status {result.returncode}); the command was:\n    {' '.join(cmd)}",
                       code=1)


def _psnr(x, ref) -> float:
    import torch

    x, ref = (torch.as_tensor(a).float().clamp(-1000, 1000) for a in (x, ref))
    mse = float(((x - ref) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(2000.0**2 / mse)


def _figure(noisy, denoised, reference, name: str, path: Path) -> None:
    """noisy / denoised / reference middle slices (soft-tissue window) with PSNR over [-1000, 1000] HU."""
    from monai_flow.evaluation import write_figure

    z = noisy.shape[-1] // 2
    panels = {}
    for title, vol in (("noisy", noisy), ("denoised", denoised), ("noise-free reference", reference)):
        psnr = "" if vol is reference else f"\nPSNR {_psnr(vol, reference):.2f} dB"
        panels[f"{title}{psnr}"] = vol[0, :, :, z]
    write_figure(path, panels, WINDOW,
                 f"monai-flow ct_denoise demo: {name}, slice {z} (window {WINDOW[0]:g}..{WINDOW[1]:g} HU)")


def run(args: argparse.Namespace) -> int:
    from monai.transforms import LoadImage

    from monai_flow.data import prepare_demo_data

    device = parse_device(args.device) if args.device else None
    bundle = Bundle("ct_denoise", args.bundle_root, config="train.json")
    folder = _prepare_folder(args.output)
    out = folder.path
    try:
        demo = prepare_demo_data("ct_denoise", str(out / "data"), num_images=args.num_images,
                                 image_size=getattr(args, "image_size", None))
    except (ValueError, FileExistsError) as e:
        raise CLIError(str(e)) from e
    _train(bundle, out / "data", out, QUICK_EPOCHS if args.quick else args.epochs, device)
    inference = Bundle("ct_denoise", str(bundle.root))
    denoiser = Denoiser(inference, inference.checkpoint(str(out / "models" / "model.pt")), device)
    denoised = OutputFolder(out / "denoised")
    denoised.prepare()
    items = demo["testing"]
    written, failed = denoise_items(denoiser, items, denoised, dicom=False, overwrite=True)
    if failed:
        raise CLIError(f"denoising the demo volumes failed: {failed[0][1]}", code=1)
    load = LoadImage(image_only=True, ensure_channel_first=True)
    item = items[0]
    noisy, result, reference = load_volume(item), load(str(written[0])), load(item["reference"])
    _figure(noisy, result, reference, item["name"], out / "comparison.png")
    for path in written:
        print(f"wrote {path}")
    print(f"wrote {out / 'comparison.png'}: PSNR noisy {_psnr(noisy, reference):.2f} dB, "
          f"denoised {_psnr(result, reference):.2f} dB against the noise-free reference")
    return EXIT_OK
