"""A bundle's network as TorchScript for ``python -m monai.bundle ckpt_export``.

MONAI's ``ckpt_export`` converts the config item ``net_id`` with ``torch.jit.script`` (which fails
on ``VelocityUNet``: its UNet call passes ``**kwargs``) or, with ``--use_trace True``, with
``torch.jit.trace`` on ONE random input (``--input_shape``), while a velocity network needs the
time ``t`` and, for some bundles, class labels, a mask or a target time. The bundles therefore
define ``"traced_network_def": "$monai_flow.bundle.traced_network(@network_def)"``: the network
traced on an example of every input it takes, named as in its ``forward``.
``ckpt_export traced_network_def ...`` then loads the checkpoint into that traced module (ignite's
``Checkpoint.load_objects``: ``load_state_dict`` with ``strict=True``, so a checkpoint that does
not fit fails; the trace reads the parameters of the module, so the loaded weights are the ones
used) and saves it (``torch.jit.script`` of a traced module returns it unchanged).

The saved file is called as ``m(x, t[, class_labels][, mask][, condition][, target_time])``, all
tensors with the batch size as first dimension (``t`` of shape ``(B,)``); batch and spatial sizes
are dynamic (spatial sizes divisible by the network's ``spatial_divisor``).
"""

from __future__ import annotations

import warnings

import torch
import torch.nn as nn

from monai_flow.checkpoints import unwrap_network

__all__ = ["network_example_inputs", "traced_network"]


def network_example_inputs(network: nn.Module, batch: int = 2, size: int | None = None, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random example inputs of every argument ``network.forward`` takes, by name, in order.

    ``x`` (batch, in_channels, size, ...) with ``spatial_dims`` axes (``size`` default: four times
    the network's ``spatial_divisor``), ``t`` (batch,) in [0, 1); then, where the network takes
    them, ``class_labels`` (batch,) in [0, num_classes] (the last is the null class), ``mask``
    (batch, mask_channels, ...), ``condition`` (batch, condition_channels, ...) and
    ``target_time`` (batch,) (flow maps). Networks without these attributes get ``x`` and ``t``
    with 1 channel and 2 spatial axes.
    """
    net = unwrap_network(network)
    dims, channels = int(getattr(net, "spatial_dims", 2)), int(getattr(net, "in_channels", 1))
    divisor = getattr(net, "spatial_divisor", 1)
    divisor = max(divisor) if isinstance(divisor, (tuple, list)) else int(divisor)
    spatial = (int(size or 4 * divisor),) * dims
    g = torch.Generator().manual_seed(seed)
    inputs = {"x": torch.rand(batch, channels, *spatial, generator=g), "t": torch.rand(batch, generator=g)}
    num_classes = getattr(net, "num_classes", None)
    if num_classes:
        inputs["class_labels"] = torch.randint(0, int(num_classes) + 1, (batch,), generator=g)
    for name, attr in (("mask", "mask_channels"), ("condition", "condition_channels")):
        if getattr(net, attr, 0):
            inputs[name] = torch.rand(batch, int(getattr(net, attr)), *spatial, generator=g)
    if getattr(net, "flow_map", False):
        inputs["target_time"] = torch.rand(batch, generator=g)
    return inputs


def traced_network(network: nn.Module, batch: int = 2, size: int | None = None,
                   device: str | torch.device | None = None) -> torch.jit.ScriptModule:
    """``torch.jit.trace`` of ``network`` (in eval mode) on :func:`network_example_inputs`.

    The traced module shares the parameters of ``network``; loading a state dict into either
    changes both. Input checks that branch on values (e.g. label ranges) are evaluated on the
    example and not repeated by the trace. A trace records the device it was made on (the
    network moves its time input to the input's device): ``device`` (default: the network's)
    is the device the saved file runs on, e.g. ``device="cuda"`` for a GPU deployment.
    """
    net = unwrap_network(network).eval()
    if device is not None:
        net = net.to(device)
    device = next(net.parameters()).device if any(True for _ in net.parameters()) else torch.device("cpu")
    example = {k: v.to(device) for k, v in network_example_inputs(net, batch=batch, size=size).items()}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        return torch.jit.trace(net, example_kwarg_inputs=example, check_trace=False)
