"""Predict on a canvas larger than the model's: settings, windows of one video, coherence start.

With :class:`TilingConfig` ``scale`` > 1 the :class:`~lightning_m3ddm.predict.pipeline.OutpaintingPipeline`
lays the video out on a canvas ``scale`` times the model's and denoises it as overlapping
model-size windows merged at every step (:mod:`lightning_m3ddm.spatial_windows`,
:mod:`lightning_m3ddm.tiled_sampling`), so the generated border is made at that resolution
instead of being upscaled from the model's canvas. Every window has its own crop of the
context latents and mask; its global frames are the whole canvas's shrunk to the model's
size (``resize``, one set of tokens for all windows) or its own crop of them (``crop``).

The optional coherence pass (``coherence``) first outpaints the model's canvas as usual;
its result, upscaled to the tiled canvas with the source drawn over it, is noised to an
intermediate step and the tiled pass runs only the rest of the schedule (SDEdit, Meng et
al., ICLR 2022), so windows that each see only part of the canvas start from one layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from lightning_m3ddm.predict.canvas import CanvasPainter
from lightning_m3ddm.spatial_windows import (
    SpatialWindow,
    merge_weights,
    overlap_cells,
    plan_spatial_windows,
    tiled_canvas_size,
)


@dataclass(frozen=True)
class TilingConfig:
    """Generation beyond the model's canvas.

    Attributes:
        scale: the generation canvas is ``scale`` times the model's (rounded to the latent
            grid); 1: the model's canvas, untiled, as trained (default).
        overlap: fraction of a window that its neighbours share with it, at least.
        global_frames: ``resize``: every window sees the whole canvas's global frames
            shrunk to the model's canvas; ``crop``: its own part of them.
        coherence: generate the model's canvas first and start the tiled pass from it.
        coherence_strength: fraction of the denoising steps the tiled pass runs after
            the coherence pass (it starts from the upscaled result noised to that step).
    """

    scale: float = 1.0
    overlap: float = 0.5
    global_frames: Literal["resize", "crop"] = "resize"
    coherence: bool = False
    coherence_strength: float = 0.5

    def __post_init__(self) -> None:
        tiled_canvas_size((8, 8), self.scale, 8)  # validates the scale
        overlap_cells((8, 8), self.overlap)  # validates the fraction
        if self.global_frames not in ("resize", "crop"):
            raise ValueError(f"tiling global_frames must be 'resize' or 'crop', got {self.global_frames!r}")
        if not 0 < self.coherence_strength <= 1:
            raise ValueError(f"coherence_strength must be in (0, 1], got {self.coherence_strength!r}")

    def canvas(self, model_canvas: tuple[int, int], multiple: int) -> tuple[int, int]:
        """(width, height) of the generation canvas in pixels."""
        return tiled_canvas_size(model_canvas, self.scale, multiple)

    def start_step(self, num_steps: int) -> int:
        """Denoising steps the tiled pass skips: those the coherence pass stands for (0 without it)."""
        if not self.coherence:
            return 0
        return num_steps - max(1, round(self.coherence_strength * num_steps))


@dataclass(frozen=True)
class VideoTiles:
    """The kept windows of one video's canvas and their merge weights, in latent cells."""

    window: tuple[int, int]
    windows: tuple[SpatialWindow, ...]
    weights: tuple[np.ndarray, ...]

    @classmethod
    def plan(cls, config: TilingConfig, painter: CanvasPainter, model_canvas: tuple[int, int]) -> "VideoTiles":
        d = painter.downscale
        window = (model_canvas[0] // d, model_canvas[1] // d)
        overlap = overlap_cells(window, config.overlap)
        windows = plan_spatial_windows(painter.latent_size, window, overlap, painter.known_latent)
        return cls(window, windows, merge_weights(painter.latent_size, window, overlap, windows))


def shrink_to(canvases: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(N, H, W, 3) uint8 canvases area-averaged to ``size`` (width, height)."""
    return np.stack([cv2.resize(c, size, interpolation=cv2.INTER_AREA) for c in canvases])


def coherence_start(painter: CanvasPainter, masked: np.ndarray, model_canvas: np.ndarray) -> np.ndarray:
    """Start canvas of the tiled pass: the coherence pass's canvas upscaled (bicubic), the known
    cells of the ``masked`` context canvas (the source at the tiled canvas's resolution) over it."""
    cw, ch = painter.canvas_size
    start = cv2.resize(model_canvas, (cw, ch), interpolation=cv2.INTER_CUBIC)
    k = painter.known_pixels
    start[k.y0 : k.y1, k.x0 : k.x1] = masked[k.y0 : k.y1, k.x0 : k.x1]
    return start
