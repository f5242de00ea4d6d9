"""Denoising a canvas larger than the model's as overlapping model-size windows (MultiDiffusion).

At every denoising step each spatial window (:mod:`lightning_m3ddm.spatial_windows`) of
each clip gets its guided prediction (eq. 4, :func:`lightning_m3ddm.sampling.guided_noise`)
from its own crop of the noisy latents, context latents and mask, with its own global-frame
tokens; the predictions are merged with weights that sum to 1 at every covered cell, and
one scheduler step moves the whole canvas. Merging the model output and stepping once is
the same as stepping every window and merging the results for the samplers here (their
update is linear in the model output), and it keeps one scheduler state and one draw of
noise per canvas, so the overlaps are not smoothed by averaging independent noise.

Memory: the UNet only ever sees batches of at most ``max_batch`` windows of the model's
size (times the guidance branches), whatever the canvas; what grows with the canvas is
the latents themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from lightning_m3ddm.conditioning import Condition
from lightning_m3ddm.sampling import Guidance, guided_noise, start_latents
from lightning_m3ddm.spatial_windows import SpatialWindow


def _crop(x: torch.Tensor, window: SpatialWindow) -> torch.Tensor:
    """(C, F, H, W) -> (C, F, h, w) of the window."""
    b = window.box
    return x[..., b.y0 : b.y1, b.x0 : b.x1]


@torch.no_grad()
def sample_tiled_latents(
    unet,
    scheduler,
    condition: Condition,
    null_condition: Condition,
    global_tokens: torch.Tensor,
    null_global_tokens: torch.Tensor,
    fps: torch.Tensor,
    windows: Sequence[SpatialWindow],
    weights: Sequence[np.ndarray],
    *,
    max_batch: int,
    num_steps: int = 50,
    guidance: Guidance = Guidance(),
    init_latents: torch.Tensor | None = None,
    start_step: int = 0,
    generators: list[torch.Generator] | None = None,
    on_step: Callable[[int, int], None] | None = None,
    start: str = "full",
) -> torch.Tensor:
    """Denoise a batch of clips on a tiled canvas; returns (B, C, F, H, W) latents.

    Args:
        condition, null_condition: the whole canvas, (B, C, F, H, W) latents and (B, 1, F, H, W) masks.
        global_tokens: (S, T, D) tokens of each spatial window's global frames (one row per
            entry of ``windows``); null_global_tokens: (T, D), the null global condition.
        fps: (B,) frame rate of each clip.
        windows, weights: the kept windows and their merge weights (h, w) from
            :func:`lightning_m3ddm.spatial_windows.merge_weights`.
        max_batch: at most this many windows (clips x spatial windows) per UNet call.
        init_latents: (B, C, F, H, W) start, noised to the first timestep run; None: pure noise.
        start: where sampling starts, as :func:`~lightning_m3ddm.sampling.sample_latents`.
        start_step: then skip the first ``start_step`` timesteps (SDEdit: the coherence pass
            starts the tiled pass from its upscaled result).
        generators: one per clip; the noise is drawn for the whole canvas, clip by clip.

    Cells no window covers (known cells only) end as ``condition.masked_latents`` there.
    """
    b, _, f, h, w = condition.masked_latents.shape
    device, dtype = condition.masked_latents.device, unet.dtype
    if len(windows) != len(weights) or len(windows) != global_tokens.shape[0]:
        raise ValueError(
            f"{len(windows)} windows need as many weights and global tokens, got {len(weights)} and {global_tokens.shape[0]}"
        )
    shape = (b, unet.config.out_channels, f, h, w)
    latents, timesteps = start_latents(
        scheduler, shape, num_steps, init_latents, generators, device, dtype, start, start_step
    )
    weight = [torch.from_numpy(x).to(device, dtype) for x in weights]
    covered = torch.zeros(h, w, dtype=torch.bool, device=device)
    for window in windows:
        _crop(covered, window).fill_(True)
    items = [(k, s) for k in range(b) for s in range(len(windows))]
    step_kwargs = {"generator": generators} if "generator" in scheduler.step.__code__.co_varnames else {}
    for i, t in enumerate(timesteps):
        model_in = scheduler.scale_model_input(latents, t)
        merged = torch.zeros_like(latents)
        for first in range(0, len(items), max_batch):
            chunk = items[first : first + max_batch]

            def crops(x: torch.Tensor) -> torch.Tensor:
                return torch.stack([_crop(x[k], windows[s]) for k, s in chunk])

            eps = guided_noise(
                unet,
                crops(model_in),
                t.reshape(1).to(device),
                Condition(crops(condition.masked_latents), crops(condition.mask)),
                Condition(crops(null_condition.masked_latents), crops(null_condition.mask)),
                global_tokens[[s for _, s in chunk]],
                null_global_tokens.expand(len(chunk), *null_global_tokens.shape),
                fps[[k for k, _ in chunk]],
                guidance,
            )
            for (k, s), e in zip(chunk, eps):
                _crop(merged[k], windows[s]).add_(e * weight[s])
        latents = scheduler.step(merged, t, latents, **step_kwargs).prev_sample
        if on_step is not None:
            on_step(i + 1, len(timesteps))
    return torch.where(covered, latents, condition.masked_latents.to(latents.dtype))
