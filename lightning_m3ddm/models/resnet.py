"""Residual block with pseudo-3D convolutions, and the spatial down/upsamplers."""

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from lightning_m3ddm.models.pseudo3d import PseudoConv3d


class GroupNorm3d(nn.GroupNorm):
    """GroupNorm on (B, C, F, H, W).

    ``across_frames=True`` takes the statistics over all frames of a clip jointly, as the
    released model does; ``False`` normalises every frame on its own (what a 2D UNet run
    frame by frame does), which makes a freshly inflated model exactly frame-wise.
    """

    def __init__(self, num_groups: int, num_channels: int, eps: float, across_frames: bool = True):
        super().__init__(num_groups, num_channels, eps=eps, affine=True)
        self.across_frames = across_frames

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.across_frames or x.ndim != 5:
            return super().forward(x)
        b = x.shape[0]
        x = super().forward(rearrange(x, "b c f h w -> (b f) c h w"))
        return rearrange(x, "(b f) c h w -> b c f h w", b=b)


class ResnetBlockPseudo3D(nn.Module):
    """GroupNorm-SiLU-PseudoConv3d twice, with timestep and frame-rate embeddings added in between.

    The two embeddings (B, E) enter through their own projections and are added to every
    frame and pixel after the first convolution (paper 3.2, Appendix C.1).

    (B, C_in, F, H, W) -> (B, C_out, F, H, W).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        temb_channels: int,
        groups: int = 32,
        eps: float = 1e-5,
        norm_across_frames: bool = True,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.norm1 = GroupNorm3d(groups, in_channels, eps, norm_across_frames)
        self.conv1 = PseudoConv3d(in_channels, out_channels)
        self.time_emb_proj = nn.Linear(temb_channels, out_channels)
        self.fps_emb_proj = nn.Linear(temb_channels, out_channels)
        self.norm2 = GroupNorm3d(groups, out_channels, eps, norm_across_frames)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = PseudoConv3d(out_channels, out_channels)
        self.conv_shortcut = (
            nn.Conv3d(in_channels, out_channels, kernel_size=1) if in_channels != out_channels else None
        )

    def forward(self, x: torch.Tensor, temb: torch.Tensor, femb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        emb = self.time_emb_proj(F.silu(temb)) + self.fps_emb_proj(F.silu(femb))
        h = h + rearrange(emb, "b c -> b c 1 1 1")
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        return x + h


class Downsample3D(nn.Module):
    """Stride-2 spatial conv, kernel (1, 3, 3): (B, C, F, H, W) -> (B, C, F, ceil(H/2), ceil(W/2))."""

    def __init__(self, channels: int, padding: int = 1):
        super().__init__()
        self.conv = nn.Conv3d(channels, channels, (1, 3, 3), stride=(1, 2, 2), padding=(0, padding, padding))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample3D(nn.Module):
    """Nearest 2x spatial upsampling (or to ``size``), then a (1, 3, 3) conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv3d(channels, channels, (1, 3, 3), padding=(0, 1, 1))

    def forward(self, x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        f = x.shape[2]
        dtype = x.dtype
        if dtype == torch.bfloat16:
            # nearest upsampling lacks a bfloat16 kernel on some backends
            x = x.float()
        if size is None:
            x = F.interpolate(x, scale_factor=(1.0, 2.0, 2.0), mode="nearest")
        else:
            x = F.interpolate(x, size=(f, *size), mode="nearest")
        return self.conv(x.to(dtype))
