"""Sinusoidal embeddings for the diffusion timestep, the frame rate and the frame position.

The released model uses three sinusoids that differ only in their maximum period:
the timestep (1000, where Stable Diffusion uses 10000), the frame rate (30, since
rates are 1..30 fps) and the temporal position inside a clip (1000).
"""

import torch
from diffusers.models.embeddings import TimestepEmbedding, get_timestep_embedding

__all__ = ["TimestepEmbedding", "sinusoidal_embedding", "as_batch_vector"]


def sinusoidal_embedding(
    positions: torch.Tensor,
    dim: int,
    *,
    max_period: float,
    flip_sin_to_cos: bool = True,
    freq_shift: float = 0.0,
) -> torch.Tensor:
    """(N,) positions -> (N, dim) float32 sinusoids (cos first when ``flip_sin_to_cos``)."""
    return get_timestep_embedding(
        positions,
        dim,
        flip_sin_to_cos=flip_sin_to_cos,
        downscale_freq_shift=freq_shift,
        max_period=max_period,
    )


def as_batch_vector(value: torch.Tensor | int | float, batch: int, device: torch.device) -> torch.Tensor:
    """A scalar or (B,) tensor of timesteps / frame rates -> a (B,) tensor on ``device``."""
    if not torch.is_tensor(value):
        value = torch.tensor([value], device=device)
    value = value.to(device)
    if value.ndim == 0:
        value = value[None]
    if value.ndim != 1 or value.shape[0] not in (1, batch):
        raise ValueError(f"expected a scalar or a ({batch},) tensor, got shape {tuple(value.shape)}")
    return value.expand(batch)
