"""Aspect-ratio geometry: ratios, padding, model canvas, crops, output names."""

import math

import pytest

from lightning_m3ddm.geometry import (
    AspectRatio,
    Box,
    Padding,
    canvas_layout,
    is_copy_through,
    is_same_ratio,
    output_filename,
    padding_for_ratio,
    parse_padding,
    parse_ratio,
    parse_ratios,
    released_crop,
    target_padding,
)

RATIOS = ("9:16", "1:1", "16:9", "4:3", "3:4")
PORTRAIT = [(1080, 1920), (720, 1280), (480, 854), (359, 641), (600, 800), (101, 333)]
LANDSCAPE = [(1920, 1080), (1280, 720), (854, 480), (641, 359), (800, 600), (333, 101)]
SQUARE = [(512, 512), (1000, 1000), (255, 255), (64, 64)]
SOURCES = PORTRAIT + LANDSCAPE + SQUARE
# A sweep of odd and even sizes between thin portrait and wide landscape.
SWEEP = [(w, h) for w in range(90, 2000, 97) for h in range(90, 2000, 89) if 1 / 3 <= w / h <= 3]


def reference_source_box(width, height, ratio, canvas=256):
    """The released script's placement for one ratio: union frame's long side = canvas,
    source resized with int(), centered with (canvas - size) // 2."""
    r = ratio.value
    max_h, max_w = (height, r * height) if width / height < r else (width / r, width)
    max_dim = max(max_h, max_w)
    w, h = min(canvas, int(canvas / max_dim * width)), min(canvas, int(canvas / max_dim * height))
    x, y = (canvas - w) // 2, (canvas - h) // 2
    return Box(x, y, x + w, y + h)


# ---------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    "text, width, height, label",
    [
        ("9:16", 9, 16, "9:16"),
        (" 16 : 9 ", 16, 9, "16:9"),
        ("9-16", 9, 16, "9:16"),
        ("4/3", 4, 3, "4:3"),
        ("09:16", 9, 16, "9:16"),
        ("1.91:1", 1.91, 1, "1.91:1"),
        ("1:1", 1, 1, "1:1"),
    ],
)
def test_parse_ratio_accepts(text, width, height, label):
    ratio = parse_ratio(text)
    assert (ratio.width, ratio.height) == (width, height)
    assert ratio.label == label and str(ratio) == label
    assert ratio.file_label == label.replace(":", "-")
    assert math.isclose(ratio.value, width / height)
    assert parse_ratio(ratio.file_label) == ratio  # file names round-trip


@pytest.mark.parametrize(
    "text",
    ["", "   ", "abc", "9:", ":16", "0:1", "1:0", "0:0", "-9:16", "9:-16", "9:16:1",
     "0.5625", "16", "9x16", "nan:1", "inf:1", "9:16px", "1e3:1"],
)
def test_parse_ratio_rejects_with_the_input_named(text):
    with pytest.raises(ValueError, match="invalid aspect ratio") as info:
        parse_ratio(text)
    assert repr(text) in str(info.value)


@pytest.mark.parametrize("value", [None, 916, 0.5])
def test_parse_ratio_rejects_non_strings(value):
    with pytest.raises(ValueError, match="invalid aspect ratio"):
        parse_ratio(value)


def test_aspect_ratio_rejects_bad_sides():
    for sides in ((0, 1), (1, -2), (float("nan"), 1), (float("inf"), 1), (True, 1), ("9", 16)):
        with pytest.raises(ValueError, match="aspect ratio"):
            AspectRatio(*sides)


def test_parse_ratios():
    assert [r.label for r in parse_ratios("9:16,1:1")] == ["9:16", "1:1"]
    assert [r.label for r in parse_ratios(["9:16", "1:1,16:9"])] == ["9:16", "1:1", "16:9"]
    assert [r.label for r in parse_ratios("9:16, 9-16 ,1:1")] == ["9:16", "1:1"]
    assert parse_ratios(AspectRatio(4, 3)) == (AspectRatio(4, 3),)
    with pytest.raises(ValueError, match="'9:16,,1:1'"):
        parse_ratios("9:16,,1:1")
    with pytest.raises(ValueError, match="no aspect ratio"):
        parse_ratios([])


