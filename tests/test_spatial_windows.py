"""Spatial windows of a tiled canvas: planning and merge weights, pure (no tensors)."""

import itertools

import numpy as np
import pytest

from lightning_m3ddm.geometry import Box
from lightning_m3ddm.spatial_windows import (
    axis_starts,
    merge_weights,
    overlap_cells,
    placed_weight_sum,
    plan_spatial_windows,
    tiled_canvas_size,
)


@pytest.mark.parametrize("length,window,overlap", [(16, 8, 4), (24, 8, 4), (32, 16, 8), (33, 16, 3), (64, 32, 0), (20, 8, 7)])
def test_axis_starts_cover_with_the_overlap_and_no_more_windows_than_needed(length, window, overlap):
    starts = axis_starts(length, window, overlap)
    assert starts[0] == 0 and starts[-1] + window == length
    gaps = np.diff(starts)
    assert (gaps > 0).all() and (gaps <= window - overlap).all()  # neighbours share >= overlap cells
    if len(starts) > 1:  # one window fewer could not cover with that overlap
        assert (len(starts) - 2) * (window - overlap) + window < length


def test_axis_starts_refuse_a_canvas_below_the_window_and_a_full_overlap():
    assert axis_starts(8, 8, 4) == (0,)
    with pytest.raises(ValueError, match="at least one window"):
        axis_starts(7, 8, 4)
    with pytest.raises(ValueError, match="overlap"):
        axis_starts(16, 8, 8)


def covered(canvas, windows) -> np.ndarray:
    grid = np.zeros((canvas[1], canvas[0]), bool)
    for w in windows:
        grid[w.box.y0 : w.box.y1, w.box.x0 : w.box.x1] = True
    return grid


def outside(canvas, known: Box) -> np.ndarray:
    grid = np.ones((canvas[1], canvas[0]), bool)
    grid[known.y0 : known.y1, known.x0 : known.x1] = False
    return grid


@pytest.mark.parametrize(
    "canvas,known",
    [((32, 32), Box(4, 8, 28, 24)), ((24, 24), Box(3, 6, 21, 18)), ((48, 32), Box(10, 0, 38, 32)), ((16, 16), Box(2, 2, 14, 14))],
)
def test_windows_cover_every_cell_to_generate_and_skip_windows_inside_the_source(canvas, known):
    window, overlap = (8, 8), 4
    every = plan_spatial_windows(canvas, window, overlap)
    kept = plan_spatial_windows(canvas, window, overlap, known)
    skipped = [w for w in every if w not in kept]
    assert covered(canvas, every).all()
    assert all(known.contains(w.box) for w in skipped) and not any(known.contains(w.box) for w in kept)
    assert skipped  # these layouts all have windows with nothing to generate
    assert covered(canvas, kept)[outside(canvas, known)].all()
    assert all(w.box.width == 8 and w.box.height == 8 for w in kept)
    assert len({w.index for w in kept}) == len(kept)


def test_grid_neighbours_share_the_overlap():
    windows = plan_spatial_windows((40, 24), (16, 16), 6)
    xs = sorted({w.box.x0 for w in windows})
    ys = sorted({w.box.y0 for w in windows})
    assert len(windows) == len(xs) * len(ys) == 4 * 2  # (40 - 16) / (16 - 6) = 2.4 steps: 4 columns
    assert all(b - a <= 16 - 6 for a, b in itertools.pairwise(xs))
    assert all(b - a <= 16 - 6 for a, b in itertools.pairwise(ys))


@pytest.mark.parametrize(
    "canvas,window,overlap,known",
    [((32, 32), (8, 8), 4, Box(4, 8, 28, 24)), ((40, 24), (16, 16), 6, None), ((33, 17), (16, 16), 3, Box(0, 0, 16, 17)), ((8, 8), (8, 8), 4, None)],
)
def test_merge_weights_sum_to_one_where_covered_and_ramp_smoothly(canvas, window, overlap, known):
    windows = plan_spatial_windows(canvas, window, overlap, known)
    weights = merge_weights(canvas, window, overlap, windows)
    total = placed_weight_sum(canvas, windows, weights)
    inside = covered(canvas, windows)
    np.testing.assert_allclose(total[inside], 1.0, atol=1e-6)
    assert (total[~inside] == 0).all()
    for w, weight in zip(windows, weights):
        assert weight.shape == (window[1], window[0]) and (weight > 0).all() and (weight <= 1 + 1e-6).all()
        placed = np.zeros((canvas[1], canvas[0]))
        placed[w.box.y0 : w.box.y1, w.box.x0 : w.box.x1] = weight
        # a hard partition would jump by 1 at a window border; the ramps spread that over the overlap
        # (checked where the border is generated: known cells are replaced by the source)
        todo = outside(canvas, known) if known is not None else inside
        jump = max(np.abs(np.diff(placed, axis=0))[todo[1:] & todo[:-1]].max(initial=0),
                   np.abs(np.diff(placed, axis=1))[todo[:, 1:] & todo[:, :-1]].max(initial=0))
        assert jump <= 2 / (overlap + 1) + 1e-6 if len(windows) > 1 else jump == 0


def test_canvas_size_and_overlap_settings():
    assert tiled_canvas_size((256, 256), 1, 8) == (256, 256)
    assert tiled_canvas_size((256, 256), 2, 8) == (512, 512)
    assert tiled_canvas_size((64, 64), 1.7, 8) == (112, 112)  # 108.8 -> the 8-px grid
    assert overlap_cells((32, 32), 0.5) == 16 and overlap_cells((16, 8), 0.25) == 2 and overlap_cells((8, 8), 0.99) == 7
    for bad in (0.5, float("nan"), "2"):
        with pytest.raises(ValueError, match="canvas scale"):
            tiled_canvas_size((64, 64), bad, 8)
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="overlap"):
            overlap_cells((8, 8), bad)
