"""The UNet's conditioning, shared by training and sampling (paper 3.2, eq. 4).

Conventions, as the released model was trained: mask 1 = to generate; masked pixels hold
-1 (black); a guide frame is given whole (mask 0 everywhere). The null context c1 = ∅ is
the latent of an all-black frame with an all-ones mask on every frame that is not a guide
(guides are kept); the null global condition c2 = ∅ is all-zero global latents, fed
through the global encoder.

Shapes: frames (B, F, 3, H, W); latents (B, C, F, h, w); pixel masks (B, F, 1, H, W);
latent masks (B, 1, F, h, w).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange

from lightning_m3ddm.autoencoders import Autoencoder


@dataclass
class Condition:
    """Context c1 of a clip: masked-video latents (B, C, F, h, w) and latent mask (B, 1, F, h, w)."""

    masked_latents: torch.Tensor
    mask: torch.Tensor

    def unet_input(self, noisy_latents: torch.Tensor) -> torch.Tensor:
        """(B, 2C+1, F, h, w): noisy latents, masked-video latents, mask."""
        return torch.cat([noisy_latents, self.masked_latents.to(noisy_latents.dtype), self.mask.to(noisy_latents.dtype)], 1)


def encode_video(autoencoder: Autoencoder, frames: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, F, 3, H, W) -> (B, C, F, h, w)."""
    b = frames.shape[0]
    latents = autoencoder.encode(rearrange(frames, "b f c h w -> (b f) c h w"), generator)
    return rearrange(latents, "(b f) c h w -> b c f h w", b=b)


def decode_video(autoencoder: Autoencoder, latents: torch.Tensor) -> torch.Tensor:
    """(B, C, F, h, w) -> (B, F, 3, H, W)."""
    b = latents.shape[0]
    frames = autoencoder.decode(rearrange(latents, "b c f h w -> (b f) c h w"))
    return rearrange(frames, "(b f) c h w -> b f c h w", b=b)


def mask_to_latent(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Pixel mask (B, F, 1, H, W) -> latent mask (B, 1, F, h, w), nearest, as the released pipeline."""
    b = mask.shape[0]
    small = F.interpolate(rearrange(mask.float(), "b f c h w -> (b f) c h w"), size=size, mode="nearest")
    return rearrange(small, "(b f) c h w -> b c f h w", b=b)


def guide_frames(latent_mask: torch.Tensor) -> torch.Tensor:
    """(B, 1, F, h, w) -> (B, F) bool: frames given whole (nothing to generate)."""
    return latent_mask.flatten(3).amax(dim=(1, 3)) == 0


def null_condition(condition: Condition, black_latent: torch.Tensor) -> Condition:
    """c1 = ∅: black latent and all-ones mask on every non-guide frame; guides kept.

    black_latent: (C, h, w) or (B, C, h, w), the latent of an all-black (-1) frame.
    """
    guides = guide_frames(condition.mask)[:, None, :, None, None]  # (B, 1, F, 1, 1)
    if black_latent.ndim == 3:
        black_latent = black_latent[None]
    black = rearrange(black_latent, "b c h w -> b c 1 h w").to(condition.masked_latents)
    masked = torch.where(guides, condition.masked_latents, black.expand_as(condition.masked_latents))
    mask = torch.where(guides, condition.mask, torch.ones_like(condition.mask))
    return Condition(masked, mask)


def black_frame_latent(
    autoencoder: Autoencoder, height: int, width: int, device: torch.device, generator: torch.Generator | None = None
) -> torch.Tensor:
    """(C, h, w) latent of an all-black frame."""
    frame = -torch.ones(1, 3, height, width, device=device)
    return autoencoder.encode(frame, generator)[0]


def select(mask: torch.Tensor, when_true: Condition, when_false: Condition) -> Condition:
    """Per-sample choice between two conditions: mask (B,) bool."""
    m = mask[:, None, None, None, None]
    return Condition(
        torch.where(m, when_true.masked_latents, when_false.masked_latents),
        torch.where(m, when_true.mask, when_false.mask),
    )
