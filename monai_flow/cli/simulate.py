"""``monai-flow simulate``: degrade one volume with low-dose CT or Rician MR noise.

Uses :class:`monai_flow.transforms.LowDoseCTNoise` (projection-domain Poisson-Gaussian noise at a
dose fraction) and :class:`monai_flow.transforms.RicianMRNoise` (Rician / noncentral-chi noise of
an explicit std) with a seed, so the same command gives a bit-identical result.
"""

from __future__ import annotations

import argparse
import math
import secrets
from pathlib import Path

from .arguments import positive_float
from .errors import EXIT_OK, CLIError, InputError
from .inputs import check_modality, check_volume, input_paths, load_volume, single_volume
from .safe_io import OutputFolder, Staged, refuse_existing, refuse_inputs

__all__ = ["add_parser", "parse_dose", "parse_std", "run"]

DESCRIPTION = """\
Simulate a noisier acquisition of one volume: low-dose CT (ct) or Rician MR noise (mr).

INPUT is one NIfTI file or one DICOM series folder (a folder holding several series is refused:
pick one). OUTPUT is the NIfTI file to write (.nii or .nii.gz), or with --dicom-out the folder of
a derived DICOM series (patient / study copied from a DICOM input).

ct: --dose A simulates a scan at A times the input's dose (0 < A <= 1); --target-mas M simulates an
exposure of M mAs, A = M / the input's exposure (from the DICOM header: Exposure, else
XRayTubeCurrent x ExposureTime, else ExposureInuAs; --input-mas gives it when the header has none).
Poisson-Gaussian noise in the sinogram (--geometry parallel or fan, --bowtie, --modulation),
filtered back-projected and added to the image (HU in and out; pixel spacing from the header). The
input is taken to be a real full-dose scan (only the extra noise of the lower dose is added);
--input-noise none treats it as noise-free. With --reference-mas R, --i0 is the photon count at R
mAs and the input's exposure sets its photons (i0 x mAs / R).

mr: --std S adds Rician noise (noncentral chi with --num-coils L > 1) of std S per real/imaginary
part: '3%' is 3% of the volume's maximum (or of its --percentile with --relative-to percentile),
a plain number is in the image's own units.

--seed makes the result bit-identical from run to run; without it a random seed is drawn and
printed."""

EPILOG = """\
examples:
  monai-flow simulate ct full_dose.nii.gz quarter_dose.nii.gz --dose 0.25 --seed 0
  monai-flow simulate ct /data/ct_series/ /data/ct_series_10pct --dose 0.1 --dicom-out
  monai-flow simulate ct /data/ct_series/ low.nii.gz --target-mas 50 --geometry fan --bowtie cylinder
  monai-flow simulate mr brain.nii.gz brain_noisy.nii.gz --std 3% --num-coils 8
  monai-flow simulate mr brain.nii.gz brain_noisy.nii.gz --std 12.5 --seed 7"""


def parse_dose(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a dose fraction in (0, 1], got {text!r}") from None
    if not math.isfinite(value) or not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"the dose fraction must lie in (0, 1] (1 = the input's dose), got {text}")
    return value


def parse_std(text: str) -> tuple[float, bool]:
    """``'3%'`` -> (0.03, True) (relative), ``'12.5'`` -> (12.5, False) (absolute)."""
    relative = text.strip().endswith("%")
    number = text.strip()[:-1] if relative else text
    try:
        value = float(number)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a noise std such as 3% or 12.5, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"the noise std must be finite and >= 0, got {text}")
    return (value / 100.0, True) if relative else (value, False)


