"""Aspect-ratio geometry for outpainting: targets, padding, model canvas, crops.

Pure integer/float math, no tensors. Coordinates are pixels, boxes half-open
``[x0, x1) x [y0, y1)``, sizes ``(width, height)``.

Targets are either an :class:`AspectRatio` (the frame is extended, centered, to
that ratio) or an explicit :class:`Padding` in source pixels per side. Source
pixels are never cropped: a target only ever adds border. :class:`Padding` is also
the band widths of every mask (training augmentation, evaluation protocols): the
region to generate is the bands, the known region the box inside them.

Model canvas (:func:`canvas_layout`), as the released inference script builds it
(``preprocess_frames_speed_square``): one canvas serves all targets of a video.
Take the union of the padded frames of all targets (for ratios: the source
extended to each ratio), scale it so that its long side fills the canvas (256 by
default), draw the scaled source centered in that union on the canvas, and mark
everything else on the canvas as "to generate" (the corners of a square canvas
beyond the union frame included). After generation each target is cropped from
the canvas (:attr:`CanvasLayout.crops`). Deviations from the released script:

* Sizes are rounded to the nearest pixel (the script truncates with ``int``,
  which loses a pixel when the float product lands just under an integer).
* Sources smaller than the canvas are upscaled; the script shrinks the canvas
  to the source instead, which breaks the 8-pixel latent grid.
* The crop for a target is, by default, that target's own padded frame on the
  canvas (``crop_mode="padded"``): the same border the native-resolution output
  adds. For a single target this is the script's crop (to a pixel, tested);
  with several targets the script crops the largest centered rectangle of each
  ratio from the whole canvas (so e.g. a 1:1 crop next to a 9:16 one also gets
  left/right border), available as ``crop_mode="released"``.
* The known region (mask 0) is the source rectangle shrunk inward to the latent
  grid (multiples of 8 px), :attr:`CanvasLayout.known_box`, so that every latent
  cell marked known holds only source pixels. The script downsamples its pixel
  mask with nearest neighbour, which can mark a cell on the right/bottom edge as
  known although part of it is black padding.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Union

# Released model: trained and run on 256x256 frames (released inference script).
CANVAS_SIZE = 256
# Stable Diffusion VAE: one latent cell per 8x8 pixels.
LATENT_SCALE = 8

CropMode = Literal["padded", "released"]

_NUMBER = r"(\d+(?:\.\d*)?|\.\d+)"
_RATIO_RE = re.compile(rf"^\s*{_NUMBER}\s*[:/-]\s*{_NUMBER}\s*$")
_EPS = 1e-6


def _format_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


@dataclass(frozen=True)
class AspectRatio:
    """Width-to-height ratio, e.g. ``AspectRatio(9, 16)`` for a vertical feed."""

    width: float
    height: float

    def __post_init__(self) -> None:
        for side in (self.width, self.height):
            if isinstance(side, bool) or not isinstance(side, (int, float)) or not (
                math.isfinite(side) and side > 0
            ):
                raise ValueError(
                    f"aspect ratio sides must be positive finite numbers, got "
                    f"{self.width!r}:{self.height!r}"
                )

    @property
    def value(self) -> float:
        """width / height."""
        return self.width / self.height

    @property
    def label(self) -> str:
        """Canonical spelling, e.g. ``"9:16"``, ``"1.91:1"``."""
        return f"{_format_number(self.width)}:{_format_number(self.height)}"

    @property
    def file_label(self) -> str:
        """Spelling for file names, ``':'`` as ``'-'``, e.g. ``"9-16"``."""
        return self.label.replace(":", "-")

    def __str__(self) -> str:
        return self.label


@dataclass(frozen=True)
class Padding:
    """Band widths in pixels on each side of a frame (all >= 0): the one rule for "bands per side".

    As an outpainting target: the border added around a source frame. As a mask (training
    augmentation, evaluation protocols): the bands of a frame to generate, the known
    rectangle (:meth:`inner_box`) in between. Both are the same thing seen from the padded
    frame: a source padded by ``p`` sits at ``p.inner_box`` of the padded frame, and
    evaluation outpaints a protocol's bands by taking them as the padding target.

    Fields are in the order of ``--padding LEFT,RIGHT,TOP,BOTTOM`` and of :attr:`label`;
    build it with keywords where the order is not obvious.
    """

    left: int = 0
    right: int = 0
    top: int = 0
    bottom: int = 0

    def __post_init__(self) -> None:
        for name in ("left", "right", "top", "bottom"):
            value = getattr(self, name)
            # integral numbers of any kind (NumPy's from array shapes too), stored as int;
            # bools and fractions are refused rather than truncated
            try:
                number = None if isinstance(value, bool) else operator.index(value)
            except TypeError:
                number = None
            if number is None or number < 0:
                raise ValueError(f"padding {name} must be an integer >= 0, got {value!r}")
            object.__setattr__(self, name, number)

    @classmethod
    def whole_frame(cls, width: int, height: int) -> Padding:
        """Bands that cover a ``width x height`` frame: every side masked, nothing known."""
        return cls(width - width // 2, width // 2, height - height // 2, height // 2)

    @property
    def is_zero(self) -> bool:
        return not (self.left or self.right or self.top or self.bottom)

    def padded_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) of a ``width x height`` frame with this border."""
        return width + self.left + self.right, height + self.top + self.bottom

    def inner_box(self, width: int, height: int) -> Box:
        """The rectangle of a ``width x height`` frame inside the bands (the known region).

        Bands that meet or overlap leave an empty box, never one that wraps around (a
        negative end would index from the far side of an array).
        """
        x0, y0 = min(self.left, width), min(self.top, height)
        return Box(x0, y0, max(x0, width - self.right), max(y0, height - self.bottom))

    def band_fraction(self, width: int, height: int) -> float:
        """Fraction of a ``width x height`` frame covered by the bands."""
        inner = self.inner_box(width, height)
        return 1.0 - inner.width * inner.height / (width * height)

    @property
    def label(self) -> str:
        """Spelling for file names, e.g. ``"pad-0-0-420-420"`` (left-right-top-bottom)."""
        return f"pad-{self.left}-{self.right}-{self.top}-{self.bottom}"


