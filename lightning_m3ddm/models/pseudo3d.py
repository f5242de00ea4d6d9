"""Pseudo-3D convolution (Make-A-Video): a 2D spatial conv, then a 1D temporal conv."""

import torch
from einops import rearrange
from torch import nn


class PseudoConv3d(nn.Module):
    """Spatial ``k x k`` conv on every frame, then a temporal conv over frames at every pixel.

    The temporal conv starts as the identity (Dirac kernel, zero bias), so a freshly
    inflated network computes frame by frame what its 2D parent computes.

    Input (B, C_in, F, H, W) -> output (B, C_out, F, H, W).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, temporal_kernel_size: int = 3):
        super().__init__()
        self.spatial_conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        self.temporal_conv = nn.Conv1d(
            out_channels, out_channels, temporal_kernel_size, padding=temporal_kernel_size // 2
        )
        self.reset_temporal_to_identity()

    def reset_temporal_to_identity(self) -> None:
        nn.init.dirac_(self.temporal_conv.weight)
        nn.init.zeros_(self.temporal_conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, f, h, w = x.shape
        x = self.spatial_conv(rearrange(x, "b c f h w -> (b f) c h w"))
        x = rearrange(x, "(b f) c h w -> (b h w) c f", b=b, f=f)
        x = self.temporal_conv(x)
        return rearrange(x, "(b h w) c f -> b c f h w", b=b, h=h, w=w)
