"""Output frames: native resolution keeps the source bit-exact, border upscaled in place, seam, canvas mode."""

import numpy as np
import pytest

from lightning_m3ddm.geometry import Box, Padding, canvas_layout, parse_ratio
from lightning_m3ddm.predict.canvas import CanvasPainter
from lightning_m3ddm.predict.composite import (
    CanvasCompositor,
    NativeCompositor,
    even_box,
    make_compositor,
    native_padding,
)

SOURCES = {"landscape": (176, 144), "hd": (1280, 720), "portrait": (90, 160), "square": (100, 100), "odd": (75, 49)}
RATIOS = ["9:16", "1:1", "16:9", "4:5"]


def coordinate_canvas(size: int = 256) -> np.ndarray:
    """Red = canvas x, green = canvas y: the value of an upscaled pixel says where it came from."""
    y, x = np.mgrid[0:size, 0:size]
    return np.stack([x, y, np.full_like(x, 50)], axis=-1).astype(np.uint8)


def random_source(w: int, h: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("ratio", RATIOS)
def test_native_keeps_source_pixels_exactly_and_has_the_ratio(source, ratio):
    w, h = SOURCES[source]
    target = parse_ratio(ratio)
    layout = canvas_layout(w, h, [target])
    comp = NativeCompositor(w, h, layout, target, seam=2.0)
    src = random_source(w, h)
    out = comp(src, np.random.default_rng(1).integers(0, 256, (256, 256, 3), dtype=np.uint8))
    pad = comp.padding
    assert out.shape == (comp.height, comp.width, 3) and out.dtype == np.uint8
    assert comp.width % 2 == 0 and comp.height % 2 == 0
    assert comp.width >= w and comp.height >= h
    np.testing.assert_array_equal(out[pad.top : pad.top + h, pad.left : pad.left + w], src)
    assert abs(comp.width / comp.height - target.value) <= 2.0 / min(comp.width, comp.height) + 1e-9


@pytest.mark.parametrize("source", ["landscape", "hd", "portrait"])
def test_border_is_the_canvas_upscaled_in_place(source):
    """Away from the seam, each output pixel holds the canvas value at its mapped position."""
    w, h = SOURCES[source]
    target = parse_ratio("9:16") if w > h else parse_ratio("16:9")
    layout = canvas_layout(w, h, [target])
    comp = NativeCompositor(w, h, layout, target, seam=0)
    out = comp(np.zeros((h, w, 3), np.uint8), coordinate_canvas()).astype(float)
    pad, box = comp.padding, layout.source_box
    ys, xs = np.mgrid[0 : comp.height, 0 : comp.width]
    expect_x = box.x0 + (xs - pad.left + 0.5) * box.width / w - 0.5
    expect_y = box.y0 + (ys - pad.top + 0.5) * box.height / h - 0.5
    outside = (xs < pad.left) | (xs >= pad.left + w) | (ys < pad.top) | (ys >= pad.top + h)
    on_canvas = (expect_x > 1) & (expect_x < 254) & (expect_y > 1) & (expect_y < 254)
    check = outside & on_canvas
    assert check.sum() > 100
    assert np.abs(out[..., 0] - expect_x)[check].max() < 1.0
    assert np.abs(out[..., 1] - expect_y)[check].max() < 1.0


def test_seam_corrects_generated_side_only_and_fades_out():
    w, h = 176, 144
    target = parse_ratio("9:16")
    layout = canvas_layout(w, h, [target])
    src = np.full((h, w, 3), 200, np.uint8)
    canvas = np.full((256, 256, 3), 40, np.uint8)
    hard = NativeCompositor(w, h, layout, target, seam=0)(src, canvas).astype(int)
    soft_comp = NativeCompositor(w, h, layout, target, seam=4.0)
    soft = soft_comp(src, canvas).astype(int)
    top = soft_comp.padding.top
    band_px = 4.0 / (layout.source_box.height / h)  # 4 canvas px in output px
    # source rows identical; just above the source the seam pulls towards the source value, fading
    np.testing.assert_array_equal(soft[top : top + h], hard[top : top + h])
    column = soft[:top, w // 2, 0]
    assert column[-1] > column[-2] > column[-3] > 40 and column[-1] < 200
    far = int(np.ceil(band_px)) + 1
    np.testing.assert_array_equal(soft[: top - far], hard[: top - far])
    assert (hard[:top, :, 0] == 40).all()


def test_native_padding_even_and_explicit():
    assert native_padding(176, 144, parse_ratio("9:16")).padded_size(176, 144) == (176, 312)
    assert native_padding(75, 49, parse_ratio("1:1")).padded_size(75, 49)[0] % 2 == 0
    pad = native_padding(100, 100, Padding(3, 4, 0, 1))
    assert pad == Padding(3, 5, 0, 2) and pad.padded_size(100, 100) == (108, 102)


def test_explicit_padding_target():
    w, h = 120, 90
    target = Padding(left=0, right=0, top=30, bottom=30)
    layout = canvas_layout(w, h, [target])
    comp = make_compositor("native", CanvasPainter(layout, 8), w, h, target)
    src = random_source(w, h)
    out = comp(src, coordinate_canvas())
    assert out.shape == (150, 120, 3)
    np.testing.assert_array_equal(out[30:120], src)


def test_canvas_mode_is_the_crop_with_the_resized_source_pasted():
    w, h = 176, 144
    target = parse_ratio("9:16")
    layout = canvas_layout(w, h, [target])
    painter = CanvasPainter(layout, 8)
    comp = make_compositor("canvas", painter, w, h, target)
    assert isinstance(comp, CanvasCompositor)
    src = random_source(w, h)
    canvas = coordinate_canvas()
    out = comp(src, canvas)
    crop, box = comp.crop, layout.source_box
    assert crop.contains(box) and out.shape == (crop.height, crop.width, 3)
    assert out.shape[0] % 2 == 0 and out.shape[1] % 2 == 0
    inner = out[box.y0 - crop.y0 : box.y1 - crop.y0, box.x0 - crop.x0 : box.x1 - crop.x0]
    np.testing.assert_array_equal(inner, painter.resized_source(src))
    np.testing.assert_array_equal(out[0], canvas[crop.y0, crop.x0 : crop.x1])


def test_even_box():
    assert even_box(Box(0, 0, 5, 4), 10, 10) == Box(0, 0, 6, 4)
    assert even_box(Box(3, 0, 10, 4), 10, 10) == Box(2, 0, 10, 4)
    assert even_box(Box(0, 1, 4, 10), 4, 10) == Box(0, 0, 4, 10)
    assert even_box(Box(0, 0, 3, 3), 3, 3) == Box(0, 0, 2, 2)