def test_parse_padding():
    assert parse_padding("0,0,420,420") == Padding(0, 0, 420, 420)
    assert parse_padding(" 1, 2 ,3,4") == Padding(1, 2, 3, 4)
    for bad in ("", "1,2,3", "1,2,3,4,5", "-1,0,0,0", "a,b,c,d", "1.5,0,0,0", None):
        with pytest.raises(ValueError, match="invalid padding") as info:
            parse_padding(bad)
        assert repr(bad) in str(info.value)
    with pytest.raises(ValueError, match="left"):
        Padding(-1, 0, 0, 0)
    with pytest.raises(ValueError, match="top"):
        Padding(0, 0, 1.5, 0)


def test_padding_is_the_band_widths_of_a_mask():
    """One class for bands per side: the outpainting border and the mask bands of training and evaluation."""
    bands = Padding(left=3, right=5, top=1, bottom=2)
    assert bands.inner_box(20, 10) == Box(3, 1, 15, 8)  # (width, height), as padded_size
    assert bands.band_fraction(20, 10) == pytest.approx(1 - 12 * 7 / 200)
    source = bands.inner_box(*bands.padded_size(12, 7))
    assert (source.width, source.height) == (12, 7)  # a padded source sits in the padded frame's inner box
    assert Padding.whole_frame(7, 4) == Padding(4, 3, 2, 2) and Padding.whole_frame(7, 4).band_fraction(7, 4) == 1.0
    import numpy as np

    sized = Padding(left=np.int64(8), right=np.int32(2))  # widths computed from array shapes
    assert sized == Padding(8, 2) and type(sized.left) is int
    with pytest.raises(ValueError, match="bottom"):
        Padding(bottom=True)


def test_bands_wider_than_the_frame_mask_all_of_it():
    """The old band classes disagreed here: MaskGeometry.masked_fraction said 1.0 for a band
    wider than the frame while its to_tensor (and MaskBands.to_mask, the same way) wrapped a
    negative slice bound around and left the first rows known. The inner box never wraps."""
    import torch

    from lightning_m3ddm.data.augmentation import band_mask_tensor
    from lightning_m3ddm.evaluation.protocols import band_mask

    for bands in (Padding(bottom=10), Padding(right=9), Padding(left=5, right=5), Padding(top=3, bottom=20)):
        inner = bands.inner_box(8, 6)
        assert inner.width * inner.height == 0 and bands.band_fraction(8, 6) == 1.0, bands
        assert band_mask(bands, 6, 8).all() and band_mask_tensor(bands, 6, 8).eq(1).all(), bands
    partial = Padding(left=2, top=1)
    assert torch.equal(band_mask_tensor(partial, 6, 8).bool(), torch.from_numpy(band_mask(partial, 6, 8)))


# ---------------------------------------------------------------- padding


@pytest.mark.parametrize("ratio_text", RATIOS + ("1.91:1", "2:3"))
def test_padding_for_ratio_properties(ratio_text):
    ratio = parse_ratio(ratio_text)
    r = ratio.value
    for width, height in SOURCES + SWEEP:
        pad = padding_for_ratio(width, height, ratio)
        new_w, new_h = pad.padded_size(width, height)
        # Only the missing axis grows, never shrinks, centered (extra pixel right/bottom).
        assert min(pad.left, pad.right, pad.top, pad.bottom) >= 0
        assert not ((pad.left or pad.right) and (pad.top or pad.bottom))
        assert 0 <= pad.right - pad.left <= 1 and 0 <= pad.bottom - pad.top <= 1
        # The padded frame has the target ratio to the nearest pixel on the padded axis.
        if pad.left or pad.right:
            assert abs(new_w - new_h * r) <= 0.5 + 1e-9
            assert width / height < r
        elif pad.top or pad.bottom:
            assert abs(new_h - new_w / r) <= 0.5 + 1e-9
            assert width / height > r
        else:
            assert is_same_ratio(width, height, ratio)


