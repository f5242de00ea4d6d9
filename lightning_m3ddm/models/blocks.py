"""Down, mid and up blocks of the M3DDM UNet.

Each block is a stack of pseudo-3D resnets, optionally each followed by a
spatial-temporal transformer, and a spatial down/upsampler. Names follow the released
checkpoint: ``resnets``, ``attentions``, ``downsamplers.0``, ``upsamplers.0``.
"""

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from lightning_m3ddm.models.attention import SpatialTemporalTransformer
from lightning_m3ddm.models.resnet import Downsample3D, ResnetBlockPseudo3D, Upsample3D

DOWN_BLOCK_TYPES = {"CrossAttnDownBlock3D": True, "DownBlockP3D": False, "DownBlock3D": False}
UP_BLOCK_TYPES = {"CrossAttnUpBlock3D": True, "UpBlockP3D": False, "UpBlock3D": False}


@dataclass(frozen=True)
class BlockSettings:
    """What every resnet and transformer of the UNet shares."""

    temb_channels: int
    heads: int
    cross_attention_dim: int
    groups: int = 32
    eps: float = 1e-5
    norm_across_frames: bool = True
    position_embed_dim: int = 320
    position_max_period: float = 1000
    dropout: float = 0.0

    def resnet(self, in_channels: int, out_channels: int) -> ResnetBlockPseudo3D:
        return ResnetBlockPseudo3D(
            in_channels,
            out_channels,
            self.temb_channels,
            groups=self.groups,
            eps=self.eps,
            norm_across_frames=self.norm_across_frames,
            dropout=self.dropout,
        )

    def transformer(self, channels: int) -> SpatialTemporalTransformer:
        return SpatialTemporalTransformer(
            channels,
            self.heads,
            self.cross_attention_dim,
            groups=self.groups,
            norm_across_frames=self.norm_across_frames,
            position_embed_dim=self.position_embed_dim,
            position_max_period=self.position_max_period,
            dropout=self.dropout,
        )


class _CheckpointedBlock(nn.Module):
    """Runs each sub-layer under activation checkpointing when ``gradient_checkpointing`` is on."""

    gradient_checkpointing: bool = False

    def _run(self, layer: nn.Module, *args: torch.Tensor | None) -> torch.Tensor:
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return checkpoint(layer, *args, use_reentrant=False)
        return layer(*args)


class DownBlock3D(_CheckpointedBlock):
    """``num_layers`` resnets (+ transformers), then a stride-2 downsampler unless last.

    (B, C_in, F, H, W) -> (B, C_out, F, H/2, W/2) and the skip tensors for the up path.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_layers: int,
        with_attention: bool,
        add_downsample: bool,
        settings: BlockSettings,
    ):
        super().__init__()
        self.resnets = nn.ModuleList(
            settings.resnet(in_channels if i == 0 else out_channels, out_channels) for i in range(num_layers)
        )
        self.attentions = (
            nn.ModuleList(settings.transformer(out_channels) for _ in range(num_layers)) if with_attention else None
        )
        self.downsamplers = nn.ModuleList([Downsample3D(out_channels)]) if add_downsample else None

    def forward(
        self, x: torch.Tensor, temb: torch.Tensor, femb: torch.Tensor, context: torch.Tensor
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        skips = []
        for i, resnet in enumerate(self.resnets):
            x = self._run(resnet, x, temb, femb)
            if self.attentions is not None:
                x = self._run(self.attentions[i], x, context)
            skips.append(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
            skips.append(x)
        return x, tuple(skips)


class MidBlock3D(_CheckpointedBlock):
    """resnet, transformer, resnet at the lowest resolution."""

    def __init__(self, channels: int, settings: BlockSettings):
        super().__init__()
        self.resnets = nn.ModuleList([settings.resnet(channels, channels), settings.resnet(channels, channels)])
        self.attentions = nn.ModuleList([settings.transformer(channels)])

    def forward(self, x: torch.Tensor, temb: torch.Tensor, femb: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = self._run(self.resnets[0], x, temb, femb)
        x = self._run(self.attentions[0], x, context)
        return self._run(self.resnets[1], x, temb, femb)


class UpBlock3D(_CheckpointedBlock):
    """``num_layers`` resnets on [x, skip] (+ transformers), then a 2x upsampler unless last."""

    def __init__(
        self,
        in_channels: int,
        prev_output_channels: int,
        out_channels: int,
        num_layers: int,
        with_attention: bool,
        add_upsample: bool,
        settings: BlockSettings,
    ):
        super().__init__()
        resnets = []
        for i in range(num_layers):
            skip_channels = in_channels if i == num_layers - 1 else out_channels
            resnet_in = prev_output_channels if i == 0 else out_channels
            resnets.append(settings.resnet(resnet_in + skip_channels, out_channels))
        self.resnets = nn.ModuleList(resnets)
        self.attentions = (
            nn.ModuleList(settings.transformer(out_channels) for _ in range(num_layers)) if with_attention else None
        )
        self.upsamplers = nn.ModuleList([Upsample3D(out_channels)]) if add_upsample else None

    def forward(
        self,
        x: torch.Tensor,
        skips: tuple[torch.Tensor, ...],
        temb: torch.Tensor,
        femb: torch.Tensor,
        context: torch.Tensor,
        upsample_size: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        for i, resnet in enumerate(self.resnets):
            x = torch.cat([x, skips[-1 - i]], dim=1)
            x = self._run(resnet, x, temb, femb)
            if self.attentions is not None:
                x = self._run(self.attentions[i], x, context)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x, upsample_size)
        return x
