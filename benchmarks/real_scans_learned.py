"""Learned methods for ``benchmarks/real_scans.py``: ``python benchmarks/real_scans.py --plugin benchmarks/real_scans_learned.py
--methods noisy bm3d_psd ct_main ct_adapt ct_adapt_scratch ct_simsdl ct_n2n ...``.

- ``ct_main`` / ``mr_main``: the model the bundle's main job trained (``bundles/<name>/models/model.pt``, or
  ``$MONAI_FLOW_CT_MODEL`` / ``$MONAI_FLOW_MR_MODEL``) with the bundle's ``inference.json`` settings;
  ``ct_main_fixed``: the same with the former fixed schedule [0.5, 0.3, 0.2] instead of ``auto``;
  ``ct_main_fp32`` / ``mr_main_fp32``: the defaults in float32 (``amp`` ``"auto"`` is bf16 on CPUs with native
  bf16); ``mr_main_before``: ``mr_denoise``'s inference settings before the speed work of issue 15.
- ``ct_adapt`` / ``mr_adapt``: ``monai-flow denoise --adapt`` (the bundle's ``adapt.json``): that model
  fine-tuned on the input itself for the case's time budget, then the bundle's inferer.
- ``ct_main_flips`` / ``ct_adapt_flips`` / ``ct_adapt_no_flips`` (and ``mr_``): the same with the bundle's
  ``flip_ensemble`` on (the mean over the input's mirror images, :class:`~monai_flow.inferers.FlipEnsembleInferer`) or
  off; the adapted weights are the cached ones of ``*_adapt``.
- ``ct_adapt_scratch`` / ``mr_adapt_scratch``: the same adaptation from an untrained network.
- ``ct_simsdl`` / ``ct_n2n`` (and ``mr_``): the SimSDL (``D(x) -> x``) and Noise2Noise-style
  (``D(x) -> D'(x)``) baselines with the same network, degradation, patches and time budget, from an untrained
  network, one-step direct prediction.

The inputs are the harness's arrays: CT (H, W) in HU with rows anterior-posterior, MR (X, Y, Z) as a fraction
of the reference maximum; the bundles see them in MONAI's layout (x = columns) and their own units.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from monai.data import MetaTensor

from monai_flow.adaptation import AdaptationCache, AdaptiveInferer, CTAdaptation, MRAdaptation
from monai_flow.bundle import Bundle
from monai_flow.checkpoints import load_network_weights, unwrap_network
from monai_flow.flows import CumulativeVelocityFlow
from monai_flow.inferers import RestorationInferer
from monai_flow.transforms import NoiseBasisDegradation

ROOT = Path(__file__).resolve().parent.parent
# adapted weights are reused between methods of one run that adapt alike (``*_flips``, ``*_schedule``), never
# between runs unless $MONAI_FLOW_BENCH_CACHE names a folder (then the adaptation times are those of cache hits)
_CACHE = AdaptationCache(os.environ.get("MONAI_FLOW_BENCH_CACHE") or tempfile.mkdtemp(prefix="monai-flow-bench-cache-"))


class _Pairs(CumulativeVelocityFlow):
    """Noise2Noise-style pairs: the target is a second, independent degradation of the reference."""

    def pair(self, batch, generator):
        y, _ = super().pair(batch, generator)
        target, _ = super().pair(batch, generator)
        return y, target


def _baseline(adaptation_type, kind: str):
    """An adaptation class whose objective is SimSDL (``kind="simsdl"``) or Noise2Noise-style (``"n2n"``)."""
    objective_type = CumulativeVelocityFlow if kind == "simsdl" else _Pairs

    class Baseline(adaptation_type):
        def objective(self):
            relative = super().objective()
            return objective_type(relative.degradation, level_range=self.dt_range, target="direct", mct_weight=0.0,
                                  degradation_keys=relative.degradation_keys)

        def settings(self):
            return {**super().settings(), "baseline": kind}

    return Baseline


def _model_path(name: str, bundle: Bundle) -> Path:
    env = os.environ.get("MONAI_FLOW_CT_MODEL" if name == "ct_denoise" else "MONAI_FLOW_MR_MODEL")
    return Path(env) if env else bundle.default_checkpoint


def _bundle(name: str, adapt: bool, budget: float | None = None) -> Bundle:
    bundle = Bundle(name, config=["inference.json", "adapt.json"] if adapt else "inference.json")
    bundle.set_device("cpu")
    if adapt and budget is not None:
        bundle.set("adapt_budget_seconds", float(budget))
    return bundle


def _network(bundle: Bundle, trained: bool):
    path = _model_path(bundle.name, bundle)
    torch.manual_seed(0)
    network = bundle.get("network")
    if trained:
        if not path.is_file():
            raise FileNotFoundError(f"no trained {bundle.name} model at {path}: run its main job first "
                                    f"({bundle.train_command()}) or set the model path.")
        load_network_weights(network, path)
    return network.eval()


def _ct_tensor(x: np.ndarray, ctx, bundle: Bundle) -> MetaTensor:
    """(H, W) HU -> (1, 1, W, H, 1) network units (x = columns), with the pixel spacing in the affine."""
    scale, offset = float(bundle.get("hu_scale")), float(bundle.get("hu_offset"))
    volume = torch.as_tensor((x.T - offset) / scale, dtype=torch.float32)[None, None, ..., None]
    dy, dx = ctx.spacing[:2]
    return MetaTensor(volume, affine=torch.diag(torch.tensor([dx, dy, 1.0, 1.0], dtype=torch.float64)))


def _ct_array(y: torch.Tensor, bundle: Bundle) -> np.ndarray:
    scale, offset = float(bundle.get("hu_scale")), float(bundle.get("hu_offset"))
    return (y.detach().cpu().numpy()[0, 0, ..., 0] * scale + offset).T


def _mr_tensor(x: np.ndarray) -> tuple[MetaTensor, float]:
    scale = max(float(np.percentile(x, 99.0)), 1e-6)  # the bundle's 99th-percentile normalisation
    return MetaTensor(torch.as_tensor(x / scale, dtype=torch.float32)[None, None]), scale


def _run(bundle: Bundle, network, inferer, x: np.ndarray, ctx) -> np.ndarray:
    with torch.no_grad():
        if bundle.name == "ct_denoise":
            return _ct_array(inferer(_ct_tensor(x, ctx, bundle), network), bundle)
        volume, scale = _mr_tensor(x)
        return inferer(volume, network).detach().cpu().numpy()[0, 0] * scale


def _main(name: str, dt_schedule=None, **overrides):
    def method(x, ctx):
        bundle = _bundle(name, adapt=False)
        bundle.set("ckpt_path", str(_model_path(name, bundle)))  # its quality-time calibration lies beside it
        if dt_schedule is not None:
            bundle.set("dt_schedule", dt_schedule)
        for key, value in overrides.items():
            bundle.set(key, value)
        return _run(bundle, _network(bundle, True), bundle.get("inferer"), x, ctx)
    return method


def _adapt(name: str, trained: bool, baseline: str | None = None, **overrides):
    def method(x, ctx):
        bundle = _bundle(name, adapt=True, budget=ctx.time_budget_s)
        for key, value in overrides.items():
            bundle.set(key, value)
        adaptation = bundle.get("adaptation")
        inner = bundle.get("ensemble_inferer")  # the denoising inferer, over mirror images if flip_ensemble
        if baseline is not None:
            adaptation.__class__ = _baseline(type(adaptation), baseline)
            inner = RestorationInferer(num_steps=1, target="direct")
            if name == "mr_denoise":
                from monai_flow.inferers import SlidingWindowFlowInferer

                sw = bundle.get("denoising_inferer")
                inner = SlidingWindowFlowInferer(inner, sw.roi_size, sw.sw_batch_size, sw.overlap, mode="gaussian")
        meta = (lambda v: {"spacing": (ctx.spacing[1], ctx.spacing[0])}) if name == "ct_denoise" else (lambda v: {})
        inferer = AdaptiveInferer(inner, adaptation, cache=_CACHE, meta_reader=meta)
        out = _run(bundle, _network(bundle, trained), inferer, x, ctx)
        ctx.extra["adaptation"] = inferer.results[-1]
        return out
    return method


METHODS = {
    "ct_main": _main("ct_denoise"),
    "ct_main_fixed": _main("ct_denoise", [0.5, 0.3, 0.2]),  # the bundle's former fixed schedule
    "ct_main_fp32": _main("ct_denoise", amp=None),  # the defaults on a CPU without native bf16
    "ct_main_flips": _main("ct_denoise", flip_ensemble=True),
    "ct_adapt": _adapt("ct_denoise", True),
    # flip_ensemble forced on / off; the adapted weights are the cached ones of ct_adapt (same adaptation)
    "ct_adapt_flips": _adapt("ct_denoise", True, flip_ensemble=True),
    "ct_adapt_no_flips": _adapt("ct_denoise", True, flip_ensemble=False),
    # the same adapted weights (cached) with a schedule that removes more / less than adapt.json's [0.5, 0.3, 0.2],
    # or that removes what each input needs to reach 15 / 20 HU (``auto``)
    "ct_adapt_schedule_1.4": _adapt("ct_denoise", True, dt_schedule=[0.6, 0.4, 0.25, 0.15]),
    "ct_adapt_schedule_1.2": _adapt("ct_denoise", True, dt_schedule=[0.5, 0.4, 0.3]),
    "ct_adapt_schedule_0.8": _adapt("ct_denoise", True, dt_schedule=[0.4, 0.25, 0.15]),
    "ct_adapt_auto_15": _adapt("ct_denoise", True, dt_schedule="auto", target_std_hu=15.0),
    "ct_adapt_auto_20": _adapt("ct_denoise", True, dt_schedule="auto", target_std_hu=20.0),
    # these adapt again: a lower peak learning rate, a linear warm-up over the first 10 % of the budget
    "ct_adapt_lr_1e-4": _adapt("ct_denoise", True, adapt_learning_rate=1e-4),
    "ct_adapt_warmup": _adapt("ct_denoise", True, adapt_warmup=0.1),
    "ct_adapt_warmup_lr_1e-4": _adapt("ct_denoise", True, adapt_warmup=0.1, adapt_learning_rate=1e-4),
    "mr_adapt_warmup": _adapt("mr_denoise", True, adapt_warmup=0.1),
    # MR adaptation settings against adapt.json's (48^3 patches, 2 per step, peak 3e-4, steps 0.05 .. 1.0)
    "mr_adapt_lr_1e-3": _adapt("mr_denoise", True, adapt_learning_rate=1e-3),
    "mr_adapt_dt_0.5": _adapt("mr_denoise", True, adapt_dt_range=[0.05, 0.5]),
    "mr_adapt_patch_32_batch_4": _adapt("mr_denoise", True, adapt_patch_size=[32, 32, 32], adapt_batch_size=4),
    # a control: an adaptation that cannot move the weights must give ct_main_fixed (adapt.json's schedule)
    "ct_adapt_lr_0": _adapt("ct_denoise", True, adapt_learning_rate=1e-12),
    "ct_adapt_scratch": _adapt("ct_denoise", False),
    "ct_simsdl": _adapt("ct_denoise", False, "simsdl"),
    "ct_n2n": _adapt("ct_denoise", False, "n2n"),
    "mr_main": _main("mr_denoise"),
    "mr_main_fp32": _main("mr_denoise", amp=None),
    # inference.json before issue 15's speed work: 32^3 windows, overlap 0.25, float32, steps 0.05 .. 0.5
    "mr_main_before": _main("mr_denoise", amp=None, roi_size=[32, 32, 32], overlap=0.25, sw_batch_size=4,
                            max_dt=0.5, min_dt=0.05),
    "mr_main_flips": _main("mr_denoise", flip_ensemble=True),
    # the auto schedule asked for less residual noise (inference.json: target_std 0.004 of the 99th percentile)
    "mr_main_target_0.002": _main("mr_denoise", target_std=0.002),
    "mr_main_target_0.001": _main("mr_denoise", target_std=0.001),
    "mr_adapt": _adapt("mr_denoise", True),
    "mr_adapt_target_0.002": _adapt("mr_denoise", True, target_std=0.002),  # mr_adapt's cached weights
    "mr_adapt_target_0.001": _adapt("mr_denoise", True, target_std=0.001),
    "mr_adapt_flips": _adapt("mr_denoise", True, flip_ensemble=True),
    "mr_adapt_no_flips": _adapt("mr_denoise", True, flip_ensemble=False),
    "mr_adapt_scratch": _adapt("mr_denoise", False),
    "mr_simsdl": _adapt("mr_denoise", False, "simsdl"),
    "mr_n2n": _adapt("mr_denoise", False, "n2n"),
}
MODALITIES = {name: ("CT",) if name.startswith("ct_") else ("MR",) for name in METHODS}
DIMS = {name: (2,) if name.startswith("ct_") else (3,) for name in METHODS}
LABELS = {
    "ct_main": "ct_denoise main-job model", "ct_main_fixed": "main model, fixed schedule [0.5, 0.3, 0.2]",
    "ct_main_fp32": "main model, float32", "mr_main_fp32": "main model, float32",
    "mr_main_before": "main model, inference settings before the speed work",
    "ct_main_flips": "main model, mean over 4 mirror images", "mr_main_flips": "main model, mean over 8 mirror images",
    "ct_adapt_flips": "--adapt, mean over 4 mirror images", "mr_adapt_flips": "--adapt, mean over 8 mirror images",
    "ct_adapt_no_flips": "--adapt, no mirror images", "mr_adapt_no_flips": "--adapt, no mirror images",
    "ct_adapt": "ct_denoise --adapt", "ct_adapt_scratch": "--adapt from scratch",
    "ct_simsdl": "SimSDL, adapted", "ct_n2n": "Noise2Noise-style, adapted",
    "mr_main": "mr_denoise main-job model", "mr_adapt": "mr_denoise --adapt", "mr_adapt_scratch": "--adapt from scratch",
    "mr_simsdl": "SimSDL, adapted", "mr_n2n": "Noise2Noise-style, adapted",
}
