"""Denoising many volumes with several processes (``torchrun``): disjoint shards, atomic outputs, reruns
that finish what is missing.

``torchrun --nproc_per_node=N -m monai_flow.cli denoise INPUT OUTPUT --bundle NAME`` (or a bundle's
``multi_gpu_inference.json`` overlay, :func:`run_bundle_inference`) starts N processes; torchrun sets
``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (:func:`rank_info`). Every process lists the same inputs in
the same order and takes every N-th one from its rank on (:func:`shard`), so no input is done twice or
skipped, and no message passing is needed to split the work. Inputs whose outputs all exist are skipped
(:func:`finished`): a rerun after a crash, a killed process or a lost node does only what is missing,
with any number of processes. Outputs are written under temporary names and renamed when complete
(:mod:`monai_flow.atomic`), so an output that exists is a whole one.

A failing input is reported and skipped by its process. A process that fails as a whole (e.g. its GPU)
reports the inputs it leaves undone and still waits for the others: its exit status (1) reaches torchrun
only when every process is done, because torchrun stops all processes as soon as one exits with an
error. The processes meet twice, in a process group (``nccl`` on GPUs, ``gloo`` on CPUs,
:class:`ProcessGroup`): never before the work (so nothing waits for a slow start) and once at the end, to
collect what each did; rank 0 prints the summary. A process that is killed (signal, out of memory) makes
torchrun stop the others; a rerun finishes their inputs.

Multi-node: the standard torchrun rendezvous, the same command on every node::

    torchrun --nnodes=2 --nproc_per_node=8 --rdzv_backend=c10d --rdzv_endpoint=HOST:29400 --rdzv_id=job1 \\
        -m monai_flow.cli denoise /shared/in /shared/out --bundle mr_denoise

(inputs and outputs on a file system every node sees).
"""

from __future__ import annotations

import datetime
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "ProcessGroup",
    "RankInfo",
    "backend_for",
    "finished",
    "local_device",
    "rank_info",
    "remove_stale_partials",
    "run_bundle_inference",
    "shard",
    "terminate_as_interrupt",
]

TIMEOUT_ENV = "MONAI_FLOW_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 7 * 24 * 3600.0  # processes wait for each other at the end: a long shard must not time out


