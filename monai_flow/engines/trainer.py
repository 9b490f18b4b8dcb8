"""A MONAI SupervisedTrainer whose iteration calls a flow objective's own loss."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents
from monai.engines.workflow import Workflow
from monai.utils import CommonKeys as Keys

from monai_flow.checkpoints import unwrap_network
from monai_flow.flows.base import FlowObjective
from monai_flow.networks.precision import AutocastNetwork, amp_dtype, amp_name, device_type

from .prepare_batch import PrepareFlowBatch

__all__ = ["FlowTrainer"]


class FlowTrainer(SupervisedTrainer):
    """``SupervisedTrainer`` for flow objectives: each iteration computes ``objective.loss(network, batch)``.

    The objective samples its own times, noise and degradations, so there is no inferer and no
    (inputs, targets) split: ``prepare_batch`` (default :class:`PrepareFlowBatch`) returns the
    whole batch dict on the device. Optimizer, gradient accumulation and ``IterationEvents``
    (FORWARD_COMPLETED, LOSS_COMPLETED, BACKWARD_COMPLETED, MODEL_COMPLETED) behave as in
    ``SupervisedTrainer``.

    Mixed precision (``amp``, on any device, unlike ``SupervisedTrainer``'s CUDA-only flag): the
    objective receives the network wrapped in :class:`~monai_flow.networks.precision.AutocastNetwork`,
    so its network calls run under ``torch.autocast(device, dtype)`` and return float32, while the
    objective's own arithmetic (degradations, targets, the loss) stays float32; ``"bf16"``
    needs no loss scaling, ``"fp16"`` (and ``True``, MONAI's meaning: float16, or ``amp_kwargs["dtype"]``)
    adds a ``torch.amp.GradScaler``. The objectives build their targets and times in float32 and
    ``VelocityUNet`` keeps its time embedding in float32 (:mod:`monai_flow.networks.precision`).

    ``compile=True`` compiles the network's forward in place (``nn.Module.compile``, after unwrapping
    DDP / ``SliceWise``): parameters, ``state_dict`` keys and checkpoints stay those of the plain network,
    and the objective still sees the network's attributes. ``compile_kwargs`` go to ``torch.compile``. ``engine.state.output`` is
    ``{"image": batch image, "loss": scalar loss}``, decollated after MODEL_COMPLETED into one dict
    per sample (``decollate=True``, the default, as in ``SupervisedTrainer``), so ``StatsHandler``,
    ``TensorBoardStatsHandler``, ``CheckpointSaver``, ``ValidationHandler`` work with the usual
    ``output_transform=monai.handlers.from_engine(["loss"], first=True)``.

    Args:
        device, max_epochs, train_data_loader, network, optimizer: as in ``SupervisedTrainer``.
        objective: a :class:`monai_flow.flows.FlowObjective` (any ``(network, batch) -> loss`` callable).
        prepare_batch: callable ``(batchdata, device, non_blocking, **kwargs) -> dict``.
        amp: None / False / ``"fp32"`` (off), ``"bf16"``, ``"fp16"`` or True (float16 with a GradScaler).
        compile, compile_kwargs: compile the network in place with ``torch.compile``.
        kwargs: other ``SupervisedTrainer`` arguments (``epoch_length``, ``train_handlers``,
            ``accumulation_steps``, ``optim_set_to_none``, ``amp_kwargs``, ``to_kwargs``, ...);
            ``loss_function`` and ``inferer`` are not used.
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable,
        network: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        objective: FlowObjective | Callable[..., torch.Tensor],
        prepare_batch: Callable = PrepareFlowBatch(),
        amp: bool | str | None = None,
        compile: bool = False,
        compile_kwargs: dict | None = None,
        **kwargs: Any,
    ) -> None:
        if not callable(objective):
            raise ValueError(f"objective must be a FlowObjective or callable, got {type(objective).__name__}.")
        for unused in ("loss_function", "inferer"):
            if kwargs.pop(unused, None) is not None:
                raise ValueError(f"FlowTrainer takes no `{unused}`: the objective computes the loss.")
        self.objective = objective  # set first: handlers attached by the base class may look it up
        dtype = amp_dtype(amp, device)
        if amp is True and kwargs.get("amp_kwargs", {}).get("dtype") is not None:
            dtype = amp_dtype(kwargs["amp_kwargs"]["dtype"])
        if compile:
            unwrap_network(network).compile(**(compile_kwargs or {}))
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            train_data_loader=train_data_loader,
            network=network,
            optimizer=optimizer,
            loss_function=objective,
            prepare_batch=prepare_batch,
            amp=False,  # MONAI's flag means CUDA float16 only; this class handles every device and dtype
            **kwargs,
        )
        self.compile = bool(compile)  # the network is compiled in place: no MetaTensor conversion needed
        self.amp_dtype = dtype
        self.amp = dtype is not None
        self.amp_device_type = device_type(device)

    @property
    def amp_name(self) -> str:
        """``"fp32"``, ``"bf16"`` or ``"fp16"``."""
        return amp_name(self.amp_dtype)

    def run(self) -> None:  # type: ignore[override]
        """As ``Trainer.run``, with a ``torch.amp.GradScaler`` for float16 on this trainer's device (none for bf16)."""
        self.scaler = torch.amp.GradScaler(self.amp_device_type) if self.amp_dtype == torch.float16 else None
        Workflow.run(self)

    def _iteration(self, engine: FlowTrainer, batchdata: Any) -> dict:  # type: ignore[override]
        """One optimisation step; returns ``{"image": ..., "loss": ...}`` (also ``engine.state.output``)."""
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        batch = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking, **engine.to_kwargs)
        image_key = getattr(engine.objective, "image_key", Keys.IMAGE)
        image = batch.get(image_key) if isinstance(batch, dict) else batch
        engine.state.output = {Keys.IMAGE: image}

        acc = engine.accumulation_steps
        local = engine.state.iteration - 1
        if engine.state.epoch_length is not None:
            local %= engine.state.epoch_length
        last = engine.state.epoch_length is not None and local + 1 == engine.state.epoch_length
        should_zero_grad = local % acc == 0
        should_step = (local + 1) % acc == 0 or last

        engine.network.train()
        if should_zero_grad:
            engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)

        network = engine.network
        if engine.amp_dtype is not None:  # only the network's forward, not the objective's degradations
            network = AutocastNetwork(network, engine.amp_dtype)

        def _loss() -> torch.Tensor:
            loss = engine.objective(network, batch)
            engine.fire_event(IterationEvents.FORWARD_COMPLETED)
            engine.state.output[Keys.LOSS] = loss
            engine.fire_event(IterationEvents.LOSS_COMPLETED)
            return loss / acc if acc > 1 else loss

        loss = _loss()
        if engine.scaler is not None:
            engine.scaler.scale(loss).backward()
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
            if should_step:
                engine.scaler.step(engine.optimizer)
                engine.scaler.update()
        else:
            loss.backward()
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
            if should_step:
                engine.optimizer.step()
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output
