"""Unwrapping a network from its parallel and slice-wise wrappers, in one place."""

from __future__ import annotations

import torch.nn as nn

__all__ = ["unwrap_network"]


def unwrap_network(network: nn.Module, slice_wise: bool = True) -> nn.Module:
    """The module inside ``DataParallel`` / ``DistributedDataParallel`` wrappers and, with
    ``slice_wise=True``, inside :class:`monai_flow.networks.SliceWise` (the 2D network it runs on
    volumes): the module whose ``state_dict`` a checkpoint holds and whose attributes
    (``null_class``, ``spatial_divisor``, ...) describe the network."""
    from monai_flow.networks.slice_wise import SliceWise

    while True:
        if isinstance(network, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            network = network.module
        elif slice_wise and isinstance(network, SliceWise):
            network = network._modules["network"]
        else:
            return network
