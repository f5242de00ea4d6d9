"""The light ResNet that turns the latents of the global frames into cross-attention tokens.

Paper Fig. 8 / Appendix C.1: five bottleneck stages of widths 8, 16, 32, 64, 128 (the
32-wide one with stride 2), then a 3x3 convolution without padding to the UNet's
cross-attention width. Module names follow the released checkpoint
(``resnet_layer.{stage}.layers.{i}.layer.{j}.{convolution,normalization}``).
"""

import torch
from einops import rearrange
from torch import nn

STAGE_WIDTHS = (8, 16, 32, 64, 128)
STAGE_STRIDES = (1, 1, 2, 1, 1)


class ConvNormAct(nn.Module):
    """Conv (no bias), BatchNorm, optional ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, act: bool = True):
        super().__init__()
        self.convolution = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=False
        )
        self.normalization = nn.BatchNorm2d(out_channels)
        self.activation = nn.ReLU() if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.normalization(self.convolution(x)))


class Bottleneck(nn.Module):
    """1x1 reduce (width/4), 3x3 (carries the stride), 1x1 expand; projected shortcut when shapes change."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, reduction: int = 4):
        super().__init__()
        mid = out_channels // reduction
        self.shortcut = (
            ConvNormAct(in_channels, out_channels, 1, stride=stride, act=False)
            if in_channels != out_channels or stride != 1
            else nn.Identity()
        )
        self.layer = nn.Sequential(
            ConvNormAct(in_channels, mid, 1),
            ConvNormAct(mid, mid, 3, stride=stride),
            ConvNormAct(mid, out_channels, 1, act=False),
        )
        self.activation = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.layer(x) + self.shortcut(x))


class Stage(nn.Module):
    """Two bottlenecks; the first changes width and carries the stride."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, depth: int = 2):
        super().__init__()
        self.layers = nn.Sequential(
            Bottleneck(in_channels, out_channels, stride),
            *(Bottleneck(out_channels, out_channels) for _ in range(depth - 1)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class GlobalFrameEncoder(nn.Module):
    """(B, G, C_lat, h, w) global-frame latents -> (B, G * h' * w', out_dim) tokens.

    h' = ceil(h / 2) - 2 (stride-2 stage, then the unpadded 3x3 conv); for 32x32
    latents of 256-pixel frames that is 14 x 14 = 196 tokens per global frame.
    """

    def __init__(self, in_channels: int = 4, out_dim: int = 320):
        super().__init__()
        widths = (in_channels, *STAGE_WIDTHS)
        self.resnet_layer = nn.Sequential(
            *(Stage(widths[i], widths[i + 1], STAGE_STRIDES[i]) for i in range(len(STAGE_WIDTHS)))
        )
        self.convolution = nn.Conv2d(STAGE_WIDTHS[-1], out_dim, kernel_size=3)

    @staticmethod
    def num_tokens(num_frames: int, height: int, width: int) -> int:
        return num_frames * max((height + 1) // 2 - 2, 0) * max((width + 1) // 2 - 2, 0)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        b = latents.shape[0]
        if min(latents.shape[-2:]) < 5:
            raise ValueError(f"global-frame latents must be at least 5x5, got {tuple(latents.shape[-2:])}")
        x = self.convolution(self.resnet_layer(rearrange(latents, "b g c h w -> (b g) c h w")))
        return rearrange(x, "(b g) c h w -> b (g h w) c", b=b)