def add_parser(subparsers, parents) -> None:
    p = subparsers.add_parser("simulate", parents=parents, help="add low-dose CT or MR noise to a volume",
                              description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("modality", choices=("ct", "mr"), help="ct: lower dose; mr: Rician noise")
    p.add_argument("input", metavar="INPUT", help="one NIfTI file or one DICOM series folder")
    p.add_argument("output", metavar="OUTPUT", help="output .nii/.nii.gz file (a folder with --dicom-out)")
    level = p.add_mutually_exclusive_group(required=True)
    level.add_argument("--dose", type=parse_dose, metavar="A", help="ct: dose fraction in (0, 1], e.g. 0.25")
    level.add_argument("--std", type=parse_std, metavar="S",
                       help="mr: noise std, '3%%' of the max or an absolute value")
    level.add_argument("--target-mas", type=positive_float, metavar="M",
                       help="ct: simulate an exposure of M mAs (dose fraction M / the input's exposure)")
    p.add_argument("--seed", type=int, help="noise seed (same seed, same output); default: random, printed")
    p.add_argument("--i0", type=positive_float, default=1e5,
                   help="ct: full-dose photons per detector bin and view (default 1e5)")
    p.add_argument("--electronic-std", type=float, default=5.0, help="ct: electronic noise std in counts (default 5)")
    p.add_argument("--input-noise", choices=("full_dose", "none"), default="full_dose",
                   help="ct: the input is a real full-dose scan (default) or noise-free")
    p.add_argument("--domain", choices=("projection", "image"), default="projection",
                   help="ct: sinogram simulation (default) or the fast image-domain approximation")
    p.add_argument("--input-mas", type=positive_float, metavar="M",
                   help="ct: the input's exposure in mAs, when its header has none (overrides the header)")
    p.add_argument("--reference-mas", type=positive_float, metavar="R",
                   help="ct: the exposure (mAs) at which the scan has --i0 photons; the input's exposure then sets them")
    p.add_argument("--geometry", choices=("parallel", "fan"), default="parallel",
                   help="ct: parallel beam (default, fastest) or clinical fan beam (docs/transforms.md)")
    p.add_argument("--bowtie", choices=("none", "cylinder"), default="none", help="ct: bowtie filter (default none)")
    p.add_argument("--modulation", choices=("none", "auto"), default="none",
                   help="ct: angular tube-current modulation from the attenuation (default none)")
    p.add_argument("--num-coils", type=int, default=1, help="mr: coils combined by sum of squares (default 1: Rician)")
    p.add_argument("--relative-to", choices=("max", "percentile"), default="max",
                   help="mr: what a percent std refers to (default max)")
    p.add_argument("--percentile", type=float, default=99.0,
                   help="mr: percentile for --relative-to percentile (default 99)")
    p.add_argument("--dicom-out", action="store_true", help="write a DICOM series folder instead of NIfTI")
    p.add_argument("--force-modality", action="store_true",
                   help="accept a DICOM series whose Modality tag is not the simulated one")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output (never the input)")
    p.set_defaults(func=run)


def _transform(args: argparse.Namespace):
    from monai_flow.transforms import LowDoseCTNoise, RicianMRNoise

    try:
        if args.modality == "ct":
            if args.dose is None and args.target_mas is None:
                raise CLIError("simulate ct needs --dose A (dose fraction in (0, 1]) or --target-mas M, not --std.")
            if args.electronic_std < 0:
                raise CLIError(f"--electronic-std must be >= 0 counts, got {args.electronic_std}.")
            return LowDoseCTNoise(dose_fraction=1.0 if args.dose is None else args.dose, i0=args.i0,
                                  electronic_std=args.electronic_std, domain=args.domain, input_noise=args.input_noise,
                                  geometry=args.geometry, bowtie=None if args.bowtie == "none" else args.bowtie,
                                  modulation=None if args.modulation == "none" else args.modulation,
                                  reference_mas=args.reference_mas, target_mas=args.target_mas)
        if args.std is None:
            raise CLIError("simulate mr needs --std S (e.g. 3% or 12.5), not --dose or --target-mas.")
        std, relative = args.std
        if args.num_coils < 1:
            raise CLIError(f"--num-coils must be >= 1, got {args.num_coils}.")
        return RicianMRNoise(std=std, relative_to=args.relative_to if relative else "absolute",
                             num_coils=args.num_coils, percentile=args.percentile)
    except ValueError as e:
        raise CLIError(str(e)) from e


def _output(args: argparse.Namespace) -> tuple[Path, str]:
    out = Path(args.output).expanduser().absolute()
    if args.dicom_out:
        return out, ""
    for ext in (".nii.gz", ".nii"):
        if out.name.lower().endswith(ext):
            return out, out.name[-len(ext):]
    raise CLIError(f"output {args.output} must end with .nii or .nii.gz (or pass --dicom-out to write a DICOM "
                   "series folder).")


def run(args: argparse.Namespace) -> int:
    from monai.transforms import SaveImage

    from monai_flow.data import write_dicom_series

    transform = _transform(args)
    item = single_volume(args.input)
    out, ext = _output(args)
    refuse_inputs([out], input_paths(item))
    refuse_existing([out], args.overwrite)
    folder = OutputFolder(out.parent)
    folder.prepare()
    try:
        modality = args.modality.upper()
        try:
            check_modality(item, modality, args.force_modality, f"simulate {args.modality}")
            img = load_volume(item)
            check_volume(img, need_3d=False, what="simulate")
        except InputError as e:
            raise CLIError(f"input {args.input}: {e}") from e
        seed = secrets.randbelow(2**31) if args.seed is None else args.seed
        note = ""
        if args.modality == "ct":
            note = _attach_exposure(img, item, args)
            try:
                dose, _ = transform.exposure(img)
                noisy = transform(img, seed=seed)
            except ValueError as e:
                raise CLIError(str(e)) from e
        else:
            noisy = transform(img, seed=seed)
        with Staged(args.overwrite) as staged:
            tmp = staged.file(out, ext)
            if args.dicom_out:
                template = input_paths(item)[0] if item["format"] == "dicom" else None
                level = (f"dose {dose:.4g}" + (f" ({args.target_mas:g} mAs)" if args.target_mas else "")
                         if args.modality == "ct" else f"noise std {args.std[0]:g}")
                write_dicom_series(noisy, tmp, modality=modality, template=template,
                                   series_description=f"monai-flow simulated {level}"[:64],
                                   derivation_description=f"simulated with monai-flow ({level}, seed {seed})")
            else:
                import torch

                SaveImage(output_ext=ext, resample=False, output_dtype=torch.float32, separate_folder=False,
                          print_log=False)(noisy, filename=str(tmp)[: -len(ext)])
            staged.commit()
    finally:
        folder.cleanup()
    print(f"wrote {out} (seed {seed}{'' if args.seed is not None else '; pass --seed to reproduce'}){note}")
    return EXIT_OK


def _attach_exposure(img, item: dict, args: argparse.Namespace) -> str:
    """Put the input's exposure in its metadata, where LowDoseCTNoise reads it: --input-mas, else the DICOM
    header (a contradictory or non-numeric dose tag is an error naming it); returns a note for the user."""
    from monai_flow.data.ct_exposure import EXPOSURE_META_KEY, CTExposure, read_ct_exposure

    exposure = None
    if args.input_mas is not None:
        exposure = CTExposure(exposure_mas=(args.input_mas,), source="--input-mas")
    elif item.get("format") == "dicom":
        try:
            exposure = read_ct_exposure(input_paths(item))
        except ValueError as e:
            raise CLIError(f"input {args.input}: {e}") from e
    if exposure is None or exposure.exposure_mas is None:
        if args.target_mas is not None and args.reference_mas is None:
            raise CLIError(f"--target-mas needs the input's exposure: {args.input} has no Exposure, XRayTubeCurrent x "
                           "ExposureTime or ExposureInuAs in its header; give --input-mas (or --reference-mas, the "
                           "exposure the input is taken to have), or use --dose.")
        return ""
    depth = img.shape[-1] if img.ndim == 4 else 1
    if len(exposure.exposure_mas) != depth:  # not one value per slice of this volume: the series mean
        exposure = CTExposure(kvp=exposure.kvp, exposure_mas=(exposure.mean_mas,), source=exposure.source)
    if hasattr(img, "meta"):
        img.meta[EXPOSURE_META_KEY] = exposure.as_dict()
    return f"; input exposure {exposure.mean_mas:.4g} mAs from {exposure.source}"
