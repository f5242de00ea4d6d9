"""Overlapping model-size windows over a canvas larger than the model's, and their merge weights.

The released model generates a 256-pixel canvas; a larger canvas (512, 1024, ...) is
generated as overlapping windows of the model's size, in latent space, denoised together
and merged after every denoising step (MultiDiffusion, Bar-Tal et al., ICML 2023;
Follow-Your-Canvas and HL-OutPaint do the same for video). This module decides where the
windows go and how much each one counts at every latent cell; it holds no tensors (the
sampler, :mod:`lightning_m3ddm.tiled_sampling`, applies them).

Decisions (tested in tests/test_spatial_windows.py):

* Along each axis the windows are evenly spread from one canvas edge to the other, as few
  as give neighbours at least ``overlap`` shared cells; the first and last touch the edges.
* A window entirely inside the known (source) box has nothing to generate and is skipped;
  every cell outside the known box stays covered by the windows that are left.
* Weights: inside a window, 1, ramping down linearly towards each side where it overlaps
  a neighbour (over the cells they share), never to 0; a side on the canvas edge stays 1.
  Each window's weight is divided by the sum of the weights of all kept windows at that
  cell, so the weights of the windows covering a cell sum to 1 and the merged prediction
  changes smoothly across window borders. Cells that no kept window covers (known cells
  only) have weight 0 everywhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from lightning_m3ddm.geometry import Box


@dataclass(frozen=True)
class SpatialWindow:
    """One model-size window of the canvas, in latent cells (half-open box)."""

    index: int
    box: Box


def axis_starts(length: int, window: int, overlap: int) -> tuple[int, ...]:
    """Starts of windows of ``window`` cells covering ``[0, length)``, neighbours sharing >= ``overlap`` cells.

    As few windows as that allows, evenly spread; the first starts at 0, the last ends at ``length``.

    Raises:
        ValueError: ``length`` < ``window``, or ``overlap`` outside ``[0, window)``.
    """
    if window < 1 or length < window:
        raise ValueError(f"the canvas ({length} latent cells) must be at least one window ({window}) long")
    if not 0 <= overlap < window:
        raise ValueError(f"window overlap must be in [0, {window}) latent cells, got {overlap}")
    if length == window:
        return (0,)
    count = math.ceil((length - window) / (window - overlap)) + 1
    # rounding an even spread keeps every gap <= window - overlap (its ceiling is an integer bound)
    return tuple(round(i * (length - window) / (count - 1)) for i in range(count))


def plan_spatial_windows(
    canvas: tuple[int, int], window: tuple[int, int], overlap: int, known: Box | None = None
) -> tuple[SpatialWindow, ...]:
    """Windows over a ``canvas`` of (width, height) latent cells, row by row.

    Args:
        canvas: (width, height) of the canvas in latent cells.
        window: (width, height) of the model's canvas in latent cells.
        overlap: cells shared by neighbouring windows, at least.
        known: the known box (mask 0) in latent cells; windows inside it are skipped.
            Window indices count the skipped ones too, so they name a grid position.
    """
    xs = axis_starts(canvas[0], window[0], overlap)
    ys = axis_starts(canvas[1], window[1], overlap)
    windows = []
    for row, y in enumerate(ys):
        for col, x in enumerate(xs):
            box = Box(x, y, x + window[0], y + window[1])
            if known is not None and known.contains(box):
                continue
            windows.append(SpatialWindow(row * len(xs) + col, box))
    return tuple(windows)


def _profile(start: int, size: int, starts: tuple[int, ...]) -> np.ndarray:
    """(size,) weights of the window at ``start`` along one axis: 1, ramping down over what it shares."""
    before = [s + size - start for s in starts if start - size < s < start]  # cells shared with the one before
    after = [start + size - s for s in starts if start < s < start + size]
    ramp_lo = max(before, default=0)
    ramp_hi = max(after, default=0)
    position = np.arange(size, dtype=np.float64)
    weight = np.ones(size)
    if ramp_lo:
        weight = np.minimum(weight, (position + 1) / (ramp_lo + 1))
    if ramp_hi:
        weight = np.minimum(weight, (size - position) / (ramp_hi + 1))
    return weight


def merge_weights(
    canvas: tuple[int, int], window: tuple[int, int], overlap: int, windows: tuple[SpatialWindow, ...]
) -> tuple[np.ndarray, ...]:
    """Each window's merge weights, (window height, window width) float32, normalised over ``windows``.

    ``windows`` come from :func:`plan_spatial_windows` with the same ``canvas``, ``window`` and
    ``overlap`` (skipped windows left out). Placed on the canvas, the weights of the windows
    covering a cell sum to 1.
    """
    xs = axis_starts(canvas[0], window[0], overlap)
    ys = axis_starts(canvas[1], window[1], overlap)
    raw = [np.outer(_profile(w.box.y0, window[1], ys), _profile(w.box.x0, window[0], xs)) for w in windows]
    total = placed_weight_sum(canvas, windows, raw)
    return tuple(
        (r / total[w.box.y0 : w.box.y1, w.box.x0 : w.box.x1]).astype(np.float32) for w, r in zip(windows, raw)
    )


def placed_weight_sum(canvas: tuple[int, int], windows: tuple[SpatialWindow, ...], weights) -> np.ndarray:
    """(height, width): the sum over ``windows`` of their ``weights`` placed on the canvas (1 where covered)."""
    total = np.zeros((canvas[1], canvas[0]))
    for w, weight in zip(windows, weights):
        total[w.box.y0 : w.box.y1, w.box.x0 : w.box.x1] += weight
    return total


def tiled_canvas_size(model_size: tuple[int, int], scale: float, multiple: int) -> tuple[int, int]:
    """Generation canvas (width, height) in pixels: ``scale`` times the model's, rounded to ``multiple`` px."""
    if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale >= 1):
        raise ValueError(f"canvas scale must be a number >= 1 (1 = the model's canvas, untiled), got {scale!r}")
    return tuple(max(side, round(side * scale / multiple) * multiple) for side in model_size)


def overlap_cells(window: tuple[int, int], fraction: float) -> int:
    """Overlap in latent cells for a fraction of the window's shorter side, in ``[0, side - 1]``."""
    if not (isinstance(fraction, (int, float)) and 0 <= fraction < 1):
        raise ValueError(f"window overlap must be a fraction in [0, 1), got {fraction!r}")
    side = min(window)
    return min(side - 1, round(fraction * side))
