"""monai_flow.networks: velocity networks (time t in [0, 1], or a RelativeFlow step dt, scaled internally)."""

from .velocity_unet import VelocityUNet

__all__ = ["VelocityUNet"]
