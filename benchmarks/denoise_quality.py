"""Does learning from noisy references work? RelativeFlow against baselines, CT and MR.

Every learned method uses the same ``VelocityUNet`` and the same number of iterations on the
same batches; only the objective and the inference differ. Training data are *noisy
references* at heterogeneous levels (CT: dose 25-100 % of ``i0``; MR: Rician std 1-5 % of the
image maximum), simulated once from phantoms (``monai_flow.data``) and one real slice shipped
with pydicom per modality. Test inputs are simulated at several levels from noise-free held-out
phantoms and a second real slice (whose own, much lower, noise is ignored), and the noise-free
image is used only for scoring.

Methods (``--methods``, default all):

- ``noisy``: the input.
- ``bm3d`` (``bm3d`` package) and ``nlm`` (scikit-image non-local means), given the true noise
  std of each input; a multiplier of it is chosen per level on a validation split.
- ``simsdl``: the network trained on ``D_dt(x) -> x`` (x a noisy reference, D the RelativeFlow
  degradation operator, dt as RelativeFlow's final range), applied once. D needs each reference's
  noise level: CT, its photon count from the exposure (as a DICOM header records it;
  ``--ct-reference-i0 estimate`` measures it instead); MR, its Rician std estimated from the
  background (``--mr-reference-std known`` uses the simulated value).
- ``n2n``: Noise2Noise-style, ``D_dt1(x) -> D_dt2(x)`` (two independent degradations), once.
- ``relflow``: RelativeFlow with a ``DtCurriculum``; evaluated with 1 step, 3 halving steps and
  the noise-adaptive ``auto`` schedule, the step sizes / target noise chosen on validation.
- ``oracle``: direct regression on noise-free targets (needs clean data: simulation only).
- ``irflow``: IR-Flow (cumulative velocity + multi-step consistency) on clean targets, 2 steps.
- ``flowmap``: the flow-map denoiser on clean images (``FlowMapDistillation``: regression warm-up of
  the diagonal, then a frozen snapshot as the teacher; ``DenoiserFlowMap`` network) at lookahead 0
  (MMSE), given the true noise std; it is trained on white Gaussian noise, which CT noise is not.

Scores: CT in HU over the window [-1000, 1000] (PSNR peak 2000 HU); MR on the foreground
(noise-free image > 10 % of its maximum, images scaled to a 99.5th-percentile of 1), PSNR peak 1.
SSIM is scikit-image's Gaussian SSIM averaged over the same pixels; RMSE in HU / % of maximum.
Mean and standard deviation are over test images x seeds.

Usage:
    python benchmarks/denoise_quality.py --quick            # 1 seed, small network: minutes on 2 CPU cores
    python benchmarks/denoise_quality.py                    # full: 600 iterations, bigger network, 2 seeds
    python benchmarks/denoise_quality.py --device cuda --iterations 4000
Writes a markdown table (``--out-md``) and two PNGs (``--out-img`` prefix).
"""

from __future__ import annotations

import argparse
import math
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
import torch
import torch.nn.functional as F
from pydicom.data import get_testdata_file

from monai_flow.data.phantoms import ct_phantom, mr_phantom
from monai_flow.flows import CumulativeVelocityFlow, DtCurriculum, RelativeFlow
from monai_flow.flows.flow_map_distillation import DenoiserFlowMap, FlowMapDistillation
from monai_flow.inferers import DomainInferer, FlowMapDenoiser, RelativeFlowInferer, RestorationInferer
from monai_flow.inferers.schedules import relative_dt_schedule
from monai_flow.networks import VelocityUNet
from monai_flow.transforms import CTDegradation, MRDegradation, NormalizedDegradation
from monai_flow.physics import noncentral_chi_noise
from monai_flow.physics import estimate_mr_noise_std

PRESETS = {
    "quick": dict(iterations=200, seeds=(0,), channels=(8, 16, 16), groups=4, num_train=32, num_val=3, num_test=4),
    "full": dict(iterations=600, seeds=(0, 1), channels=(16, 32, 32), groups=8, num_train=64, num_val=4, num_test=8),
}
ALL_METHODS = ("noisy", "bm3d", "nlm", "simsdl", "n2n", "relflow", "oracle", "irflow", "flowmap")
CT_SPACING_MM = 3.0
DT_FINAL = (0.02, 1.0)  # operator levels of SimSDL / N2N; RelativeFlow trains dt in [0.02, --relflow-dt-max] (level dt / 2)


