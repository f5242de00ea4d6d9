"""The masked 3D diffusion UNet of M3DDM and its building blocks."""

from lightning_m3ddm.models.global_encoder import GlobalFrameEncoder
from lightning_m3ddm.models.unet_3d import M3DDMUNet, M3DDMUNetOutput

__all__ = ["GlobalFrameEncoder", "M3DDMUNet", "M3DDMUNetOutput"]
