"""M3DDMUNet: the masked 3D latent-diffusion UNet of M3DDM (paper 3.2, Appendix C.1).

Read top to bottom: embeddings of the timestep and the frame rate, the global-frame
encoder feeding cross-attention, conv_in, four down blocks, a mid block, four up blocks
with skips, and a pseudo-3D conv_out.

Shapes (``b c f h w`` throughout):
    sample          (B, 9, F, h, w)  4 noisy latent + 4 masked-video latent + 1 mask channels
    timestep        (B,) int         diffusion step
    fps             (B,) int         frame rate of the clip (1..30)
    global_latents  (B, G, 4, h, w)  latents of the G global frames
    output          (B, 4, F, h, w)  predicted noise
"""

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import nn

from lightning_m3ddm.models.blocks import (
    DOWN_BLOCK_TYPES,
    UP_BLOCK_TYPES,
    BlockSettings,
    DownBlock3D,
    MidBlock3D,
    UpBlock3D,
)
from lightning_m3ddm.models.embeddings import TimestepEmbedding, as_batch_vector, sinusoidal_embedding
from lightning_m3ddm.models.global_encoder import GlobalFrameEncoder
from lightning_m3ddm.models.pseudo3d import PseudoConv3d
from lightning_m3ddm.models.resnet import GroupNorm3d


@dataclass
class M3DDMUNetOutput(BaseOutput):
    """sample: (B, out_channels, F, h, w) predicted noise."""

    sample: torch.Tensor