# ---------------------------------------------------------------------------------------- data
def _real_slice(name: str, spacing_mm: float | None, size: int, air: float) -> torch.Tensor:
    """A pydicom test slice (HU or raw MR), resampled to ``spacing_mm`` and padded / cropped to ``size``^2."""
    ds = pydicom.dcmread(get_testdata_file(name))
    img = torch.from_numpy(ds.pixel_array.astype(np.float32))
    img = img * float(ds.get("RescaleSlope", 1)) + float(ds.get("RescaleIntercept", 0))
    if spacing_mm is not None:
        shape = [round(n * float(s) / spacing_mm) for n, s in zip(img.shape, ds.PixelSpacing)]
        img = F.interpolate(img[None, None], size=shape, mode="bilinear", antialias=True)[0, 0]
    pad = [max(size - n, 0) for n in img.shape]
    img = F.pad(img, (pad[1] // 2, pad[1] - pad[1] // 2, pad[0] // 2, pad[0] - pad[0] // 2), value=air)
    top, left = [(n - size) // 2 for n in img.shape]
    return img[top : top + size, left : left + size][None]


@dataclass
class Task:
    """One modality: clean images, simulation, the RelativeFlow operator and scoring.

    Images are network-normalised (CT: HU / 1000; MR: 99.5th percentile = 1), shape (1, H, W).
    ``simulate(x, level, generator)`` degrades noise-free images (B, 1, H, W) to test ``level``
    (CT: dose fraction of ``i0``; MR: Rician std); ``oracle_degrade`` does the same with the
    level parametrised for uniform sampling (CT: -ln dose); ``operator(x, dt, generator)`` is
    the RelativeFlow degradation of already noisy references.
    """

    name: str
    levels: Sequence[float]
    reference_range: tuple[float, float]
    simulate: Callable[..., torch.Tensor]
    oracle_degrade: Callable[..., torch.Tensor]  # (clean, level (B,), generator) for clean-target training
    oracle_range: tuple[float, float]  # uniform range of its level
    operator: Callable[..., torch.Tensor]
    operator_key: str  # the operator's per-reference argument: CT "i0" (known exposure), MR "reference_std"
    reference_value: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (references, their levels) -> (B,)
    level_text: Callable[[float], str]
    score_window: tuple[float, float]
    unit: float  # RMSE unit per normalised unit (HU, % of max)
    foreground: Callable[[torch.Tensor], torch.Tensor]
    train: list = field(default_factory=list)
    val: list = field(default_factory=list)
    test: list = field(default_factory=list)  # (name, image)
    relflow_operator: Callable[..., torch.Tensor] | None = None  # RelativeFlow's operator (default: ``operator``)
    input_std: Callable[[torch.Tensor], torch.Tensor] | None = None  # noise estimate of test inputs (domain change)


def ct_task(num_train: int, num_val: int, num_test: int, i0: float, reference_i0: str = "known") -> Task:
    """``reference_i0="known"``: each reference's photons per bin (dose x i0) from its exposure,
    as a DICOM header records it; ``"estimate"``: from its measured noise (unreliable on 3 mm,
    64-pixel phantoms, whose soft tissue has few homogeneous patches)."""
    estimating = NormalizedDegradation(CTDegradation((CT_SPACING_MM, CT_SPACING_MM), i0="estimate", num_views=180), 1000.0)
    size = 80
    spacing = (CT_SPACING_MM, CT_SPACING_MM)
    full = NormalizedDegradation(CTDegradation(spacing, i0=i0, num_views=180, input_noise="none", dt_mapping="dose"), 1000.0)

    def phantoms(n, seed):
        gen = torch.Generator().manual_seed(seed)
        return [F.pad(ct_phantom((64, 64), gen)[None], (8, 8, 8, 8), value=-1000.0) / 1000.0 for _ in range(n)]

    def simulate(x, dose, generator=None):
        return full(x, -torch.log(torch.as_tensor(dose, dtype=x.dtype)).expand(x.shape[0]), generator=generator)

    return Task(
        name="CT", levels=(0.5, 0.25, 0.1), reference_range=(0.25, 1.0), simulate=simulate,
        oracle_degrade=full, oracle_range=(0.0, -math.log(0.05)),
        operator=NormalizedDegradation(CTDegradation(spacing, i0=i0, num_views=180), 1000.0), operator_key="i0",
        reference_value=lambda refs, doses: doses * i0 if reference_i0 == "known" else estimating.reference_i0(refs * 1000.0),
        level_text=lambda d: f"dose {d:g}", score_window=(-1.0, 1.0), unit=1000.0,
        foreground=lambda x: torch.ones_like(x, dtype=torch.bool),
        train=phantoms(num_train, 1) + [_real_slice("693_J2KI.dcm", CT_SPACING_MM, size, -1000.0).clamp_min(-1000) / 1000],
        val=phantoms(num_val, 2),
        test=[(f"phantom {i}", x) for i, x in enumerate(phantoms(num_test, 3))]
        + [("head CT (pydicom)", _real_slice("J2K_pixelrep_mismatch.dcm", CT_SPACING_MM, 76, -1000.0).clamp_min(-1000) / 1000)],
    )


def mr_task(num_train: int, num_val: int, num_test: int, reference_std: str = "estimate",
            domain: str = "magnitude") -> Task:
    """``reference_std="estimate"``: each reference's Rician std estimated as in practice
    (``estimate_mr_noise_std``: the background fit where there is air, else the high-frequency
    estimate); ``"background"``: the background fit alone (the former estimator, 17x off on the
    real abdominal slice); ``"known"``: the simulated value (isolates the estimator's errors).
    ``domain``: RelativeFlow's operator domain (``MRDegradation(domain=...)``; the baselines stay
    in the magnitude domain)."""
    def phantoms(n, seed):
        gen = torch.Generator().manual_seed(seed)
        return [mr_phantom((64, 64), gen)[None] for _ in range(n)]

    def real(name, **kw):
        x = _real_slice(name, None, **kw)
        return x / torch.quantile(x, 0.995)

    overlay = _real_slice("examples_overlay.dcm", None, 300, 0.0)  # abdomen, 300 x 484 -> 300^2 centre
    overlay = F.interpolate(overlay[None], size=(64, 64), mode="bilinear", antialias=True)[0]

    def simulate(x, std, generator=None):
        return noncentral_chi_noise(x, torch.as_tensor(std, dtype=x.dtype).expand(x.shape[0]), 1, generator)

    return Task(
        name="MR", levels=(0.02, 0.05, 0.1), reference_range=(0.01, 0.05), simulate=simulate,
        oracle_degrade=simulate, oracle_range=(0.005, 0.12), operator=MRDegradation(reference_std=None),
        operator_key="reference_std",
        reference_value=lambda refs, stds: stds if reference_std == "known" else estimate_mr_noise_std(
            refs, method="auto" if reference_std == "estimate" else "background"),
        level_text=lambda s: f"std {100 * s:g}%",
        score_window=(0.0, 1.2), unit=100.0, foreground=lambda x: x > 0.1 * x.amax(),
        train=phantoms(num_train, 1) + [overlay / torch.quantile(overlay, 0.995)],
        val=phantoms(num_val, 2),
        test=[(f"phantom {i}", x) for i, x in enumerate(phantoms(num_test, 3))] + [("MR_small (pydicom)", real("MR_small.dcm", size=64, air=0.0))],
        relflow_operator=MRDegradation(reference_std=None, domain=domain),
        input_std=lambda y: estimate_mr_noise_std(y),
    )


def noisy_references(task: Task, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The training set: each clean image degraded once at its own level: images (B, 1, H, W)
    and the operator's per-reference argument (B,) (``task.operator_key``)."""
    gen = torch.Generator().manual_seed(seed)
    clean = torch.stack(task.train)
    lo, hi = task.reference_range
    levels = lo + (hi - lo) * torch.rand(clean.shape[0], generator=gen)
    refs = torch.cat([task.simulate(c[None], lvl, generator=gen) for c, lvl in zip(clean, levels)])
    return refs, task.reference_value(refs, levels)


# ------------------------------------------------------------------------------------ scoring
def score(task: Task, output: torch.Tensor, clean: torch.Tensor) -> dict[str, float]:
    """PSNR (dB), SSIM and RMSE (physical units) of one image (1, H, W) over the task's pixels."""
    from skimage.metrics import structural_similarity

    low, high = task.score_window
    out, ref = output.clamp(low, high).double(), clean.clamp(low, high).double()
    mask = task.foreground(clean)
    mse = (out - ref)[mask].square().mean().item()
    _, ssim_map = structural_similarity(
        out[0].numpy(), ref[0].numpy(), data_range=high - low, gaussian_weights=True, sigma=1.5,
        use_sample_covariance=False, full=True,
    )
    return {
        "psnr": 10 * math.log10((high - low) ** 2 / max(mse, 1e-20)),
        "ssim": float(ssim_map[mask[0].numpy()].mean()),
        "rmse": math.sqrt(mse) * task.unit,
    }


def true_noise_std(task: Task, noisy: torch.Tensor, clean: torch.Tensor) -> float:
    """Std of the actual noise on the scored pixels (what BM3D / NLM / the flow map are given)."""
    return (noisy - clean)[task.foreground(clean)].std().item()


# ------------------------------------------------------------------------------------ training
def make_network(channels, groups, flow_map: bool = False, time_scale: float = 1000.0) -> VelocityUNet:
    return VelocityUNet(2, 1, channels=channels, attention_levels=(False,) * len(channels), num_res_blocks=1,
                        norm_num_groups=groups, flow_map=flow_map, time_scale=time_scale)


class Noise2NoiseRegression(CumulativeVelocityFlow):
    """Noise2Noise-style baseline: input ``D_l1(x)``, target ``D_l2(x)``, two independent draws."""

    def pair(self, batch, generator):
        y, _ = super().pair(batch, generator)
        target, _ = super().pair(batch, generator)
        return y, target


def train(objective, network, data: torch.Tensor, iterations: int, batch: int, seed: int, on_step=None,
          extra: Callable[[torch.Tensor], dict] | None = None) -> float:
    """AdamW + one-cycle LR on random flips of random batches of ``data``; returns seconds."""
    gen = torch.Generator().manual_seed(seed)
    objective.set_random_state(seed)
    opt = torch.optim.AdamW(network.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=iterations, pct_start=0.1)
    device = next(network.parameters()).device
    network.train()
    start = time.perf_counter()
    for it in range(iterations):
        idx = torch.randint(len(data), (batch,), generator=gen)
        x = data[idx]
        flips = torch.rand(2, generator=gen) < 0.5
        x = torch.flip(x, [d for d, f in zip((-1, -2), flips) if f]) if flips.any() else x
        items = {"image": x.to(device), **(extra(idx) if extra else {})}
        loss = objective(network, items)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if on_step:
            on_step(it)
    network.eval()
    return time.perf_counter() - start


# ------------------------------------------------------------------------------------ methods
Denoiser = Callable[[torch.Tensor, float], torch.Tensor]  # (noisy (1, 1, H, W), true noise std) -> output


def best_on_validation(task: Task, candidates: dict, make: Callable[[object], Denoiser], per_level: bool,
                       seed: int) -> tuple[Denoiser, dict]:
    """Pick the candidate parameter with the best mean validation PSNR (per level or overall)."""
    gen = torch.Generator().manual_seed(10_000 + seed)
    val = [(lvl, c, task.simulate(c[None], lvl, generator=gen)) for lvl in task.levels for c in task.val]
    psnr = {}
    for key, value in candidates.items():
        den = make(value)
        with torch.no_grad():
            psnr[key] = [(lvl, score(task, den(y, true_noise_std(task, y, c[None]))[0], c)["psnr"]) for lvl, c, y in val]
    groups = task.levels if per_level else [None]
    chosen = {}
    for g in groups:
        chosen[g] = max(psnr, key=lambda k: np.mean([p for lvl, p in psnr[k] if g is None or lvl == g]))
    if not per_level:
        return make(candidates[chosen[None]]), {"all": chosen[None]}
    # per level: the test loop passes the true level through ``noise_std``; map std -> nearest level
    dens = {g: make(candidates[chosen[g]]) for g in groups}
    ref_std = {g: np.median([true_noise_std(task, y, c[None]) for lvl, c, y in val if lvl == g]) for g in groups}

    def denoise(y, std):
        g = min(groups, key=lambda lvl: abs(math.log(ref_std[lvl] / std)))
        return dens[g](y, std)

    return denoise, {task.level_text(g): chosen[g] for g in groups}


def classical(kind: str) -> Callable[[float], Denoiser]:
    def make(factor: float) -> Denoiser:
        def denoise(y: torch.Tensor, std: float) -> torch.Tensor:
            img = y[0, 0].double().numpy()
            if kind == "bm3d":
                import bm3d

                out = bm3d.bm3d(img, sigma_psd=factor * std)
            else:
                from skimage.restoration import denoise_nl_means

                out = denoise_nl_means(img, h=factor * std, sigma=std, patch_size=5, patch_distance=6, fast_mode=True)
            return torch.from_numpy(np.ascontiguousarray(out)).float()[None, None]

        return denoise

    return make


def fit_method(name: str, task: Task, refs: torch.Tensor, ref_values: torch.Tensor, cfg: argparse.Namespace, seed: int) -> dict[str, tuple[Denoiser, dict]]:
    """Train / tune one method; returns ``{row label: (denoiser, info)}`` (a method may give several rows)."""
    if name == "noisy":
        return {"noisy input": (lambda y, std: y, {})}
    if name in ("bm3d", "nlm"):
        grid = {f"{f:g} x std": f for f in ((0.75, 1.0, 1.5, 2.0) if name == "bm3d" else (0.6, 0.8, 1.0, 1.3))}
        label = "BM3D (true std)" if name == "bm3d" else "NLM (true std)"
        return {label: best_on_validation(task, grid, classical(name), per_level=True, seed=seed)}

    torch.manual_seed(seed)
    net = make_network(cfg.channels, cfg.groups, flow_map=name == "flowmap", time_scale=cfg.time_scale).to(cfg.device)
    clean = torch.stack(task.train)
    on_step, data = None, refs
    extra = lambda idx: {"reference": ref_values[idx].to(cfg.device)}  # noqa: E731
    keys = {task.operator_key: "reference"}
    if name == "simsdl":
        objective = CumulativeVelocityFlow(task.operator, level_range=DT_FINAL, target="direct", degradation_keys=keys)
    elif name == "n2n":
        objective = Noise2NoiseRegression(task.operator, level_range=DT_FINAL, target="direct", degradation_keys=keys)
    elif name == "relflow":
        final = (DT_FINAL[0], cfg.relflow_dt_max)
        start = (0.2, 0.2) if cfg.curriculum else final  # without: the final range from the first iteration
        curriculum = DtCurriculum(start=start, factor=0.9, dt_min_floor=final[0], dt_max_cap=final[1])
        operator = task.relflow_operator or task.operator
        objective = RelativeFlow(operator, curriculum=curriculum, degradation_keys=keys)
        if hasattr(operator, "to_domain"):
            data = operator.to_domain(refs, ref_values)
        period = max(cfg.iterations // 25, 1)  # 25 curriculum "epochs": the range reaches DT_FINAL

        def advance_curriculum(it):
            if (it + 1) % period == 0:
                curriculum.step()

        on_step = advance_curriculum
    elif name in ("oracle", "irflow"):
        data, extra = clean, None
        kwargs = dict(target="direct") if name == "oracle" else dict(target="cvf", mct_weight=0.3, mct_steps=(2, 4))
        objective = CumulativeVelocityFlow(task.oracle_degrade, level_range=task.oracle_range, **kwargs)
    elif name == "flowmap":
        data, extra = clean, None  # the noise levels of the test inputs: about 0.01 - 0.15 in network units
        net = DenoiserFlowMap(net, sigma_data=0.5 if task.name == "CT" else 0.35)
        objective = FlowMapDistillation(teacher="snapshot", warmup_iterations=cfg.iterations // 2, sigma_range=(0.005, 0.2))
    else:
        raise ValueError(f"unknown method {name!r}; choose from {ALL_METHODS}.")
    seconds = train(objective, net, data.to(cfg.device), cfg.iterations, cfg.batch, seed, on_step, extra)
    info = {"train_s": round(seconds)}
    run = lambda inferer: lambda y, std: inferer(y.to(cfg.device), net).cpu()  # noqa: E731

    if name in ("simsdl", "n2n", "oracle"):
        label = {"simsdl": "SimSDL", "n2n": "Noise2Noise-style", "oracle": "oracle (clean targets)"}[name]
        return {label: (run(RestorationInferer(1, target="direct")), info)}
    if name == "irflow":
        return {"IR-Flow, 2 steps (clean targets)": (run(RestorationInferer(2, target="cvf")), info)}
    if name == "flowmap":
        return {"flow map, lookahead 0 (clean targets)": (
            lambda y, std: FlowMapDenoiser(lookahead=0.0, sigma=std)(y.to(cfg.device), net).cpu(), info)}
    # RelativeFlow: three schedules, each tuned on validation
    dt_max = cfg.relflow_dt_max
    one = {f"dt {d:g}": (d,) for d in (0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0) if d <= dt_max}
    three = {f"gap {g:g}": tuple(relative_dt_schedule(g, max_dt=dt_max, min_dt=g / 7))
             for g in (0.35, 0.7, 1.05, 1.4, 2.1, 2.8, 3.5) if g <= 1.75 * dt_max}
    full_std = np.median([true_noise_std(task, task.simulate(c[None], task.reference_range[1]), c[None]) for c in task.val])
    auto = {f"target {f:g} x full-quality std": f * full_std for f in (0.125, 0.25, 0.5, 1.0)}
    operator = task.relflow_operator or task.operator

    def in_domain(inferer):  # the network works in its operator's domain (MR second moment); the input's s is estimated
        if not callable(getattr(operator, "to_domain", None)) or operator.domain == "magnitude":
            return inferer
        return DomainInferer(inferer, operator, noise_estimator=task.input_std)

    fixed = lambda dts: run(in_domain(RelativeFlowInferer(dt_schedule=dts)))  # noqa: E731

    def adaptive(target):  # the step count follows the input's noise std, given like BM3D's (a ratio: any domain)
        def denoise(y, std):
            inferer = RelativeFlowInferer("auto", noise_estimator=lambda x: torch.full((x.shape[0],), std),
                                          target_std=target, max_dt=dt_max, min_dt=0.05)
            return in_domain(inferer)(y.to(cfg.device), net).cpu()

        return denoise

    rows = {}
    for label, grid, make in (("RelativeFlow, 1 step", one, fixed), ("RelativeFlow, 3 steps", three, fixed),
                              ("RelativeFlow, auto (true std)", auto, adaptive)):
        den, chosen = best_on_validation(task, grid, make, per_level=False, seed=seed)
        rows[label] = (den, {**info, **chosen})
    return rows


# ------------------------------------------------------------------------------------ running
def evaluate(task: Task, rows: dict, seed: int) -> tuple[list[dict], dict]:
    """Score every row on every test image and level; also keep outputs of the first image."""
    gen = torch.Generator().manual_seed(20_000 + seed)
    tests = [(name, lvl, c, task.simulate(c[None], lvl, generator=gen)) for lvl in task.levels for name, c in task.test]
    results, examples = [], {}
    for label, (den, info) in rows.items():
        with torch.no_grad():
            den(tests[0][3], true_noise_std(task, tests[0][3], tests[0][2][None]))  # warm-up, untimed
        for name, lvl, c, y in tests:
            start = time.perf_counter()
            with torch.no_grad():
                out = den(y, true_noise_std(task, y, c[None]))
            seconds = time.perf_counter() - start
            results.append({"task": task.name, "method": label, "level": lvl, "image": name, "seed": seed,
                            "seconds": seconds, **score(task, out[0], c)})
            if name == task.test[-1][0] and lvl == task.levels[1]:
                examples[label] = out[0, 0]
    mid = [t for t in tests if t[0] == task.test[-1][0] and t[1] == task.levels[1]][0]
    examples["_clean"], examples["_noisy"] = mid[2][0], mid[3][0, 0]
    return results, examples


def summarise(results: list[dict], tasks: list[Task], infos: dict) -> str:
    lines = []
    for task in tasks:
        rows = [r for r in results if r["task"] == task.name]
        methods = list(dict.fromkeys(r["method"] for r in rows))
        lines += [f"**{task.name}** (PSNR dB / SSIM, mean ± sd over {len(task.test)} test images"
                  f" x {len({r['seed'] for r in rows})} seed(s); RMSE in {'HU' if task.name == 'CT' else '% of max'})", "",
                  "| method | " + " | ".join(task.level_text(l) for l in task.levels) + " | RMSE at " + task.level_text(task.levels[1])
                  + " | ms / slice | train s | chosen on validation |",
                  "|---|" + "---|" * (len(task.levels) + 4)]
        for m in methods:
            cells = []
            for lvl in task.levels:
                sel = [r for r in rows if r["method"] == m and r["level"] == lvl]
                p, s = np.array([r["psnr"] for r in sel]), np.array([r["ssim"] for r in sel])
                cells.append(f"{p.mean():.2f} ± {p.std():.2f} / {s.mean():.3f}")
            mid = [r["rmse"] for r in rows if r["method"] == m and r["level"] == task.levels[1]]
            ms = 1000 * np.median([r["seconds"] for r in rows if r["method"] == m])
            info = dict(infos.get((task.name, m), {}))
            train_s = info.pop("train_s", "-")
            chosen = "; ".join(f"{k}: {v}" for k, v in info.items()) or "-"
            lines.append(f"| {m} | " + " | ".join(cells) + f" | {np.mean(mid):.1f} | {ms:.0f} | {train_s} | {chosen} |")
        lines.append("")
    return "\n".join(lines)


def plot(results: list[dict], tasks: list[Task], examples: dict, out_prefix: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = f"{out_prefix}_psnr.png"
    fig, axes = plt.subplots(1, len(tasks), figsize=(6.5 * len(tasks), 4.5), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        rows = [r for r in results if r["task"] == task.name]
        for i, m in enumerate(dict.fromkeys(r["method"] for r in rows)):
            ys = [np.mean([r["psnr"] for r in rows if r["method"] == m and r["level"] == l]) for l in task.levels]
            style = "-" if "RelativeFlow" in m else ("--" if "clean targets" in m else ":")
            ax.plot(range(len(task.levels)), ys, style, marker="o", label=m, color=plt.cm.tab20(i % 20))
        ax.set(xticks=range(len(task.levels)), xticklabels=[task.level_text(l) for l in task.levels],
               xlabel="test input noise level", ylabel="PSNR (dB)", title=task.name)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    Path(curve).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(curve, dpi=100)
    plt.close(fig)

    panel = f"{out_prefix}_panel.png"
    shown = ["_clean", "_noisy", "BM3D (true std)", "SimSDL", "RelativeFlow, 3 steps", "RelativeFlow, auto (true std)", "oracle (clean targets)"]
    fig, axes = plt.subplots(len(tasks), len(shown), figsize=(2.3 * len(shown), 2.5 * len(tasks)), squeeze=False)
    for row, task in zip(axes, tasks):
        ex = examples[task.name]
        window = (-0.16, 0.24) if task.name == "CT" else (0.0, 1.0)  # CT soft-tissue window for display
        for ax, key in zip(row, shown):
            ax.axis("off")
            if key in ex:
                ax.imshow(ex[key].numpy(), cmap="gray", vmin=window[0], vmax=window[1])
                ax.set_title({"_clean": f"{task.name} noise-free", "_noisy": task.level_text(task.levels[1])}.get(key, key), fontsize=8)
    fig.tight_layout()
    fig.savefig(panel, dpi=100)
    plt.close(fig)
    return [curve, panel]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small network, 1 seed, 200 iterations")
    parser.add_argument("--iterations", type=int)
    parser.add_argument("--seeds", type=int, nargs="+")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--num-train", type=int, help="noisy training references per modality (phantoms; + 1 real slice)")
    parser.add_argument("--num-val", type=int)
    parser.add_argument("--num-test", type=int, help="test phantoms per modality (+ 1 real slice)")
    parser.add_argument("--modalities", nargs="+", default=["CT", "MR"], choices=["CT", "MR"])
    parser.add_argument("--methods", nargs="+", default=list(ALL_METHODS), choices=ALL_METHODS)
    parser.add_argument("--i0", type=float, default=2e4, help="CT photons per detector bin at dose 1")
    parser.add_argument("--ct-reference-i0", default="known", choices=["known", "estimate"],
                        help="CT operator: each reference's photon count from its exposure, or estimated from its noise")
    parser.add_argument("--mr-reference-std", default="estimate", choices=["estimate", "background", "known"],
                        help="MR operator: each reference's noise std estimated (background fit or high-frequency, "
                             "estimate_mr_noise_std), from the background fit only (the former estimator), or the simulated value")
    parser.add_argument("--mr-domain", default="magnitude", choices=["magnitude", "second_moment"],
                        help="RelativeFlow's MR operator domain (MRDegradation(domain=...)); baselines stay in magnitude")
    parser.add_argument("--relflow-dt-max", type=float, default=2.0,
                        help="RelativeFlow's largest training step dt. With the calibrated quality time a step dt is trained "
                             "on a degradation of dt / 2: 2.0 covers the same noise range as SimSDL / N2N (levels <= 1)")
    parser.add_argument("--time-scale", type=float, default=1000.0, help="VelocityUNet time_scale (dt or t is multiplied by it)")
    parser.add_argument("--no-curriculum", dest="curriculum", action="store_false",
                        help="RelativeFlow: train on the final dt range from the start")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out-md", default="docs/results/denoise_quality.md")
    parser.add_argument("--out-img", default="docs/img/denoise_quality", help="prefix of the two PNGs")
    args = parser.parse_args(argv)
    for key, value in PRESETS["quick" if args.quick else "full"].items():
        attr = key.replace("-", "_")
        if getattr(args, attr, None) is None:
            setattr(args, attr, value)
    args.device = torch.device(args.device)
    return args


def main(argv=None) -> str:
    args = parse_args(argv)
    start = time.perf_counter()
    builders = {"CT": lambda: ct_task(args.num_train, args.num_val, args.num_test, args.i0, args.ct_reference_i0),
                "MR": lambda: mr_task(args.num_train, args.num_val, args.num_test, args.mr_reference_std, args.mr_domain)}
    tasks = [builders[m]() for m in args.modalities]
    results, infos, examples = [], {}, {}
    for task in tasks:
        for seed in args.seeds:
            refs, ref_values = noisy_references(task, seed)
            rows = {}
            for method in args.methods:
                fitted = fit_method(method, task, refs, ref_values, args, seed)
                rows.update(fitted)
                for label, (_, info) in fitted.items():
                    infos.setdefault((task.name, label), info)
                print(f"[{time.perf_counter() - start:6.0f} s] {task.name} seed {seed}: {method} ready", flush=True)
            res, ex = evaluate(task, rows, seed)
            results += res
            examples.setdefault(task.name, ex)
    device = torch.cuda.get_device_name(args.device) if args.device.type == "cuda" else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    header = (f"{'Quick' if args.quick else 'Full'} mode on {device}, torch {torch.__version__}: "
              f"{args.iterations} iterations x batch {args.batch}, VelocityUNet channels {tuple(args.channels)}, "
              f"{args.num_train} phantom + 1 real noisy references per modality, seeds {list(args.seeds)}, "
              f"CT i0 {args.i0:g} at {CT_SPACING_MM} mm pixels, CT reference i0 {args.ct_reference_i0}, MR reference std "
              f"{args.mr_reference_std}, MR RelativeFlow domain {args.mr_domain}, RelativeFlow dt_max {args.relflow_dt_max:g}, time_scale "
              f"{args.time_scale:g}, curriculum {'on' if args.curriculum else 'off'}; total {time.perf_counter() - start:.0f} s.\n")
    text = header + "\n" + summarise(results, tasks, infos)
    images = plot(results, tasks, examples, args.out_img)
    Path(args.out_md).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out_md).write_text(text)
    print(text)
    print(f"wrote {args.out_md}, {', '.join(images)}")
    return text


if __name__ == "__main__":
    main()