def test_padding_examples():
    assert padding_for_ratio(1920, 1080, parse_ratio("9:16")) == Padding(0, 0, 1166, 1167)
    assert padding_for_ratio(1920, 1080, parse_ratio("1:1")) == Padding(0, 0, 420, 420)
    assert padding_for_ratio(1080, 1920, parse_ratio("16:9")) == Padding(1166, 1167, 0, 0)
    assert padding_for_ratio(512, 512, parse_ratio("4:3")) == Padding(85, 86, 0, 0)
    assert padding_for_ratio(1920, 1080, parse_ratio("16:9")) == Padding()


def test_padding_multiple_of_two_for_the_encoder():
    for ratio_text in RATIOS:
        ratio = parse_ratio(ratio_text)
        for width, height in SOURCES + SWEEP:
            pad = padding_for_ratio(width, height, ratio, multiple=2)
            new_w, new_h = pad.padded_size(width, height)
            assert new_w % 2 == 0 and new_h % 2 == 0
            assert new_w >= width and new_h >= height
            assert abs(new_w / new_h - ratio.value) * new_h <= 2.0
    with pytest.raises(ValueError, match="multiple"):
        padding_for_ratio(10, 10, parse_ratio("1:1"), multiple=0)


def test_same_ratio_and_copy_through():
    assert is_same_ratio(1920, 1080, parse_ratio("16:9"))
    assert is_same_ratio(1080, 1920, parse_ratio("9:16"))
    assert is_same_ratio(720, 1281, parse_ratio("9:16"))  # 0.56 px off
    assert not is_same_ratio(720, 1284, parse_ratio("9:16"))
    assert not is_same_ratio(1920, 1080, parse_ratio("9:16"))
    assert is_copy_through(512, 512, parse_ratio("1:1"))
    assert is_copy_through(512, 512, Padding())
    assert not is_copy_through(512, 512, Padding(top=2))
    for ratio_text in RATIOS:
        ratio = parse_ratio(ratio_text)
        for width, height in SOURCES + SWEEP:
            pad = padding_for_ratio(width, height, ratio)
            added = pad.left + pad.right + pad.top + pad.bottom
            if is_same_ratio(width, height, ratio):
                assert added <= 1
            else:
                assert added >= 1


def test_target_padding():
    assert target_padding(640, 360, Padding(1, 2, 3, 4)) == Padding(1, 2, 3, 4)
    assert target_padding(640, 360, parse_ratio("1:1")) == padding_for_ratio(640, 360, parse_ratio("1:1"))
    with pytest.raises(ValueError, match="target"):
        target_padding(640, 360, "9:16")
    for size in ((0, 360), (640, -1), (640.0, 360)):
        with pytest.raises(ValueError, match="size"):
            padding_for_ratio(*size, parse_ratio("1:1"))


# ---------------------------------------------------------------- canvas