class M3DDMUNet(ModelMixin, ConfigMixin):
    """The masked 3D diffusion UNet.

    The first twelve config keys are those of the released checkpoint's config.json
    (``attention_head_dim`` is, as in Stable Diffusion 1.x, the number of heads). The
    others default to the released model's behaviour:

    - ``time_embedding_max_period`` 1000 (released model; Stable Diffusion uses 10000,
      which inflation sets so the inflated model equals its 2D parent);
    - ``fps_embedding_max_period`` 30, ``temporal_position_max_period`` 1000 and
      ``temporal_position_embed_dim`` 320 (the frame-position sinusoid's width);
    - ``norm_across_frames`` True: resnet and temporal GroupNorms take statistics over
      all frames of the clip jointly; False normalises frame by frame;
    - ``global_latent_channels`` 4: channels of the global-frame latents.
    """

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        in_channels: int = 9,
        out_channels: int = 4,
        cross_attention_dim: int = 320,
        down_block_types: Sequence[str] = (
            "CrossAttnDownBlock3D",
            "CrossAttnDownBlock3D",
            "CrossAttnDownBlock3D",
            "DownBlockP3D",
        ),
        up_block_types: Sequence[str] = ("UpBlockP3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"),
        block_out_channels: Sequence[int] = (320, 640, 1280, 1280),
        layers_per_block: int = 2,
        attention_head_dim: int = 8,
        norm_num_groups: int = 32,
        norm_eps: float = 1e-5,
        flip_sin_to_cos: bool = True,
        freq_shift: int = 0,
        global_latent_channels: int = 4,
        time_embedding_max_period: float = 1000,
        fps_embedding_max_period: float = 30,
        temporal_position_embed_dim: int = 320,
        temporal_position_max_period: float = 1000,
        norm_across_frames: bool = True,
        dropout: float = 0.0,
    ):
        super().__init__()
        _validate_config(down_block_types, up_block_types, block_out_channels, norm_num_groups, attention_head_dim)
        channels = list(block_out_channels)
        temb_channels = channels[0] * 4
        settings = BlockSettings(
            temb_channels=temb_channels,
            heads=attention_head_dim,
            cross_attention_dim=cross_attention_dim,
            groups=norm_num_groups,
            eps=norm_eps,
            norm_across_frames=norm_across_frames,
            position_embed_dim=temporal_position_embed_dim,
            position_max_period=temporal_position_max_period,
            dropout=dropout,
        )

        self.conv_in = nn.Conv3d(in_channels, channels[0], kernel_size=(1, 3, 3), padding=(0, 1, 1))
        self.time_embedding = TimestepEmbedding(channels[0], temb_channels)
        self.fps_embedding = TimestepEmbedding(channels[0], temb_channels)
        self.global_img_encoder = GlobalFrameEncoder(global_latent_channels, cross_attention_dim)

        self.down_blocks = nn.ModuleList()
        for i, block_type in enumerate(down_block_types):
            self.down_blocks.append(
                DownBlock3D(
                    channels[max(i - 1, 0)],
                    channels[i],
                    layers_per_block,
                    with_attention=DOWN_BLOCK_TYPES[block_type],
                    add_downsample=i < len(channels) - 1,
                    settings=settings,
                )
            )
        self.mid_block = MidBlock3D(channels[-1], settings)
        reversed_channels = channels[::-1]
        self.up_blocks = nn.ModuleList()
        for i, block_type in enumerate(up_block_types):
            self.up_blocks.append(
                UpBlock3D(
                    in_channels=reversed_channels[min(i + 1, len(channels) - 1)],
                    prev_output_channels=reversed_channels[max(i - 1, 0)],
                    out_channels=reversed_channels[i],
                    num_layers=layers_per_block + 1,
                    with_attention=UP_BLOCK_TYPES[block_type],
                    add_upsample=i < len(channels) - 1,
                    settings=settings,
                )
            )

        self.conv_norm_out = GroupNorm3d(norm_num_groups, channels[0], norm_eps, norm_across_frames)
        self.conv_out = PseudoConv3d(channels[0], out_channels)

    # -- conditioning -------------------------------------------------------------------

    def encode_global_frames(self, global_latents: torch.Tensor) -> torch.Tensor:
        """(B, G, C_lat, h, w) -> (B, G * h' * w', cross_attention_dim) tokens.

        The tokens depend only on the global frames, so a sampler can compute them once
        per video and pass them as ``global_tokens`` at every step.
        """
        return self._global_tokens(global_latents)

    def _global_tokens(self, global_latents: torch.Tensor) -> torch.Tensor:
        # forward's own path: under FSDP2, encode_global_frames is registered as a forward
        # method (it gathers and frees the root's weights), which forward must not nest
        return self.global_img_encoder(global_latents.to(self.dtype))

    def _embed(self, values: torch.Tensor, max_period: float, mlp: TimestepEmbedding) -> torch.Tensor:
        sinusoid = sinusoidal_embedding(
            values,
            self.config.block_out_channels[0],
            max_period=max_period,
            flip_sin_to_cos=self.config.flip_sin_to_cos,
            freq_shift=self.config.freq_shift,
        )
        return mlp(sinusoid.to(self.dtype))

    # -- forward ------------------------------------------------------------------------

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | int,
        *,
        fps: torch.Tensor | int,
        global_latents: torch.Tensor | None = None,
        global_tokens: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> M3DDMUNetOutput | tuple[torch.Tensor]:
        """Predict the noise of ``sample`` (B, in_channels, F, h, w); see the module docstring.

        Give either ``global_latents`` (B, G, C_lat, h, w) or their precomputed
        ``global_tokens`` from :meth:`encode_global_frames`.
        """
        if sample.ndim != 5 or sample.shape[1] != self.config.in_channels:
            raise ValueError(
                f"sample must be (B, {self.config.in_channels}, F, h, w), got {tuple(sample.shape)}"
            )
        if (global_latents is None) == (global_tokens is None):
            raise ValueError("give exactly one of global_latents or global_tokens")
        b = sample.shape[0]
        context = self._global_tokens(global_latents) if global_tokens is None else global_tokens
        if context.shape[0] != b:
            raise ValueError(f"global frames have batch {context.shape[0]}, sample has {b}")

        timestep = as_batch_vector(timestep, b, sample.device)
        fps = as_batch_vector(fps, b, sample.device)
        temb = self._embed(timestep, self.config.time_embedding_max_period, self.time_embedding)
        femb = self._embed(fps, self.config.fps_embedding_max_period, self.fps_embedding)

        x = self.conv_in(sample.to(self.dtype))
        skips: tuple[torch.Tensor, ...] = (x,)
        for block in self.down_blocks:
            x, block_skips = block(x, temb, femb, context)
            skips += block_skips

        x = self.mid_block(x, temb, femb, context)

        for block in self.up_blocks:
            n = len(block.resnets)
            block_skips, skips = skips[-n:], skips[:-n]
            # odd latent sizes: upsample to the skip's size instead of exactly 2x
            size = tuple(skips[-1].shape[-2:]) if skips and block.upsamplers is not None else None
            x = block(x, block_skips, temb, femb, context, upsample_size=size)

        x = self.conv_out(F.silu(self.conv_norm_out(x)))
        if not return_dict:
            return (x,)
        return M3DDMUNetOutput(sample=x)


def _validate_config(
    down_block_types: Sequence[str],
    up_block_types: Sequence[str],
    block_out_channels: Sequence[int],
    groups: int,
    heads: int,
) -> None:
    n = len(block_out_channels)
    if len(down_block_types) != n or len(up_block_types) != n:
        raise ValueError(
            f"need one down and one up block type per width: {n} widths, "
            f"{len(down_block_types)} down and {len(up_block_types)} up block types"
        )
    for kind, known in ((down_block_types, DOWN_BLOCK_TYPES), (up_block_types, UP_BLOCK_TYPES)):
        for t in kind:
            if t not in known:
                raise ValueError(f"unknown block type {t!r}; known: {sorted(known)}")
    for c in block_out_channels:
        if c % groups or c % heads:
            raise ValueError(f"width {c} must be divisible by norm_num_groups={groups} and attention_head_dim={heads}")