@dataclass(frozen=True)
class RankInfo:
    """This process's place among the torchrun processes (``rank`` of ``world_size``, GPU ``local_rank``)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def prefix(self) -> str:
        """``"[rank r/N] "`` in distributed runs, ``""`` otherwise."""
        return f"[rank {self.rank}/{self.world_size}] " if self.distributed else ""


def rank_info(environ: dict | None = None) -> RankInfo:
    """The ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` that torchrun sets (a single process without them)."""
    env = os.environ if environ is None else environ
    try:
        world = int(env.get("WORLD_SIZE", 1))
        rank = int(env.get("RANK", 0))
        local = int(env.get("LOCAL_RANK", rank if world > 1 else 0))
    except ValueError as e:
        raise ValueError(f"RANK / WORLD_SIZE / LOCAL_RANK must be integers (set by torchrun): {e}") from e
    if world < 1 or not 0 <= rank < world or local < 0:
        raise ValueError(f"invalid torchrun environment: RANK={rank}, WORLD_SIZE={world}, LOCAL_RANK={local}.")
    return RankInfo(rank, world, local)


def shard(items: Sequence, rank: int, world_size: int) -> list:
    """Every ``world_size``-th item from index ``rank`` on: the shards of all ranks are disjoint and
    cover ``items`` (the same list, in the same order, on every rank)."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}.")
    return [item for i, item in enumerate(items) if i % world_size == rank]


def finished(targets: Sequence[Path]) -> bool:
    """All outputs of an input exist (they are only ever renamed into place when complete)."""
    return bool(targets) and all(os.path.lexists(t) for t in targets)


def remove_stale_partials(targets: Sequence[Path]) -> int:
    """Remove the hidden temporary files / folders (``.<name>.partial-*``) that a killed process left next
    to ``targets``, the outputs of an input this process is about to redo (its shard is its own, so no
    live process is writing them). Returns how many were removed."""
    from monai_flow.atomic import PARTIAL, discard

    removed = 0
    for target in targets:
        target = Path(target)
        base = target.name
        for ext in (".nii.gz", ".nii"):
            if base.endswith(ext):
                base = base[: -len(ext)]
                break
        if not target.parent.is_dir():
            continue
        for stale in target.parent.glob(f".{base}{PARTIAL}*"):
            discard(stale)
            removed += 1
    return removed


def local_device(device: str | None = None, info: RankInfo | None = None) -> str:
    """The device of this process: ``cuda:LOCAL_RANK`` when CUDA is available (or ``device`` is ``"cuda"``),
    else ``device`` or ``"cpu"``. An explicit ``cuda:N`` is kept."""
    import torch

    info = info or rank_info()
    if device is None:
        return f"cuda:{info.local_rank}" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        return f"cuda:{info.local_rank}"
    return str(device)


def backend_for(device: str) -> str:
    """``nccl`` for CUDA devices, ``gloo`` otherwise."""
    return "nccl" if str(device).startswith("cuda") else "gloo"


class ProcessGroup:
    """The ``torch.distributed`` process group of a torchrun job, only when there are several processes.

    ``with ProcessGroup(info, device) as group:`` initialises it (``env://``, the variables torchrun sets;
    timeout ``$MONAI_FLOW_DIST_TIMEOUT`` seconds, default 7 days, because processes wait for each other
    at the end) unless it exists already, and destroys what it created. :meth:`gather` collects one
    Python object per rank (rank order); with one process it returns ``[obj]`` and nothing is initialised.
    """

    def __init__(self, info: RankInfo, device: str = "cpu", timeout_s: float | None = None) -> None:
        self.info, self.device = info, str(device)
        self.timeout_s = float(timeout_s if timeout_s is not None else os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S))
        self.owned = False

    def __enter__(self) -> ProcessGroup:
        if not self.info.distributed:
            return self
        import torch
        import torch.distributed as dist

        if self.device.startswith("cuda"):
            torch.cuda.set_device(torch.device(self.device))
        if not dist.is_initialized():
            dist.init_process_group(backend=backend_for(self.device),
                                    timeout=datetime.timedelta(seconds=self.timeout_s))
            self.owned = True
        return self

    def gather(self, obj: Any) -> list:
        if not self.info.distributed:
            return [obj]
        import torch.distributed as dist

        out: list = [None] * self.info.world_size
        dist.all_gather_object(out, obj)
        return out

    def __exit__(self, *exc) -> None:
        if self.owned:
            import torch.distributed as dist

            dist.destroy_process_group()
            self.owned = False


def run_shard(make_denoiser: Callable[[], Any], items: list[dict], out, dicom: bool, overwrite: bool,
              force_modality: bool, verbose: bool, info: RankInfo, group: ProcessGroup,
              skip_finished: bool = True) -> tuple[list[Path], list[tuple[dict, str]], int, list]:
    """This rank's share of ``items``: build the denoiser (``make_denoiser()``), skip finished inputs,
    denoise the rest one at a time (:func:`monai_flow.cli.pipeline.denoise_items`), then meet the other
    ranks. Returns (this rank's written paths, this rank's failures, inputs skipped as finished by this
    rank, every rank's report ``(rank, written, [(name, reason)], skipped)``)."""
    from monai_flow.cli.errors import print_error
    from monai_flow.cli.inputs import display_name
    from monai_flow.cli.pipeline import denoise_items

    mine = shard(items, info.rank, info.world_size)
    written: list[Path] = []
    failed: list[tuple[dict, str]] = []
    skipped = 0
    try:
        denoiser = make_denoiser()
        todo = []
        for item in mine:
            targets = denoiser.targets(item, out.path, dicom)
            if skip_finished and not overwrite and finished(targets):
                skipped += 1
            elif not overwrite and any(os.path.lexists(t) for t in targets):
                done = ", ".join(str(t) for t in targets if os.path.lexists(t))
                failed.append((item, f"some outputs exist ({done}) and others do not; remove them or pass --overwrite"))
            else:
                remove_stale_partials(targets)
                todo.append(item)
        if skipped:
            print(f"{info.prefix()}skipped {skipped} input(s) whose outputs exist", file=sys.stderr, flush=True)
        w, f = denoise_items(denoiser, todo, out, dicom, overwrite, force_modality, verbose, prefix=info.prefix())
        written += w
        failed += f
    except Exception as e:  # the whole rank failed: report its undone inputs, still meet the others
        reason = f"{info.prefix()}stopped: {type(e).__name__}: {e}"
        print_error(reason)
        listed = {id(it) for it, _ in failed}
        failed += [(item, reason) for item in mine if id(item) not in listed]
        if verbose:
            import traceback

            traceback.print_exc()
    report = (info.rank, [str(p) for p in written], [(display_name(it), why) for it, why in failed], skipped)
    return written, failed, skipped, group.gather(report)


def run_bundle_inference(name: str, datalist: list[dict], preprocessing, postprocessing, network, inferer,
                         device, output_dir: str, network_def=None, ckpt_path: str | None = None,
                         overwrite: bool = False, save_dicom: bool = False) -> int:
    """The ``run`` of a bundle's ``multi_gpu_inference.json``: this rank's shard of ``datalist``, denoised
    with the bundle's own components and written atomically into ``output_dir`` (as ``monai-flow denoise``
    writes them: ``<name>_<postfix><ext>``), finished inputs skipped. Loads ``ckpt_path`` into
    ``network_def`` (safe loader) first. Raises ``RuntimeError`` naming the failed inputs after all ranks
    are done, so that the job's exit status says so."""
    from monai_flow.cli.pipeline import VolumeDenoiser
    from monai_flow.cli.safe_io import OutputFolder

    info = rank_info()
    device = str(device)
    if info.distributed:
        terminate_as_interrupt()
    with ProcessGroup(info, device) as group:
        out = OutputFolder(output_dir)
        out.prepare()

        def make():
            if ckpt_path is not None and network_def is not None:
                from monai_flow.checkpoints import load_network_weights

                load_network_weights(network_def, ckpt_path, map_location=device)
            return VolumeDenoiser(name, preprocessing, postprocessing, network.eval(), inferer, device)

        items = [dict(it, name=it.get("name") or _stem(it["image"])) for it in datalist]
        _, _, _, reports = run_shard(make, items, out, save_dicom, overwrite, False, False, info, group)
    failures = [f for r in reports for f in r[2]]
    if info.is_main:
        _summary(reports, Path(output_dir))
    if failures:
        raise RuntimeError(f"{len(failures)} input(s) failed: " + "; ".join(f"{n}: {why}" for n, why in failures[:10]))
    return 0


def terminate_as_interrupt() -> None:
    """Turn SIGTERM (what torchrun sends the other processes when one fails) into ``KeyboardInterrupt``, so
    that the output being written is removed as on Ctrl-C instead of left as a temporary file."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)


def _stem(image) -> str:
    from monai_flow.cli.inputs import strip_ext

    first = image[0] if isinstance(image, (list, tuple)) else image
    return strip_ext(Path(str(first)).name)


def _summary(reports: list, out: Path) -> None:
    written = sum(len(r[1]) for r in reports)
    skipped = sum(r[3] for r in reports)
    failed = [(r[0], n, why) for r in reports for n, why in r[2]]
    print(f"{len(reports)} process(es): {written} output file(s) written, {skipped} input(s) already done, "
          f"{len(failed)} failed, into {out}", flush=True)
    for rank, n, why in failed:
        print(f"  rank {rank}: {n}: {why}", file=sys.stderr, flush=True)