Target = Union[AspectRatio, Padding]


@dataclass(frozen=True)
class Box:
    """Half-open pixel rectangle ``[x0, x1) x [y0, y1)``."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    def contains(self, other: Box) -> bool:
        return (
            self.x0 <= other.x0 and self.y0 <= other.y0
            and other.x1 <= self.x1 and other.y1 <= self.y1
        )


@dataclass(frozen=True)
class CanvasLayout:
    """Where a video goes on the model canvas and what to crop back.

    Attributes:
        canvas_width, canvas_height: canvas size in pixels (multiples of 8).
        scale: canvas pixels per source pixel.
        source_box: where the resized source frame is drawn.
        known_box: ``source_box`` shrunk inward to the latent grid: mask 0
            (known) inside, 1 (to generate) everywhere else on the canvas.
        targets: the targets the layout serves, in the order given.
        crops: for each of ``targets``, the canvas rectangle to crop; contains
            ``source_box``.
    """

    canvas_width: int
    canvas_height: int
    scale: float
    source_box: Box
    known_box: Box
    targets: tuple[Target, ...]
    crops: tuple[Box, ...]

    @property
    def known_latent_box(self) -> Box:
        """``known_box`` in latent cells (pixels / 8)."""
        k = self.known_box
        return Box(k.x0 // LATENT_SCALE, k.y0 // LATENT_SCALE, k.x1 // LATENT_SCALE, k.y1 // LATENT_SCALE)

    def crop_for(self, target: Target) -> Box:
        """The crop of one of ``targets``."""
        for candidate, crop in zip(self.targets, self.crops):
            if candidate == target:
                return crop
        raise ValueError(f"target {target} is not part of this canvas layout")


def parse_ratio(text: str) -> AspectRatio:
    """Parse ``"W:H"`` (also ``"W-H"`` as in output file names, or ``"W/H"``).

    Sides are positive numbers, decimals allowed (``"1.91:1"``). A bare number
    such as ``"0.5625"`` is refused: whether ``"2"`` means 2:1 or 1:2 is a
    guess, and the canonical label would not read as a ratio. An
    :class:`AspectRatio` is returned as it is.

    Raises:
        ValueError: naming the input, for anything else.
    """
    if isinstance(text, AspectRatio):
        return text
    match = _RATIO_RE.match(text) if isinstance(text, str) else None
    hint = "expected W:H with positive numbers, e.g. 9:16, 1:1, 16:9 (or 9-16)"
    if match is None:
        raise ValueError(f"invalid aspect ratio {text!r}: {hint}")
    width, height = float(match.group(1)), float(match.group(2))
    if width <= 0 or height <= 0:
        raise ValueError(f"invalid aspect ratio {text!r}: {hint}")
    return AspectRatio(width, height)


def parse_ratios(value: Union[str, AspectRatio, Sequence[Union[str, AspectRatio]]]) -> tuple[AspectRatio, ...]:
    """Parse one or several ratios: ``"9:16,1:1"`` or ``["9:16", "1:1"]``.

    Duplicates (same label) are dropped, order kept.

    Raises:
        ValueError: naming the bad entry, or when no ratio is given.
    """
    if isinstance(value, (str, AspectRatio)):
        items: list = value.split(",") if isinstance(value, str) else [value]
    else:
        items = [part for item in value for part in (item.split(",") if isinstance(item, str) else [item])]
    ratios: list[AspectRatio] = []
    for item in items:
        try:
            ratio = parse_ratio(item)
        except ValueError as error:
            raise ValueError(f"{error} (in target ratios {value!r})") from None
        if ratio.label not in {r.label for r in ratios}:
            ratios.append(ratio)
    if not ratios:
        raise ValueError(f"no aspect ratio given in {value!r}")
    return tuple(ratios)


def parse_padding(text: str) -> Padding:
    """Parse explicit padding ``"LEFT,RIGHT,TOP,BOTTOM"`` in source pixels, e.g. ``"0,0,420,420"``.

    Raises:
        ValueError: naming the input, unless it is four integers >= 0.
    """
    parts = text.split(",") if isinstance(text, str) else []
    if len(parts) != 4 or not all(p.strip().isdigit() for p in parts):
        raise ValueError(
            f"invalid padding {text!r}: expected four integers >= 0 as LEFT,RIGHT,TOP,BOTTOM "
            f"(pixels), e.g. 0,0,420,420"
        )
    return Padding(*(int(p) for p in parts))


def _check_size(width: int, height: int, what: str = "source") -> None:
    for value in (width, height):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{what} size must be positive integers, got {width!r}x{height!r}")


def _ceil_to(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def padding_for_ratio(width: int, height: int, ratio: AspectRatio, multiple: int = 1) -> Padding:
    """Border that extends a ``width x height`` frame to ``ratio``, centered.

    Only one axis grows (the one the ratio lacks); the padded size is the
    nearest whole pixel to the exact ratio, never smaller than the source. An
    odd border puts the extra pixel on the right / bottom. With ``multiple`` > 1
    (2 for H.264 yuv420p) both padded sides are multiples of it: the source's
    sides rounded up, the grown side to the nearest multiple (so the ratio is
    then off by up to about ``multiple`` pixels).
    """
    _check_size(width, height)
    if isinstance(multiple, bool) or not isinstance(multiple, int) or multiple < 1:
        raise ValueError(f"multiple must be an integer >= 1, got {multiple!r}")
    r = ratio.value
    new_w, new_h = _ceil_to(width, multiple), _ceil_to(height, multiple)
    if width / height < r:  # too narrow: widen
        new_w = max(new_w, round(new_h * r / multiple) * multiple)
    else:  # too wide (or equal): heighten
        new_h = max(new_h, round(new_w / r / multiple) * multiple)
    pad_w, pad_h = new_w - width, new_h - height
    return Padding(pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)


def target_padding(width: int, height: int, target: Target, multiple: int = 1) -> Padding:
    """Border for any target: computed for a ratio, given for explicit padding."""
    if isinstance(target, Padding):
        _check_size(width, height)
        return target
    if isinstance(target, AspectRatio):
        return padding_for_ratio(width, height, target, multiple)
    raise ValueError(f"target must be an AspectRatio or a Padding, got {target!r}")


def is_same_ratio(width: int, height: int, ratio: AspectRatio, tolerance_px: float = 1.0) -> bool:
    """True when extending the source to ``ratio`` would add at most ``tolerance_px`` pixels.

    Such a target is copied through (with a warning) instead of outpainted.
    """
    _check_size(width, height)
    r = ratio.value
    missing = height * r - width if width / height < r else width / r - height
    return missing <= tolerance_px + _EPS


def is_copy_through(width: int, height: int, target: Target) -> bool:
    """True when ``target`` adds nothing to a ``width x height`` source (within 1 px)."""
    if isinstance(target, Padding):
        _check_size(width, height)
        return target.is_zero
    return is_same_ratio(width, height, target)


def _target_frame(width: int, height: int, target: Target) -> tuple[float, float, float, float]:
    """The padded frame of ``target`` in source coordinates (source at [0, w) x [0, h)), exact."""
    if isinstance(target, Padding):
        return (-target.left, -target.top, width + target.right, height + target.bottom)
    r = target.value
    if width / height < r:
        extra = height * r - width
        return (-extra / 2, 0.0, width + extra / 2, float(height))
    extra = width / r - height
    return (0.0, -extra / 2, float(width), height + extra / 2)


def released_crop(canvas_width: int, canvas_height: int, ratio: AspectRatio) -> Box:
    """Largest rectangle of ``ratio`` centered on the canvas, truncated as the released script."""
    _check_size(canvas_width, canvas_height, "canvas")
    if canvas_width / canvas_height > ratio.value:
        new_w = int(canvas_height * ratio.value + _EPS)
        margin = (canvas_width - new_w) // 2
        return Box(margin, 0, margin + new_w, canvas_height)
    new_h = int(canvas_width / ratio.value + _EPS)
    margin = (canvas_height - new_h) // 2
    return Box(0, margin, canvas_width, margin + new_h)


def canvas_layout(
    width: int,
    height: int,
    targets: Sequence[Target],
    canvas_width: int = CANVAS_SIZE,
    canvas_height: int = CANVAS_SIZE,
    crop_mode: CropMode = "padded",
) -> CanvasLayout:
    """Lay a ``width x height`` source out on the model canvas for ``targets``.

    See the module docstring for the layout and how it follows the released
    script.

    Raises:
        ValueError: on bad sizes, no targets, a canvas that is not a multiple of
            8 px, or a source so small on the canvas that not one latent cell of
            it would be known (a target ratio too extreme for the canvas).
    """
    _check_size(width, height)
    _check_size(canvas_width, canvas_height, "canvas")
    if canvas_width % LATENT_SCALE or canvas_height % LATENT_SCALE:
        raise ValueError(
            f"canvas size must be multiples of {LATENT_SCALE} px (the VAE's latent grid), "
            f"got {canvas_width}x{canvas_height}"
        )
    targets = tuple(targets)
    if not targets:
        raise ValueError("canvas_layout needs at least one target")
    if crop_mode not in ("padded", "released"):
        raise ValueError(f"crop_mode must be 'padded' or 'released', got {crop_mode!r}")
    for target in targets:
        target_padding(width, height, target)  # validates the target's type

    frames = [_target_frame(width, height, t) for t in targets]
    ux0 = min(0.0, *(f[0] for f in frames))
    uy0 = min(0.0, *(f[1] for f in frames))
    ux1 = max(float(width), *(f[2] for f in frames))
    uy1 = max(float(height), *(f[3] for f in frames))
    scale = min(canvas_width / (ux1 - ux0), canvas_height / (uy1 - uy0))

    src_w = min(canvas_width, max(1, round(width * scale)))
    src_h = min(canvas_height, max(1, round(height * scale)))
    # Center the union frame on the canvas; the source sits where it sits in the union.
    # floor() of the centered position equals the script's (canvas - size) // 2.
    x = math.floor((canvas_width - src_w) / 2 + (width / 2 - (ux0 + ux1) / 2) * scale + _EPS)
    y = math.floor((canvas_height - src_h) / 2 + (height / 2 - (uy0 + uy1) / 2) * scale + _EPS)
    x = min(max(x, 0), canvas_width - src_w)
    y = min(max(y, 0), canvas_height - src_h)
    source_box = Box(x, y, x + src_w, y + src_h)

    known_box = Box(
        _ceil_to(source_box.x0, LATENT_SCALE),
        _ceil_to(source_box.y0, LATENT_SCALE),
        source_box.x1 // LATENT_SCALE * LATENT_SCALE,
        source_box.y1 // LATENT_SCALE * LATENT_SCALE,
    )
    if known_box.width <= 0 or known_box.height <= 0:
        raise ValueError(
            f"source {width}x{height} shrinks to {src_w}x{src_h} px on the "
            f"{canvas_width}x{canvas_height} canvas and covers no whole {LATENT_SCALE}x{LATENT_SCALE} "
            f"latent cell: the target ({', '.join(t.label for t in targets)}) is too "
            f"extreme for this canvas"
        )

    # Crops map through the union frame's exact placement, so a target whose frame
    # is the union gets the whole canvas along the long side, as in the script.
    union_x = (canvas_width - (ux1 - ux0) * scale) / 2 - ux0 * scale
    union_y = (canvas_height - (uy1 - uy0) * scale) / 2 - uy0 * scale
    crops = []
    for target, (fx0, fy0, fx1, fy1) in zip(targets, frames):
        if crop_mode == "released" and isinstance(target, AspectRatio):
            crop = released_crop(canvas_width, canvas_height, target)
        else:
            crop = Box(
                round(union_x + fx0 * scale), round(union_y + fy0 * scale),
                round(union_x + fx1 * scale), round(union_y + fy1 * scale),
            )
        # Rounding may shave a pixel; never cut into the source, never leave the canvas.
        crop = Box(
            max(0, min(crop.x0, source_box.x0)),
            max(0, min(crop.y0, source_box.y0)),
            min(canvas_width, max(crop.x1, source_box.x1)),
            min(canvas_height, max(crop.y1, source_box.y1)),
        )
        crops.append(crop)

    return CanvasLayout(canvas_width, canvas_height, scale, source_box, known_box, targets, tuple(crops))


def output_filename(stem: str, target: Target) -> str:
    """``<stem>_<ratio with ':' as '-'>.mp4``, e.g. ``clip_9-16.mp4``; ``clip_pad-0-0-8-8.mp4`` for padding."""
    if not isinstance(stem, str) or not stem or "/" in stem or "\\" in stem:
        raise ValueError(f"output stem must be a non-empty file name without folders, got {stem!r}")
    if isinstance(target, AspectRatio):
        label = target.file_label
    elif isinstance(target, Padding):
        label = target.label
    else:
        raise ValueError(f"target must be an AspectRatio or a Padding, got {target!r}")
    return f"{stem}_{label}.mp4"
