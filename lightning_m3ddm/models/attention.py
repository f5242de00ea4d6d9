"""Spatial and temporal transformers of the M3DDM UNet, on fused attention.

Parameter names follow the released checkpoint (``transformer_blocks`` for the spatial
transformer, ``transformer_blocks2`` / ``proj_in2`` / ``proj_out2`` / ``norm2`` for the
temporal one), so its state dict loads without renaming.
"""

import torch
import torch.nn.functional as F
from diffusers.models.attention import FeedForward
from einops import rearrange
from torch import nn

from lightning_m3ddm.models.embeddings import TimestepEmbedding, sinusoidal_embedding
from lightning_m3ddm.models.resnet import GroupNorm3d


def pointwise(conv: nn.Conv2d | nn.Conv3d, tokens: torch.Tensor) -> torch.Tensor:
    """Apply a 1x1(x1) convolution to (..., C) tokens as a matmul (no permutes, same result)."""
    return F.linear(tokens, conv.weight.flatten(1), conv.bias)


class Attention(nn.Module):
    """Multi-head attention through ``F.scaled_dot_product_attention``.

    x (B, N, C), context (B, M, C_ctx) or None for self-attention -> (B, N, C).
    """

    def __init__(self, dim: int, heads: int, context_dim: int | None = None, dropout: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by {heads} attention heads")
        self.heads = heads
        context_dim = dim if context_dim is None else context_dim
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(context_dim, dim, bias=False)
        self.to_v = nn.Linear(context_dim, dim, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim), nn.Dropout(dropout)])

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        context = x if context is None else context
        q, k, v = (
            rearrange(t, "b n (h d) -> b h n d", h=self.heads)
            for t in (self.to_q(x), self.to_k(context), self.to_v(context))
        )
        out = F.scaled_dot_product_attention(q, k, v)
        out = rearrange(out, "b h n d -> b n (h d)")
        return self.to_out[1](self.to_out[0](out))


class TransformerBlock(nn.Module):
    """Pre-norm self-attention, second attention, GEGLU feed-forward, each residual.

    The second attention reads ``context`` when the block was built with a
    ``context_dim``; otherwise it is a second self-attention (temporal transformer).
    """

    def __init__(self, dim: int, heads: int, context_dim: int | None = None, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, heads, dropout=dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = Attention(dim, heads, context_dim=context_dim, dropout=dropout)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, dropout=dropout, activation_fn="geglu")

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, frames: int = 1) -> torch.Tensor:
        """x ((B F), N, C); context (B, M, C_ctx), shared by the F frames of a clip.

        Cross-attention is row-wise in the queries, so the F frames of a clip attend to
        their shared context as one (B, F*N) query sequence: the keys and values of the
        global-frame tokens are projected once per clip instead of once per frame.
        """
        x = x + self.attn1(self.norm1(x))
        if context is None:
            x = x + self.attn2(self.norm2(x))
        else:
            h = rearrange(self.norm2(x), "(b f) n c -> b (f n) c", f=frames)
            h = self.attn2(h, context)
            x = x + rearrange(h, "b (f n) c -> (b f) n c", f=frames)
        return x + self.ff(self.norm3(x))


class SpatialTemporalTransformer(nn.Module):
    """A spatial transformer on every frame, then a temporal transformer at every pixel.

    Spatial: GroupNorm, 1x1 conv in, self-attention over the H*W tokens of a frame,
    cross-attention to the global-frame tokens, feed-forward, 1x1 conv out, residual.
    Temporal: GroupNorm, 1x1x1 conv in, a learned projection of the sinusoidal
    frame-position embedding added, self-attention over the F frames, 1x1x1 conv out,
    residual.

    x (B, C, F, H, W), context (B, M, C_ctx) -> (B, C, F, H, W).
    """

    def __init__(
        self,
        channels: int,
        heads: int,
        context_dim: int,
        groups: int = 32,
        norm_across_frames: bool = True,
        position_embed_dim: int = 320,
        position_max_period: float = 1000,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.position_embed_dim = position_embed_dim
        self.position_max_period = position_max_period
        # spatial
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.proj_in = nn.Conv2d(channels, channels, 1)
        self.transformer_blocks = nn.ModuleList([TransformerBlock(channels, heads, context_dim, dropout)])
        self.proj_out = nn.Conv2d(channels, channels, 1)
        # temporal
        self.temporal_position_embed_proj = TimestepEmbedding(position_embed_dim, channels)
        self.norm2 = GroupNorm3d(groups, channels, 1e-6, norm_across_frames)
        self.proj_in2 = nn.Conv3d(channels, channels, 1)
        self.transformer_blocks2 = nn.ModuleList([TransformerBlock(channels, heads, None, dropout)])
        self.proj_out2 = nn.Conv3d(channels, channels, 1)
        nn.init.dirac_(self.proj_in2.weight)
        nn.init.zeros_(self.proj_in2.bias)
        nn.init.dirac_(self.proj_out2.weight)
        nn.init.zeros_(self.proj_out2.bias)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, _, f, h, w = x.shape

        tokens = rearrange(self.norm(rearrange(x, "b c f h w -> (b f) c h w")), "bf c h w -> bf (h w) c")
        tokens = pointwise(self.proj_in, tokens)
        for block in self.transformer_blocks:
            tokens = block(tokens, context, frames=f)
        tokens = pointwise(self.proj_out, tokens)
        x = x + rearrange(tokens, "(b f) (h w) c -> b c f h w", b=b, h=h)

        tokens = rearrange(self.norm2(x), "b c f h w -> (b h w) f c")
        tokens = pointwise(self.proj_in2, tokens)
        positions = torch.arange(f, device=x.device)
        pos = sinusoidal_embedding(positions, self.position_embed_dim, max_period=self.position_max_period)
        tokens = tokens + self.temporal_position_embed_proj(pos.to(tokens.dtype))
        for block in self.transformer_blocks2:
            tokens = block(tokens)
        tokens = pointwise(self.proj_out2, tokens)
        return x + rearrange(tokens, "(b h w) f c -> b c f h w", b=b, h=h)
