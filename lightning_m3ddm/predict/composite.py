"""The output frame of one target from a source frame and its outpainted model canvas.

``native`` (default): the output is the source at its own resolution extended to the
target (:func:`native_padding`); the source pixels are copied unchanged and only the
border comes from the model, upscaled from the canvas (bicubic; area-averaged when
the source is smaller than the canvas). The model's border and the untouched source
meet in a seam: the generated side of it is corrected over a short band (``seam``
canvas pixels, i.e. ``seam / scale`` output pixels) by the difference between the
source and the upscaled model output at the nearest source pixel, fading linearly to
zero. The source side is never touched, so the output's source region is bit-exact.

``canvas``: the model-resolution result as the released script writes it: the canvas
crop of the target, with the resized source pasted over the source box.

Frames are RGB uint8 (H, W, 3); H.264 needs even sizes, so every output size is even.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import cv2
import numpy as np

from lightning_m3ddm.geometry import AspectRatio, Box, CanvasLayout, Padding, Target, target_padding
from lightning_m3ddm.predict.canvas import CanvasPainter

OutputMode = Literal["native", "canvas"]


class Compositor(Protocol):
    width: int
    height: int

    def __call__(self, source: np.ndarray, canvas: np.ndarray) -> np.ndarray: ...


def native_padding(width: int, height: int, target: Target) -> Padding:
    """Border of the native output: a ratio's centered padding with even output sides;
    explicit padding as given, plus one pixel right/bottom when a side would be odd."""
    if isinstance(target, AspectRatio):
        return target_padding(width, height, target, multiple=2)
    pad = target_padding(width, height, target)
    out_w, out_h = pad.padded_size(width, height)
    return Padding(pad.left, pad.right + out_w % 2, pad.top, pad.bottom + out_h % 2)


def _affine(box_x0: float, box_y0: float, sx: float, sy: float, left: int, top: int) -> np.ndarray:
    """2x3 matrix from canvas pixels (source box at (box_x0, box_y0), ``sx``/``sy`` canvas px per
    source px) to output pixels (source at (left, top)); pixel centers at +0.5."""
    return np.array(
        [[1 / sx, 0.0, (0.5 - box_x0) / sx + left - 0.5], [0.0, 1 / sy, (0.5 - box_y0) / sy + top - 0.5]],
        dtype=np.float64,
    )


@dataclass
class NativeCompositor:
    """Output = the source at native resolution plus the upscaled generated border.

    Args:
        width, height: source size.
        layout: the canvas layout the video was generated with.
        target: one of ``layout.targets``.
        seam: width of the feathered seam in canvas pixels (0 disables it).
    """

    source_width: int
    source_height: int
    layout: CanvasLayout
    target: Target
    seam: float = 2.0

    def __post_init__(self) -> None:
        sw, sh = self.source_width, self.source_height
        self.padding = native_padding(sw, sh, self.target)
        self.width, self.height = self.padding.padded_size(sw, sh)
        box = self.layout.source_box
        sx, sy = box.width / sw, box.height / sh  # canvas px per source px
        # Shrinking by more than a little aliases with an interpolating warp: area-average first.
        cw, ch = self.layout.canvas_width, self.layout.canvas_height
        self._prescale = None
        if sx > 1.25 or sy > 1.25:
            pw, ph = max(1, round(cw / sx)), max(1, round(ch / sy))
            self._prescale = (pw, ph)
            fx, fy = pw / cw, ph / ch
            self._matrix = _affine(box.x0 * fx, box.y0 * fy, sx * fx, sy * fy, self.padding.left, self.padding.top)
        else:
            self._matrix = _affine(box.x0, box.y0, sx, sy, self.padding.left, self.padding.top)
        self._band = self._seam_band(self.seam / min(sx, sy)) if self.seam > 0 else None

    def _seam_band(self, width_px: float):
        """Output pixels within ``width_px`` of the source rectangle, their nearest source pixel and weight.

        Only the strips around the rectangle are enumerated (not the whole frame).
        """
        left, top = self.padding.left, self.padding.top
        right, bottom = left + self.source_width - 1, top + self.source_height - 1
        reach = int(np.ceil(width_px))
        x_lo, x_hi = max(0, left - reach), min(self.width - 1, right + reach)
        y_lo, y_hi = max(0, top - reach), min(self.height - 1, bottom + reach)
        strips = [  # (y range, x range), half-open: above, below, left of, right of the source
            ((y_lo, top), (x_lo, x_hi + 1)),
            ((bottom + 1, y_hi + 1), (x_lo, x_hi + 1)),
            ((top, bottom + 1), (x_lo, left)),
            ((top, bottom + 1), (right + 1, x_hi + 1)),
        ]
        ys, xs = [], []
        for (ya, yb), (xa, xb) in strips:
            if ya < yb and xa < xb:
                grid_y, grid_x = np.mgrid[ya:yb, xa:xb]
                ys.append(grid_y.ravel())
                xs.append(grid_x.ravel())
        if not ys:
            return None
        y, x = np.concatenate(ys), np.concatenate(xs)
        near_y, near_x = np.clip(y, top, bottom), np.clip(x, left, right)
        distance = np.maximum(np.abs(y - near_y), np.abs(x - near_x))  # >= 1 outside the source
        weight = 1.0 - distance / (width_px + 1.0)
        keep = weight > 0
        return y[keep], x[keep], near_y[keep], near_x[keep], weight[keep].astype(np.float32)[:, None]

    def upscale(self, canvas: np.ndarray) -> np.ndarray:
        """The whole canvas mapped to the output frame (border pixels replicated past its edge)."""
        if self._prescale is not None:
            canvas = cv2.resize(canvas, self._prescale, interpolation=cv2.INTER_AREA)
        return cv2.warpAffine(
            canvas, self._matrix, (self.width, self.height), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE
        )

    def __call__(self, source: np.ndarray, canvas: np.ndarray) -> np.ndarray:
        if source.shape != (self.source_height, self.source_width, 3):
            raise ValueError(f"source frame {source.shape} != ({self.source_height}, {self.source_width}, 3)")
        out = self.upscale(canvas)
        left, top = self.padding.left, self.padding.top
        if self._band is not None:
            y, x, ny, nx, weight = self._band
            offset = source[ny - top, nx - left].astype(np.float32) - out[ny, nx].astype(np.float32)
            out[y, x] = np.clip(out[y, x] + weight * offset, 0, 255).round().astype(np.uint8)
        out[top : top + self.source_height, left : left + self.source_width] = source
        return out


def even_box(box: Box, width: int, height: int) -> Box:
    """``box`` grown (or, at the canvas edge, shrunk) by one pixel where a side is odd."""
    x0, y0, x1, y1 = box.x0, box.y0, box.x1, box.y1
    if (x1 - x0) % 2:
        x1, x0 = (x1 + 1, x0) if x1 < width else ((x1, x0 - 1) if x0 > 0 else (x1 - 1, x0))
    if (y1 - y0) % 2:
        y1, y0 = (y1 + 1, y0) if y1 < height else ((y1, y0 - 1) if y0 > 0 else (y1 - 1, y0))
    return Box(x0, y0, x1, y1)


@dataclass
class CanvasCompositor:
    """Output = the target's crop of the model canvas, the resized source pasted in (released script)."""

    painter: CanvasPainter
    target: Target

    def __post_init__(self) -> None:
        layout = self.painter.layout
        self.crop = even_box(layout.crop_for(self.target), layout.canvas_width, layout.canvas_height)
        self.width, self.height = self.crop.width, self.crop.height

    def __call__(self, source: np.ndarray, canvas: np.ndarray) -> np.ndarray:
        box, crop = self.painter.layout.source_box, self.crop
        out = canvas.copy()
        out[box.y0 : box.y1, box.x0 : box.x1] = self.painter.resized_source(source)
        return np.ascontiguousarray(out[crop.y0 : crop.y1, crop.x0 : crop.x1])


def make_compositor(
    mode: OutputMode, painter: CanvasPainter, source_width: int, source_height: int, target: Target, seam: float = 2.0
) -> Compositor:
    if mode == "native":
        return NativeCompositor(source_width, source_height, painter.layout, target, seam)
    if mode == "canvas":
        return CanvasCompositor(painter, target)
    raise ValueError(f"output mode must be 'native' or 'canvas', got {mode!r}")
