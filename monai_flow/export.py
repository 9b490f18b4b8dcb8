"""Deployment export: a trained denoiser plus a fixed few-step solver as one TorchScript file.

:class:`FlowDenoiser` wraps a trained network and a RelativeFlow or IR-Flow inferer with a
fixed step schedule into an ``nn.Module`` with one tensor in and one tensor out;
:func:`export_denoiser` builds it from a bundle's ``inference.json`` and its weights and writes
it as TorchScript, which runs with ``torch.jit.load`` alone (no MONAI, no monai-flow)::

    python -m monai_flow.export ct_denoise ct_denoiser.ts --steps 3
    denoiser = torch.jit.load("ct_denoiser.ts")      # torch only
    clean = denoiser(noisy_slices)                    # (B, 1, H, W) -> (B, 1, H, W)

What the file computes, for the schedules fixed at export:

- RelativeFlow (``ct_denoise``, ``mr_denoise``), quality time, larger is cleaner: for each dt of
  the schedule ``x <- x + (e^dt - 1) N(x, dt)`` (:meth:`RelativeFlowInferer.apply_step`).
- IR-Flow (``ct_restore``), t = 0 degraded to t = 1 clean on a uniform grid:
  ``x <- x + (t1 - t0) / (1 - t0) N(x, t0)`` (Euler; Heun if the bundle says so,
  :meth:`RestorationInferer.apply_step`).

The update code is the inferers' own: :class:`FlowDenoiser` runs ``inferer.step_sequence`` and
``inferer.integrate``, so the export cannot drift from ``monai_flow.inferers``.

Shapes and units: the bundles' CT networks are 2D slice networks, and the export is the 2D
one: ``(B, C, H, W)`` in, the same out, H and W divisible by the network's
``spatial_divisor`` (4 for the bundles), any batch size and any H, W (the batch is the slice
axis: denoise a volume ``(C, H, W, D)`` as ``out = m(v.permute(3, 0, 1, 2)).permute(1, 2, 3, 0)``,
in chunks of slices to bound memory). A 3D bundle (``mr_denoise``) exports its 3D network,
``(B, C, H, W, D)``. Values are in the network's units, not HU: the bundles feed
``(HU + 1000) / 1000`` for CT; the metadata records the bundle's intensity scaling.

Why tracing and not ``torch.jit.script``: scripting fails on MONAI's ``DiffusionModelUNet``
itself (``SpatialAttentionBlock.forward`` calls ``x.reshape(*shape[:2], -1)``: "cannot statically
infer the expected size of a list"), ``VelocityUNet.forward`` passes ``**kwargs``, and
:class:`FlowDenoiser` reuses the inferers' Python step code, which is not TorchScript. A trace of
a fixed schedule is exact: it unrolls the K steps with the dt (or t) values as constants. Batch
size and spatial sizes stay dynamic (tested on other sizes than the tracing example); the input
check (rank, channels, divisibility) is a scripted function, so it survives the trace. A trace
records the device it was made on (``VelocityUNet`` creates its time tensors on the input's
device): export with ``device="cuda"`` to run on a GPU.

Metadata (``_extra_files``, read back with ``torch.jit.load(path, _extra_files={"metadata.json": ""})``):
bundle, method, schedule (dt list or time grid), solver, input shape, intensity scaling,
checkpoint, export method and versions.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from monai_flow.atomic import write_atomically
from monai_flow.inferers import RelativeFlowInferer, RestorationInferer
from monai_flow.checkpoints import load_network_weights
from monai_flow.inferers.schedules import relative_template_schedule

__all__ = ["FlowDenoiser", "METADATA_FILE", "export_denoiser", "load_metadata"]

METADATA_FILE = "metadata.json"


@torch.jit.script
def _checked(x: torch.Tensor, ndim: int, channels: int, divisor: int) -> torch.Tensor:
    """``x`` unchanged, or a clear error for a wrong rank, channel count or spatial size (scripted)."""
    if x.dim() != ndim:
        raise ValueError("expected an input of rank " + str(ndim) + " (B, C, spatial...), got rank " + str(x.dim()))
    if x.size(1) != channels:
        raise ValueError("expected " + str(channels) + " channel(s), got " + str(x.size(1)))
    for d in range(2, ndim):
        if x.size(d) % divisor != 0:
            raise ValueError("every spatial size must be divisible by " + str(divisor) + ", got " + str(x.size(d)))
    return x


class FlowDenoiser(nn.Module):
    """``FlowDenoiser(network, inferer)(x)``: a few-step flow denoiser as one module.

    Args:
        network: the trained network ``network(x, t) -> Tensor`` shaped like ``x``, e.g. the
            2D ``VelocityUNet`` of a bundle (``network_def``).
        inferer: a :class:`RelativeFlowInferer` with a fixed ``dt_schedule`` (quality time,
            larger is cleaner; the network gets dt) or a :class:`RestorationInferer` (t = 0
            degraded, t = 1 clean; the network gets t). ``dt_schedule="auto"`` depends on the
            input's noise estimate and is refused: pick a fixed schedule.
        in_channels, spatial_dims, spatial_divisor: the input contract checked in ``forward``;
            default to the network's attributes (``VelocityUNet`` has them), else 1, 2, 1.

    ``forward(x)``: x (B, C, *spatial) in the network's units; returns the denoised /
    restored tensor of the same shape, computed with ``inferer.step_sequence`` and
    ``inferer.integrate`` (no guidance, no conditioning).
    """

    def __init__(
        self,
        network: nn.Module,
        inferer: RelativeFlowInferer | RestorationInferer,
        in_channels: int | None = None,
        spatial_dims: int | None = None,
        spatial_divisor: int | None = None,
    ) -> None:
        super().__init__()
        if isinstance(inferer, RelativeFlowInferer):
            if inferer.dt_schedule == "auto":
                raise ValueError(
                    "dt_schedule='auto' depends on each input's noise estimate and cannot be exported; "
                    "give a fixed schedule (steps=N or dt_schedule=[...])."
                )
        elif not isinstance(inferer, RestorationInferer):
            raise ValueError(
                "FlowDenoiser exports RelativeFlowInferer (denoising) or RestorationInferer (IR-Flow) schedules, "
                f"got {type(inferer).__name__}."
            )
        self.network = network
        self.inferer = inferer
        self.in_channels = int(in_channels or getattr(network, "in_channels", 1))
        self.spatial_dims = int(spatial_dims or getattr(network, "spatial_dims", 2))
        divisor = spatial_divisor or getattr(network, "spatial_divisor", 1)
        if not isinstance(divisor, int):
            raise ValueError(f"spatial_divisor must be one int for all axes, got {divisor!r}.")
        self.spatial_divisor = divisor

    @property
    def method(self) -> str:
        return "relative_flow" if isinstance(self.inferer, RelativeFlowInferer) else "restoration"

    def schedule(self) -> dict[str, Any]:
        """The fixed schedule, as recorded in the export metadata."""
        if isinstance(self.inferer, RelativeFlowInferer):
            return {"dt_schedule": list(self.inferer.dt_schedule), "update": "x + (exp(dt) - 1) * N(x, dt)",
                    "time": "quality time, larger is cleaner; the network gets dt"}
        inferer = self.inferer
        factor = "(t1 - t0)" if inferer.target == "rectified" else "(t1 - t0) / (1 - t0)"
        return {"time_grid": [float(t) for t in inferer.time_grid], "solver": inferer.solver, "target": inferer.target,
                "update": f"x + {factor} * N(x, t0)" + (" (Heun: averaged with the end of the step)" if inferer.solver == "heun" else ""),
                "time": "t = 0 degraded, t = 1 clean; the network gets t"}

    def example_input(self, batch: int = 2, size: int | None = None) -> torch.Tensor:
        """A random input of the expected rank and channels (for tracing)."""
        size = size or 4 * self.spatial_divisor
        return torch.rand(batch, self.in_channels, *([size] * self.spatial_dims))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _checked(x, self.spatial_dims + 2, self.in_channels, self.spatial_divisor)
        steps = self.inferer.step_sequence(x)
        return self.inferer.integrate(lambda state, t: self.network(state, t), x, steps)


def _trace(module: FlowDenoiser, device: torch.device) -> torch.jit.ScriptModule:
    """``torch.jit.trace`` of ``module`` on a random example on ``device`` (see the module docstring for why)."""
    example = module.example_input().to(device)
    with torch.no_grad(), warnings.catch_warnings():
        # the schedule's step sizes are constants of the trace, which is what a fixed schedule means
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        return torch.jit.trace(module, example, check_trace=False)


def _intensity(parser) -> dict[str, Any] | None:
    """The bundle's ``ScaleIntensityRanged`` settings (network units from HU), if it has one; the
    values may be config references (``"@hu_offset"``) or expressions, which are resolved."""
    try:
        transforms = parser["preprocessing"]["transforms"]
    except (KeyError, TypeError):
        return None
    for i, t in enumerate(transforms if isinstance(transforms, list) else []):
        if isinstance(t, dict) and str(t.get("_target_", "")).endswith("ScaleIntensityRanged"):
            keys = ("a_min", "a_max", "b_min", "b_max")
            try:
                values = {k: float(parser.get_parsed_content(f"preprocessing#transforms#{i}#{k}")) for k in keys}
            except (KeyError, TypeError, ValueError):
                return None
            return {"transform": "ScaleIntensityRanged", **values,
                    "meaning": "network = (value - a_min) / (a_max - a_min) * (b_max - b_min) + b_min"}
    return None


def export_denoiser(
    bundle: str,
    output: str,
    checkpoint: str | None = None,
    steps: int | None = None,
    bundle_root: str | None = None,
    overwrite: bool = False,
    dt_schedule: list[float] | None = None,
    device: str = "cpu",
) -> Path:
    """Write a bundle's trained denoiser with a fixed solver schedule as a TorchScript file.

    Args:
        bundle: bundle name (``"ct_denoise"``, ``"ct_restore"``, ``"mr_denoise"``) or a bundle folder.
        output: the ``.ts`` file to write; written to a temporary sibling and renamed.
        checkpoint: network weights (a state_dict or a training checkpoint with ``"model"``);
            default: the bundle's ``ckpt_path`` (``models/model.pt``).
        steps: number of solver steps; default: the bundle's schedule. RelativeFlow: the
            bundle's total dt in ``steps`` coarse-to-fine steps (``RelativeFlowInferer(num_steps=...)``, as
            ``monai-flow denoise --steps``), or for an ``auto`` bundle the ``steps``-step template
            of :func:`relative_template_schedule`; IR-Flow: ``steps`` uniform steps from t = 0 to 1.
        bundle_root: the bundle folder holding ``configs/`` (default: found from ``bundle``).
        overwrite: replace an existing ``output`` (otherwise ``FileExistsError``).
        dt_schedule: RelativeFlow only: an explicit list of step sizes (instead of ``steps``).
        device: device to trace on; the file runs on that kind of device.

    Returns:
        the path written. Raises ``FileExistsError``, ``FileNotFoundError``, or ``ValueError``
        (``monai_flow.checkpoints.CheckpointError`` for weights that do not fit) with the reason.
    """
    from monai_flow.bundle import Bundle

    out = Path(output).expanduser()
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True (--overwrite) to replace it.")
    if out.is_dir():
        raise IsADirectoryError(f"output {out} is a folder; give a file name such as denoiser.ts.")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"the folder of {out} does not exist.")
    if steps is not None and dt_schedule is not None:
        raise ValueError("give steps or dt_schedule, not both.")
    config = Bundle(bundle, bundle_root)
    name, parser = config.name, config.parser
    for key in ("network_def", "flow_inferer"):
        if not config.has(key):
            raise ValueError(f"bundle '{name}' has no '{key}' in configs/inference.json: not a flow denoising bundle.")
    inferer = config.get("flow_inferer")
    if not isinstance(inferer, (RelativeFlowInferer, RestorationInferer)):
        raise ValueError(
            f"bundle '{name}' infers with {type(inferer).__name__}; export supports RelativeFlow denoising "
            "(ct_denoise, mr_denoise) and IR-Flow restoration (ct_restore)."
        )
    if isinstance(inferer, RelativeFlowInferer):
        if dt_schedule is not None:
            schedule = [float(d) for d in dt_schedule]
        elif inferer.dt_schedule != "auto":  # the bundle's total dt, in `steps` steps if given
            fixed = RelativeFlowInferer(inferer.dt_schedule, max_dt=inferer.max_dt, min_dt=inferer.min_dt, num_steps=steps)
            schedule = fixed.dt_table(torch.zeros(1))[0].tolist()
        elif steps is not None:  # an adaptive schedule has no fixed total: the N-step template
            schedule = relative_template_schedule(steps, inferer.max_dt, inferer.min_dt)
        else:
            raise ValueError(f"bundle '{name}' uses dt_schedule='auto', which cannot be exported: pass steps=N or dt_schedule=[...].")
        inferer = RelativeFlowInferer(schedule, max_dt=inferer.max_dt, min_dt=inferer.min_dt)
    else:
        if dt_schedule is not None:
            raise ValueError("dt_schedule applies to RelativeFlow bundles; use steps for IR-Flow restoration.")
        grid = None if steps is not None else inferer.time_grid.tolist()
        inferer = RestorationInferer(num_steps=steps or 1, solver=inferer.solver, target=inferer.target, time_grid=grid)

    network = config.get("network_def")
    ckpt = Path(checkpoint).expanduser() if checkpoint is not None else Path(config.get("ckpt_path"))
    load_network_weights(network, ckpt, map_location="cpu")
    torch_device = torch.device(device)
    denoiser = FlowDenoiser(network, inferer).to(torch_device).eval()
    scripted = _trace(denoiser, torch_device)

    metadata = {
        "bundle": name,
        "method": denoiser.method,
        **denoiser.schedule(),
        "input": {"shape": "(B, C, " + ", ".join("HWD"[: denoiser.spatial_dims]) + ")",
                  "channels": denoiser.in_channels, "spatial_divisor": denoiser.spatial_divisor},
        "intensity": _intensity(parser),
        "checkpoint": str(ckpt.resolve()),
        "export": {"method": "torch.jit.trace", "device": str(torch_device),
                   "note": "fixed schedule unrolled; batch and spatial sizes dynamic; runs on this device type"},
        "versions": {"torch": torch.__version__, "monai_flow": _version()},
    }
    def write(tmp: str) -> None:
        torch.jit.save(scripted, tmp, _extra_files={METADATA_FILE: json.dumps(metadata, indent=2)})
        if out.exists() and not overwrite:  # appeared while exporting
            raise FileExistsError(f"{out} exists; pass overwrite=True (--overwrite) to replace it.")

    write_atomically(out, write)
    return out


def load_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata dict stored in an exported file."""
    extra = {METADATA_FILE: ""}
    torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    return json.loads(extra[METADATA_FILE])


