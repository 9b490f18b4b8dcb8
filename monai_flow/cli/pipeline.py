"""Running a bundle's inference on the user's files, shared by the ``denoise``, ``demo`` and
``export`` commands: the bundle options, output naming, :class:`Denoiser` (a bundle's inference
pieces applied to one input at a time; :class:`VolumeDenoiser` builds the same from parsed
components), the batch loop and its report.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

from monai_flow.bundle import Bundle

from .errors import EXIT_FAILED, EXIT_OK, CLIError, InputError, print_error
from .inputs import check_modality, check_nifti_item, check_volume, display_name, input_paths
from .safe_io import OutputFolder, Staged, refuse_existing, refuse_inputs, resolved

__all__ = ["BUNDLES", "Denoiser", "VolumeDenoiser", "add_bundle_options", "denoise_items", "output_naming", "output_targets",
           "plan_outputs", "report"]

BUNDLES = ("ct_denoise", "mr_denoise", "ct_restore")
ADAPTABLE = ("ct_denoise", "mr_denoise")  # bundles with an adapt.json (RelativeFlow learns from the input itself)
_MODALITY = {"ct_denoise": "CT", "ct_restore": "CT", "mr_denoise": "MR"}


def add_bundle_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", metavar="PATH",
                   help="network weights (.pt state_dict); default: the bundle's models/model.pt")
    p.add_argument("--device", metavar="DEV", help="cpu, cuda or cuda:N (default: cuda when available, else cpu)")
    p.add_argument("--bundle-root", metavar="PATH",
                   help="bundle folder holding configs/ (default: this repository's bundles/<name>)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs (never inputs)")



def output_naming(bundle: Bundle) -> tuple[str, str]:
    """The bundle's ``SaveImaged`` postfix (``denoised``, ``restored``) and extension (``.nii.gz``)."""
    saver = bundle.find_transform("postprocessing", "SaveImaged")
    return str(bundle.setting(saver, "output_postfix", "denoised")), str(bundle.setting(saver, "output_ext", ".nii.gz"))


def output_targets(item: dict, out_dir: Path, postfix: str, dicom: bool, ext: str = ".nii.gz") -> list[Path]:
    """``<name>_<postfix>.nii.gz`` (and ``<name>_<postfix>_dicom/``) in ``out_dir``."""
    stem = f"{item['name']}_{postfix}"
    return [out_dir / f"{stem}{ext}"] + ([out_dir / f"{stem}_dicom"] if dicom else [])


