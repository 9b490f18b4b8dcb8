"""monai_flow.networks: velocity networks (time t in [0, 1], or a RelativeFlow step dt, scaled internally)."""

from .slice_wise import SliceWise
from .velocity_unet import VelocityUNet

__all__ = ["SliceWise", "VelocityUNet"]