def _version() -> str:
    from monai_flow import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    """``python -m monai_flow.export BUNDLE OUTPUT [--steps N] [--checkpoint PATH] ...``."""
    p = argparse.ArgumentParser(
        prog="python -m monai_flow.export",
        description="Export a bundle's trained denoiser (network + fixed solver steps) as TorchScript: "
        "torch.jit.load(OUTPUT)(x) with x of shape (B, C, H, W) in the network's units.",
    )
    p.add_argument("bundle", help="bundle name (ct_denoise, ct_restore, mr_denoise) or bundle folder")
    p.add_argument("output", help="TorchScript file to write (e.g. denoiser.ts)")
    p.add_argument("--checkpoint", help="network weights (default: the bundle's models/model.pt)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--steps", type=int, help="solver steps (default: the bundle's schedule)")
    group.add_argument("--dt-schedule", type=float, nargs="+", metavar="DT", help="RelativeFlow step sizes, e.g. 0.2 0.1 0.05")
    p.add_argument("--bundle-root", help="bundle folder holding configs/ (default: found from the name)")
    p.add_argument("--device", default="cpu", help="device to trace on (default: cpu)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUTPUT")
    args = p.parse_args(argv)
    try:
        path = export_denoiser(args.bundle, args.output, checkpoint=args.checkpoint, steps=args.steps,
                               bundle_root=args.bundle_root, overwrite=args.overwrite,
                               dt_schedule=args.dt_schedule, device=args.device)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    meta = load_metadata(path)
    print(f"wrote {path} ({meta['method']}, {meta['export']['method']}, "
          f"{meta.get('dt_schedule') or meta.get('time_grid')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