class VolumeDenoiser:
    """A bundle's inference pieces, already built, applied to one item at a time: read, check, infer,
    postprocess, and write atomically (:meth:`predict`, :meth:`write`).

    The command line builds it from a :class:`~monai_flow.bundle.Bundle` (:class:`Denoiser`);
    ``multi_gpu_inference.json`` overlays build it from their own parsed components
    (:func:`monai_flow.distributed.run_bundle_inference`).

    Args:
        name: the bundle's name (messages, DICOM series description).
        preprocessing: a ``Compose`` starting with ``LoadImaged``.
        postprocessing: a ``Compose``; its ``SaveImaged`` / ``SaveDicomSeriesd`` are not run, their
            settings (postfix, extension, writer) are used by :meth:`write`.
        network, inferer: as in the bundle's evaluator.
        device: where the network runs.
        modality, series_description: of derived DICOM series.
    """

    def __init__(self, name: str, preprocessing, postprocessing, network, inferer, device: str,
                 modality: str | None = None, series_description: str | None = None) -> None:
        self.name, self.network, self.inferer, self.device = name, network, inferer, str(device)
        self.modality = modality if modality is not None else _MODALITY.get(name)
        self.series_description = series_description or f"monai-flow {name}"
        self._split_preprocessing(preprocessing)
        self._split_postprocessing(postprocessing)

    def _split_preprocessing(self, preprocessing) -> None:
        from monai.transforms import Compose, LoadImaged

        transforms = list(preprocessing.flatten().transforms)
        if not transforms or not isinstance(transforms[0], LoadImaged):
            raise CLIError(f"bundle {self.name}: preprocessing must start with LoadImaged.")
        self.preprocessing = preprocessing  # inverted by the postprocessing's Invertd
        self.load, self.prepare = transforms[0], Compose(transforms[1:])

    def _split_postprocessing(self, postprocessing) -> None:
        import torch
        from monai.transforms import Compose, SaveImage, SaveImaged

        from monai_flow.data import SaveDicomSeriesd

        transforms = list(postprocessing.flatten().transforms) if postprocessing is not None else []
        savers = [t for t in transforms if isinstance(t, SaveImaged)]
        self.post = Compose([t for t in transforms if not isinstance(t, (SaveImaged, SaveDicomSeriesd))])
        self.saver = savers[0].saver if savers else SaveImage(output_ext=".nii.gz", resample=False,
                                                             output_dtype=torch.float32, separate_folder=False)
        self.saver.set_options(write_kwargs={"verbose": False})  # its log would name the temporary file
        layout = getattr(self.saver, "folder_layout", None)
        self.postfix = str(getattr(layout, "postfix", None) or "denoised")
        self.ext = str(getattr(layout, "ext", None) or getattr(self.saver, "output_ext", ".nii.gz"))

    def targets(self, item: dict, out_dir: Path, dicom: bool) -> list[Path]:
        return output_targets(item, out_dir, self.postfix, dicom, self.ext)

    def predict(self, item: dict, force_modality: bool = False):
        """The postprocessed prediction (a channel-first MetaTensor on the input's grid)."""
        import torch
        from monai.data import decollate_batch, list_data_collate

        what = f"bundle {self.name}"
        check_nifti_item(item)
        check_modality(item, self.modality, force_modality, what)
        try:
            data = self.load(dict(item))
        except Exception as e:
            raise InputError(f"cannot read the image: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from e
        check_volume(data["image"], need_3d=True, what=what)
        data = self.prepare(data)
        batch = list_data_collate([data])
        x = batch["image"].to(self.device)
        try:
            with torch.no_grad():
                pred = self.inferer(x, self.network)
        except ValueError as e:
            from monai_flow.adaptation import AdaptationError

            if isinstance(e, AdaptationError):
                raise InputError(f"cannot adapt to this input: {e}") from e
            raise
        for result in getattr(self.inferer, "results", [])[-1:]:
            tqdm_write(f"monai-flow: {display_name(item)}: " + describe_adaptation(result))
        data["pred"] = decollate_batch(pred.detach().cpu())[0]
        return self.post(data)["pred"]

    def write(self, item: dict, pred, targets: list[Path], out: OutputFolder, overwrite: bool) -> list[Path]:
        """Write NIfTI (and DICOM) outputs of one input atomically; returns the written paths."""
        from monai_flow.data import write_dicom_series

        with Staged(overwrite) as staged:
            out.ensure(targets[0].parent)
            tmp = staged.file(targets[0], self.ext)
            self.saver(pred, filename=str(tmp)[: -len(self.ext)])
            if len(targets) > 1:
                template = input_paths(item)[0] if item.get("format") == "dicom" else None
                write_dicom_series(pred, staged.folder(targets[1]), modality=self.modality, template=template,
                                   series_description=self.series_description)
            return staged.commit()


class Denoiser(VolumeDenoiser):
    """A bundle's inference pieces, read from its configs with the command line's overrides."""

    def __init__(self, bundle: Bundle, checkpoint: Path | None, device: str | None = None, steps: int | None = None,
                 roi: list[int] | None = None, adapt: dict | None = None, amp: str | None = None,
                 flip_ensemble: bool | None = None) -> None:
        """``checkpoint=None`` (only with ``adapt``): start from the untrained network. ``adapt``:
        ``{"budget": seconds or None, "cache": bool}`` for a bundle read with its ``adapt.json``.
        ``amp``: ``"fp32"``, ``"bf16"``, ``"fp16"`` or ``"auto"`` (the bundle's ``amp`` id; None keeps the bundle's).
        ``flip_ensemble``: average over the input's mirror images (the bundle's ``flip_ensemble``; None keeps it)."""
        import torch

        self.bundle = bundle
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        bundle.set_device(device)
        if checkpoint is not None and bundle.has("ckpt_path"):
            bundle.set("ckpt_path", str(checkpoint))
        if amp is not None:
            if not bundle.has("amp"):
                raise CLIError(f"bundle {bundle.name} has no amp setting: --amp is not supported.")
            bundle.set("amp", None if amp == "fp32" else amp)
        if flip_ensemble is not None:
            if not bundle.has("flip_ensemble"):
                raise CLIError(f"bundle {bundle.name} has no flip_ensemble setting: --flip-ensemble is not supported.")
            bundle.set("flip_ensemble", bool(flip_ensemble))
        if adapt is not None:
            if adapt.get("budget") is not None:
                bundle.set("adapt_budget_seconds", float(adapt["budget"]))
            bundle.set("adapt_cache", bool(adapt.get("cache", True)))
        if steps is not None:
            if not bundle.has("num_steps"):
                raise CLIError(f"bundle {bundle.name} has no num_steps setting: --steps is not supported.")
            bundle.set("num_steps", int(steps))
        if roi is not None:
            if not bundle.has("roi_size"):
                raise CLIError(f"bundle {bundle.name} has no sliding-window settings (roi_size): --roi is not "
                               "supported.")
            if bundle.has("use_sliding_window"):
                bundle.set("use_sliding_window", True)
            bundle.set("roi_size", [int(r) for r in roi])
        if checkpoint is None:
            if adapt is None:
                raise CLIError(f"bundle {bundle.name}: no network weights given.")
            tqdm_write(f"monai-flow: bundle {bundle.name} has no trained model ({bundle.default_checkpoint}); "
                       "adapting from an untrained network.")
            torch.manual_seed(0)  # the same starting weights every time: a rerun finds its cached adaptation
            network = (bundle.get("network") if bundle.has("network") else bundle.get("network_def")).eval()
        else:
            network = bundle.load_network(checkpoint, device)
        self.network = network
        if roi is not None:
            self._check_roi(roi)
        dicom = bundle.find_transform("postprocessing", "SaveDicomSeriesd")
        super().__init__(bundle.name, bundle.get("preprocessing"), bundle.get("postprocessing"), network,
                         bundle.get("inferer"), device,
                         modality=bundle.setting(dicom, "modality", _MODALITY.get(bundle.name)),
                         series_description=bundle.setting(dicom, "series_description", f"monai-flow {bundle.name}"))
        self.postfix, self.ext = output_naming(bundle)

    def _check_roi(self, roi: list[int]) -> None:
        divisor = getattr(self.network, "spatial_divisor", None)
        if divisor is None:
            return
        per_axis = tuple(divisor) if isinstance(divisor, (tuple, list)) else (int(divisor),) * len(roi)
        if len(per_axis) != len(roi) or any(r % d for r, d in zip(roi, per_axis)):
            suggest = " ".join(str(-(-r // d) * d) for r, d in zip(roi, per_axis))
            raise CLIError(f"--roi {' '.join(map(str, roi))} is not divisible by the network's downsampling factor "
                           f"{per_axis} per axis (spatial_divisor of bundle {self.bundle.name}); use multiples, "
                           f"e.g. --roi {suggest}.")


def tqdm_write(message: str) -> None:
    from tqdm import tqdm

    tqdm.write(message, file=sys.stderr)


def describe_adaptation(result: dict) -> str:
    """One line on what an adaptation did (or that its weights came from the cache)."""
    if result.get("cached"):
        return f"adapted weights reused from the cache (key {result['key'][:12]})"
    noise = result.get("noise") or {}
    source = noise.get("i0_source") or noise.get("noise_source")
    loss = result.get("loss")
    return (f"adapted in {result.get('seconds')} s ({result.get('iterations')} iterations, final loss "
            f"{'n/a' if loss is None else format(loss, '.4g')}" + (f", noise level from {source})" if source else ")"))


def denoise_items(denoiser: VolumeDenoiser, items: list[dict], out: OutputFolder, dicom: bool, overwrite: bool,
                  force_modality: bool = False, verbose: bool = False,
                  prefix: str = "") -> tuple[list[Path], list[tuple[dict, str]]]:
    """Denoise ``items`` one at a time; returns (written paths, [(item, reason) of failed inputs]).
    ``prefix`` starts every message (``"[rank r/N] "`` in distributed runs)."""
    from tqdm import tqdm

    written, failed = [], []
    bar = tqdm(items, desc=f"{prefix}{denoiser.name}", unit="input", file=sys.stderr, disable=None)
    for item in bar:
        try:
            pred = denoiser.predict(item, force_modality)
            done = denoiser.write(item, pred, denoiser.targets(item, out.path, dicom), out, overwrite)
            written += done
            if prefix:
                for path in done:
                    tqdm.write(f"{prefix}wrote {path}", file=sys.stderr)
        except InputError as e:
            failed.append((item, str(e)))
            tqdm.write(f"{prefix}monai-flow: failed: {display_name(item)}: {e}", file=sys.stderr)
        except Exception as e:  # one bad input must not stop the batch
            failed.append((item, f"{type(e).__name__}: {e}"))
            tqdm.write(f"{prefix}monai-flow: failed: {display_name(item)}: {type(e).__name__}: {e}", file=sys.stderr)
            if verbose:
                traceback.print_exc()
    return written, failed


def plan_outputs(items: list[dict], out: OutputFolder, targets_of, input_arg: str, overwrite: bool,
                 skip_existing: bool = False) -> None:
    """Refuse outputs that hit an input, or exist (without ``overwrite`` or ``skip_existing``), before any work."""
    if resolved(out.path) == resolved(input_arg):
        kind = "folder" if Path(input_arg).is_dir() else "file"
        raise CLIError(f"output {out.path} is the input {kind}: inputs are never overwritten; choose another "
                       "output folder.")
    targets = [t for it in items for t in targets_of(it)]
    sources = [p for it in items for p in input_paths(it)]
    refuse_inputs([out.path, *targets], sources, root=out.path)
    refuse_existing(targets, overwrite or skip_existing)


def report(written: list[Path], failed: list[tuple[dict, str]], total: int, out: Path, verb: str) -> int:
    for path in written:
        print(f"wrote {path}")
    if failed:
        print_error(f"{len(failed)} of {total} input(s) failed ({total - len(failed)} {verb} into {out}):")
        for item, reason in failed:
            print(f"  {display_name(item)}: {reason}", file=sys.stderr)
        return EXIT_FAILED
    print(f"{verb} {total} input(s) into {out}")
    return EXIT_OK