def check_layout(layout, width, height):
    cw, ch = layout.canvas_width, layout.canvas_height
    canvas = Box(0, 0, cw, ch)
    src, known = layout.source_box, layout.known_box
    assert canvas.contains(src)
    # The source keeps its aspect (to rounding) and its scale.
    assert abs(src.width - width * layout.scale) <= 0.5 + 1e-6
    assert abs(src.height - height * layout.scale) <= 0.5 + 1e-6
    # Mask rectangle: on the latent grid, inside the source, losing less than a cell per side.
    assert src.contains(known) and known.width > 0 and known.height > 0
    assert all(v % 8 == 0 for v in (known.x0, known.y0, known.x1, known.y1))
    assert known.x0 - src.x0 < 8 and known.y0 - src.y0 < 8
    assert src.x1 - known.x1 < 8 and src.y1 - known.y1 < 8
    assert layout.known_latent_box == Box(known.x0 // 8, known.y0 // 8, known.x1 // 8, known.y1 // 8)
    # The union of the targets' frames fills the canvas along one side.
    union = Box(
        min(c.x0 for c in layout.crops), min(c.y0 for c in layout.crops),
        max(c.x1 for c in layout.crops), max(c.y1 for c in layout.crops),
    )
    assert union.width == cw or union.height == ch
    for target, crop in zip(layout.targets, layout.crops):
        assert layout.crop_for(target) == crop
        assert canvas.contains(crop) and crop.contains(src)
        if isinstance(target, AspectRatio):
            r = target.value
            assert min(abs(crop.width - crop.height * r), abs(crop.height - crop.width / r)) <= 2, (target, crop)
    # Against the exact (float) layout: union of the target frames centered on the canvas,
    # long side filling it; every drawn edge within rounding of the exact one.
    frames = [exact_frame(width, height, t) for t in layout.targets]
    ux0, uy0 = min(0, *(f[0] for f in frames)), min(0, *(f[1] for f in frames))
    ux1, uy1 = max(width, *(f[2] for f in frames)), max(height, *(f[3] for f in frames))
    scale = min(cw / (ux1 - ux0), ch / (uy1 - uy0))
    assert math.isclose(layout.scale, scale)
    ox, oy = (cw - (ux1 - ux0) * scale) / 2 - ux0 * scale, (ch - (uy1 - uy0) * scale) / 2 - uy0 * scale
    for box, (fx0, fy0, fx1, fy1) in [(src, (0, 0, width, height))] + list(zip(layout.crops, frames)):
        exact = (ox + fx0 * scale, oy + fy0 * scale, ox + fx1 * scale, oy + fy1 * scale)
        for drawn, ideal in zip((box.x0, box.y0, box.x1, box.y1), exact):
            assert abs(drawn - ideal) <= 1.5, (box, exact)


def exact_frame(width, height, target):
    """A target's padded frame in source pixels, unrounded (source at [0, w) x [0, h))."""
    if isinstance(target, Padding):
        return (-target.left, -target.top, width + target.right, height + target.bottom)
    if width / height < target.value:
        new_w = height * target.value
        return ((width - new_w) / 2, 0, (width + new_w) / 2, height)
    new_h = width / target.value
    return (0, (height - new_h) / 2, width, (height + new_h) / 2)


@pytest.mark.parametrize("ratio_text", RATIOS)
def test_single_target_canvas_matches_released_script(ratio_text):
    ratio = parse_ratio(ratio_text)
    for width, height in SOURCES + SWEEP:
        layout = canvas_layout(width, height, [ratio])
        check_layout(layout, width, height)
        src, ref = layout.source_box, reference_source_box(width, height, ratio)
        for mine, theirs in zip((src.x0, src.y0, src.x1, src.y1), (ref.x0, ref.y0, ref.x1, ref.y1)):
            assert abs(mine - theirs) <= 1, (width, height, src, ref)
        crop, ref_crop = layout.crops[0], released_crop(256, 256, ratio)
        for mine, theirs in zip((crop.x0, crop.y0, crop.x1, crop.y1), (ref_crop.x0, ref_crop.y0, ref_crop.x1, ref_crop.y1)):
            assert abs(mine - theirs) <= 1, (width, height, crop, ref_crop)
        # Centered: the border is split evenly (to a pixel) on each side of the source.
        assert abs((src.x0 - crop.x0) - (crop.x1 - src.x1)) <= 1
        assert abs((src.y0 - crop.y0) - (crop.y1 - src.y1)) <= 1


def test_canvas_examples():
    layout = canvas_layout(1920, 1080, [parse_ratio("9:16")])
    assert layout.source_box == Box(56, 87, 200, 168)  # as the released script: 144x81 at (56, 87)
    assert layout.known_box == Box(56, 88, 200, 168)
    assert layout.crops == (Box(56, 0, 200, 256),)
    square = canvas_layout(512, 512, [parse_ratio("16:9")])
    assert square.source_box == Box(56, 56, 200, 200) and square.crops == (Box(0, 56, 256, 200),)


def test_several_targets_share_one_canvas():
    targets = [parse_ratio(t) for t in RATIOS]
    for width, height in SOURCES + SWEEP[::5]:
        layout = canvas_layout(width, height, targets)
        check_layout(layout, width, height)
        # Each target's crop is its own padded frame: minimal border, same as native output.
        for target, crop in zip(targets, layout.crops):
            pad = padding_for_ratio(width, height, target)
            new_w, new_h = pad.padded_size(width, height)
            assert abs(crop.width - new_w * layout.scale) <= 1.5
            assert abs(crop.height - new_h * layout.scale) <= 1.5
    # 16:9 source to 9:16 and 1:1: the 1:1 crop adds only top/bottom border.
    layout = canvas_layout(1920, 1080, [parse_ratio("9:16"), parse_ratio("1:1")])
    one = layout.crop_for(parse_ratio("1:1"))
    assert (one.x0, one.x1) == (layout.source_box.x0, layout.source_box.x1)
    # The released script's crops: the largest centered rectangle of each ratio.
    released = canvas_layout(1920, 1080, [parse_ratio("9:16"), parse_ratio("1:1")], crop_mode="released")
    assert released.crops == (Box(56, 0, 200, 256), Box(0, 0, 256, 256))
    with pytest.raises(ValueError, match="not part"):
        layout.crop_for(parse_ratio("4:3"))


def test_explicit_padding_targets():
    layout = canvas_layout(100, 100, [Padding(0, 100, 0, 0)])
    check_layout(layout, 100, 100)
    assert layout.source_box.x0 == 0 and layout.crops[0] == Box(0, 64, 256, 192)
    mixed = canvas_layout(640, 360, [Padding(0, 0, 0, 280), parse_ratio("1:1")])
    check_layout(mixed, 640, 360)
    pad_crop = mixed.crops[0]
    assert pad_crop.y0 == mixed.source_box.y0  # nothing added on top


def test_configurable_canvas():
    for canvas in ((512, 512), (256, 384), (384, 256), (64, 64)):
        for ratio_text in RATIOS:
            layout = canvas_layout(1280, 720, [parse_ratio(ratio_text)], *canvas)
            assert (layout.canvas_width, layout.canvas_height) == canvas
            check_layout(layout, 1280, 720)
    small = canvas_layout(32, 18, [parse_ratio("9:16")])  # tiny sources are upscaled
    assert small.scale > 1 and small.crops[0].height == 256


def test_canvas_bad_inputs():
    ratio = parse_ratio("9:16")
    with pytest.raises(ValueError, match="multiples of 8"):
        canvas_layout(640, 360, [ratio], 250, 256)
    with pytest.raises(ValueError, match="at least one target"):
        canvas_layout(640, 360, [])
    with pytest.raises(ValueError, match="source size"):
        canvas_layout(0, 360, [ratio])
    with pytest.raises(ValueError, match="canvas size"):
        canvas_layout(640, 360, [ratio], 0, 256)
    with pytest.raises(ValueError, match="crop_mode"):
        canvas_layout(640, 360, [ratio], crop_mode="largest")
    with pytest.raises(ValueError, match="target"):
        canvas_layout(640, 360, ["9:16"])
    with pytest.raises(ValueError, match="too extreme"):
        canvas_layout(1000, 1000, [parse_ratio("1:100")])


# ---------------------------------------------------------------- names


def test_output_filename():
    assert output_filename("clip", parse_ratio("9:16")) == "clip_9-16.mp4"
    assert output_filename("clip", parse_ratio("1:1")) == "clip_1-1.mp4"
    assert output_filename("ad.final", parse_ratio("1.91:1")) == "ad.final_1.91-1.mp4"
    assert output_filename("clip", Padding(0, 0, 8, 8)) == "clip_pad-0-0-8-8.mp4"
    for bad in ("", "a/b", "a\\b", None):
        with pytest.raises(ValueError, match="stem"):
            output_filename(bad, parse_ratio("9:16"))
    with pytest.raises(ValueError, match="target"):
        output_filename("clip", "9:16")
