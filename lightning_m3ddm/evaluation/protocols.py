"""Evaluation mask protocols as data: which region of every frame is generated.

A protocol fixes the geometry of the mask (the same on every frame: outpainting
pads the same border all along a video), the inference mode and the clip
sampling of the paper's experiment it reproduces. :func:`mask_for` turns a
protocol into a ``(H, W)`` bool mask, ``True`` = region to generate.

Geometry kinds
--------------
``bands``: a band is masked on each of ``sides``. ``ratio`` is the fraction of
the *axis length* that is masked, shared evenly by the sides of that axis
(paper 4.2.2, "horizontal direction ... mask ratios of 0.25 and 0.666": 0.25 of
the width, 0.125 left + 0.125 right; the same convention as the training masks,
paper 3.2.1, and the released inference code, which pads evenly).

``central``: a centered known box is kept and everything around it is generated.
``ratio`` is the masked fraction of the frame *area* (paper appendix B: "0.75 for
OPC"). MAGVIT (which the paper follows "strictly") keeps rows ``[H//4, 3H//4)``
and columns ``[W//4, 3W//4)`` (``cond_region='rectangle_central'`` in the
released MAGVIT code): a known box of half the height and half the width, so
1 - 0.5 * 0.5 = 0.75 masked. In general the known box has side fraction
``sqrt(1 - ratio)`` on both axes.

MAGVIT's OPV/OPH naming
-----------------------
In the released MAGVIT code the task names describe the *known* strip:
``outpainting_v`` keeps ``cond_region='rectangle_vertical'`` (all rows, columns
``[W//4, 3W//4)``) and generates the left and right quarters; ``outpainting_h``
keeps ``rectangle_horizontal`` (all columns, rows ``[H//4, 3H//4)``) and
generates the top and bottom quarters. M3DDM's Table 3 copies MAGVIT's numbers
("we strictly follow their setup"), so ``ssv2_opv`` masks left + right and
``ssv2_oph`` masks top + bottom, each 0.5 of the axis. This is the opposite of
the everyday reading of "vertical outpainting" (extend upward/downward); it is
the convention the published FVDs were measured with.

Pixel grid
----------
Every band width (and the margins of the central box) is snapped to the nearest
multiple of ``grid`` = 8 pixels, one latent cell of the SD VAE, so that the mask
is exact in latent space. Snapping applies "where the size allows": when the
snapped band would be empty or leave less than one grid cell known on the axis
(tiny frames, e.g. in tests), the band is rounded to whole pixels instead (at
least 1 px masked, at least 1 px known). At the paper's 256 x 256 this gives:

====================  ====================  =====================
protocol              bands (px)            masked fraction
====================  ====================  =====================
davis_h025            32 left, 32 right     0.25 (exact)
davis_h0666           88 left, 88 right     0.6875 (0.666 asked)
ssv2_* at 128 x 128   32 per side           0.75 / 0.5 / 0.5 (exact)
long_video (0.6)      80 left, 80 right     0.625 (0.6 asked)
====================  ====================  =====================

Pure geometry: no tensors; masks are NumPy arrays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from lightning_m3ddm.geometry import LATENT_SCALE, Padding

# SD VAE: one latent cell per 8 x 8 pixels.
LATENT_GRID = LATENT_SCALE  # the latent grid is geometry's
# Paper appendix C.2: "The resolution of our input video is 256 x 256 x 3".
PAPER_FRAME_SIZE = 256
# Paper appendix C.2: three-level coarse-to-fine with frame intervals [30, 15, 1].
PAPER_LONG_VIDEO_STRIDES: tuple[int, ...] = (30, 15, 1)
# Paper Fig. 7: long videos are shown "horizontally-oriented ... with a ratio proportion of 0.6".
LONG_VIDEO_DEFAULT_RATIO = 0.6

SIDES = ("top", "bottom", "left", "right")
GeometryKind = Literal["bands", "central"]
InferenceMode = Literal["dense", "coarse_to_fine"]
# How a source frame becomes the square evaluation frame: squashed to it, or short side
# resized and the center cropped.
FrameFit = Literal["resize", "center_crop"]


@dataclass(frozen=True)
class MaskProtocol:
    """One evaluation protocol (see module docstring for the geometry).

    Attributes:
        name: registry key, e.g. ``"davis_h025"``.
        kind: ``"bands"`` (``ratio`` of each masked axis) or ``"central"``
            (``ratio`` of the frame area around a centered known box).
        sides: masked sides for ``"bands"``; all four for ``"central"``.
        ratio: masked fraction, meaning depends on ``kind``.
        dataset: data the protocol is defined on (``"davis"``, ``"youtube_vos"``,
            ``"ssv2"``, ``"long_video"``: any folder of long videos).
        inference: ``"dense"`` (short videos, paper 4.2) or ``"coarse_to_fine"``
            (long videos, paper 4.3 / appendix C.2).
        strides: frame intervals of the coarse-to-fine levels (``None`` = dense).
        frame_size: square evaluation resolution in pixels.
        frame_fit: ``"resize"``: the whole source frame squashed to
            ``frame_size`` x ``frame_size`` (DAVIS / YouTube-VOS / long videos: the
            paper's model input is 256 x 256 x 3, appendix C.2, and the paper does
            not crop); ``"center_crop"``: short side resized to ``frame_size``, the
            center cropped (SSv2, appendix B: "a central crop with a frame size of
            128", as MAGVIT).
        clip_frames: frames per evaluated clip, ``None`` = the whole video.
        clips_per_video: temporal windows per video (SSv2: 2, appendix B).
        fvd_frames: frames sampled uniformly per video for FVD (paper 4.1: 16).
        description: one line for tables and logs.
    """

    name: str
    kind: GeometryKind
    sides: tuple[str, ...]
    ratio: float
    dataset: str
    inference: InferenceMode = "dense"
    strides: tuple[int, ...] | None = None
    frame_size: int = PAPER_FRAME_SIZE
    frame_fit: FrameFit = "resize"
    clip_frames: int | None = None
    clips_per_video: int = 1
    fvd_frames: int = 16
    description: str = ""
    grid: int = field(default=LATENT_GRID)

    def __post_init__(self) -> None:
        if self.kind not in ("bands", "central"):
            raise ValueError(f"protocol {self.name!r}: kind must be 'bands' or 'central', got {self.kind!r}")
        unknown = set(self.sides) - set(SIDES)
        if unknown or not self.sides:
            raise ValueError(f"protocol {self.name!r}: sides must be a non-empty subset of {SIDES}, got {self.sides!r}")
        if not (isinstance(self.ratio, (int, float)) and 0.0 < self.ratio < 1.0):
            raise ValueError(f"protocol {self.name!r}: ratio must be in (0, 1), got {self.ratio!r}")
        if self.inference not in ("dense", "coarse_to_fine"):
            raise ValueError(f"protocol {self.name!r}: inference must be 'dense' or 'coarse_to_fine', got {self.inference!r}")
        strides = self.strides
        if strides is not None and (
            not strides
            or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in strides)
            or any(a <= b for a, b in zip(strides, strides[1:]))
            or strides[-1] != 1
        ):
            raise ValueError(
                f"protocol {self.name!r}: strides must be positive integers, strictly decreasing and ending in 1 "
                f"(e.g. (30, 15, 1)), got {strides!r}"
            )
        if self.frame_fit not in ("resize", "center_crop"):
            raise ValueError(f"protocol {self.name!r}: frame_fit must be 'resize' or 'center_crop', got {self.frame_fit!r}")
        if isinstance(self.frame_size, bool) or not isinstance(self.frame_size, int) or self.frame_size < 2:
            raise ValueError(f"protocol {self.name!r}: frame_size must be an integer >= 2, got {self.frame_size!r}")
        if self.clip_frames is not None and (isinstance(self.clip_frames, bool) or not isinstance(self.clip_frames, int) or self.clip_frames < 1):
            raise ValueError(f"protocol {self.name!r}: clip_frames must be None or an integer >= 1, got {self.clip_frames!r}")
        if isinstance(self.clips_per_video, bool) or not isinstance(self.clips_per_video, int) or self.clips_per_video < 1:
            raise ValueError(f"protocol {self.name!r}: clips_per_video must be an integer >= 1, got {self.clips_per_video!r}")
        if self.grid < 1:
            raise ValueError(f"protocol {self.name!r}: grid must be >= 1, got {self.grid}")


def band_mask(bands: Padding, height: int, width: int) -> np.ndarray:
    """(height, width) bool, True = generate: everything outside ``bands.inner_box``."""
    mask = np.ones((height, width), dtype=bool)
    known = bands.inner_box(width, height)
    mask[known.y0 : known.y1, known.x0 : known.x1] = False
    return mask


def _band_pixels(length: int, masked_fraction_per_side: float, sides_on_axis: int, grid: int) -> int:
    """Width of one band on an axis of ``length`` px (see "Pixel grid" in the module docstring)."""
    exact = masked_fraction_per_side * length
    if grid > 1:
        snapped = int(round(exact / grid)) * grid
        if snapped >= grid and length - sides_on_axis * snapped >= grid:
            return snapped
    if length < sides_on_axis + 1:
        raise ValueError(f"frame side of {length}px is too small to mask {sides_on_axis} band(s) and keep 1px known")
    pixels = int(round(exact))
    return min(max(pixels, 1), (length - 1) // sides_on_axis)


def mask_bands(protocol: MaskProtocol | str, height: int, width: int) -> Padding:
    """Band widths of ``protocol`` on a ``height x width`` frame (the padding that restores it)."""
    protocol = get_protocol(protocol) if isinstance(protocol, str) else protocol
    for name, value in (("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"mask_for: {name} must be a positive integer, got {value!r}")
    widths = dict.fromkeys(SIDES, 0)
    if protocol.kind == "central":
        # Known box of side fraction sqrt(1 - ratio) on both axes: the margin per side is half the rest.
        margin_fraction = (1.0 - math.sqrt(1.0 - protocol.ratio)) / 2.0
        for first, second, length in (("top", "bottom", height), ("left", "right", width)):
            band = _band_pixels(length, margin_fraction, 2, protocol.grid)
            widths[first] = widths[second] = band
    else:
        for first, second, length in (("top", "bottom", height), ("left", "right", width)):
            masked = [side for side in (first, second) if side in protocol.sides]
            if not masked:
                continue
            band = _band_pixels(length, protocol.ratio / len(masked), len(masked), protocol.grid)
            for side in masked:
                widths[side] = band
    return Padding(**widths)


def mask_for(protocol: MaskProtocol | str, height: int, width: int) -> np.ndarray:
    """(height, width) bool mask of ``protocol``, True = region to generate.

    Raises:
        KeyError: unknown protocol name.
        ValueError: non-positive size, or a frame too small to keep a known pixel.
    """
    protocol = get_protocol(protocol) if isinstance(protocol, str) else protocol
    return band_mask(mask_bands(protocol, height, width), height, width)


def masked_fraction(mask: np.ndarray) -> float:
    """Fraction of pixels marked True."""
    return float(np.count_nonzero(mask)) / float(mask.size)


def long_video_protocol(ratio: float = LONG_VIDEO_DEFAULT_RATIO, strides: tuple[int, ...] = PAPER_LONG_VIDEO_STRIDES) -> MaskProtocol:
    """Horizontal outpainting of long videos with coarse-to-fine inference (paper 4.3, Table 2)."""
    return MaskProtocol(
        name="long_video",
        kind="bands",
        sides=("left", "right"),
        ratio=ratio,
        dataset="long_video",
        inference="coarse_to_fine",
        strides=tuple(strides),
        description=f"long videos, horizontal outpainting, ratio {ratio:g}, coarse-to-fine strides {list(strides)}",
    )


def _horizontal(name: str, dataset: str, ratio: float, label: str) -> MaskProtocol:
    # Paper 4.2.2: short videos, horizontal direction, dense prediction (appendix C.2).
    return MaskProtocol(
        name=name, kind="bands", sides=("left", "right"), ratio=ratio, dataset=dataset,
        description=f"{label}, horizontal outpainting (left + right), ratio {ratio:g} of the width",
    )


# Appendix B: SSv2 evaluated as MAGVIT does: 16-frame clips, 2 temporal windows per
# video, 128 x 128 central crop, dense prediction.
_SSV2 = dict(dataset="ssv2", frame_size=128, frame_fit="center_crop", clip_frames=16, clips_per_video=2)

PROTOCOLS: dict[str, MaskProtocol] = {
    p.name: p
    for p in (
        _horizontal("davis_h025", "davis", 0.25, "DAVIS"),
        _horizontal("davis_h0666", "davis", 0.666, "DAVIS"),
        # Same geometry on YouTube-VOS (Table 1, right half).
        _horizontal("ytvos_h025", "youtube_vos", 0.25, "YouTube-VOS"),
        _horizontal("ytvos_h0666", "youtube_vos", 0.666, "YouTube-VOS"),
        MaskProtocol(
            name="ssv2_opc", kind="central", sides=SIDES, ratio=0.75, **_SSV2,
            description="SSv2 central outpainting (OPC): known centered box of half height and half width, 0.75 of the area masked",
        ),
        MaskProtocol(
            name="ssv2_opv", kind="bands", sides=("left", "right"), ratio=0.5, **_SSV2,
            description="SSv2 vertical outpainting (OPV, MAGVIT naming): known central vertical strip, left + right quarters masked",
        ),
        MaskProtocol(
            name="ssv2_oph", kind="bands", sides=("top", "bottom"), ratio=0.5, **_SSV2,
            description="SSv2 horizontal outpainting (OPH, MAGVIT naming): known central horizontal strip, top + bottom quarters masked",
        ),
        long_video_protocol(),
    )
}


def get_protocol(name: str) -> MaskProtocol:
    """Registered protocol by name.

    Raises:
        KeyError: with the list of known names.
    """
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise KeyError(f"unknown evaluation protocol {name!r}; known: {sorted(PROTOCOLS)}") from None



# Fields a run may change; ``name``, ``kind`` and ``dataset`` define what a protocol is.
OVERRIDABLE_FIELDS: tuple[str, ...] = (
    "sides", "ratio", "inference", "strides", "frame_size", "frame_fit", "clip_frames", "clips_per_video", "fvd_frames",
)


def override_protocol(protocol: MaskProtocol | str, changes: dict | None = None) -> MaskProtocol:
    """``protocol`` with some fields changed (e.g. a small ``frame_size`` for tests).

    Lists become tuples (``strides``, ``sides``, as YAML gives them). A changed
    protocol keeps its name, but its description says what changed, and
    :func:`protocol_changes` lists it, so that results do not pass it off as the
    paper's protocol.

    Raises:
        KeyError: unknown protocol name.
        ValueError: a field that does not exist or may not change, or an invalid value.
    """
    protocol = get_protocol(protocol) if isinstance(protocol, str) else protocol
    changes = dict(changes or {})
    unknown = sorted(set(changes) - set(OVERRIDABLE_FIELDS))
    if unknown:
        raise ValueError(f"protocol {protocol.name!r}: cannot override {unknown}; overridable fields: {list(OVERRIDABLE_FIELDS)}")
    for key in ("strides", "sides"):
        if isinstance(changes.get(key), list):
            changes[key] = tuple(changes[key])
    if not changes:
        return protocol
    changed = replace(protocol, **changes)
    diff = protocol_changes(changed, protocol)
    if diff:
        text = ", ".join(f"{k}={v}" for k, v in diff.items())
        changed = replace(changed, description=f"{protocol.description} [changed for this run: {text}]")
    return changed


def protocol_changes(protocol: MaskProtocol, reference: MaskProtocol | None = None) -> dict:
    """Fields in which ``protocol`` differs from ``reference`` (default: the registered one of that name)."""
    if reference is None:
        reference = PROTOCOLS.get(protocol.name)
        if reference is None:
            return {"name": protocol.name}
    out = {}
    for key in OVERRIDABLE_FIELDS:
        value, ref = getattr(protocol, key), getattr(reference, key)
        if value != ref:
            out[key] = list(value) if isinstance(value, tuple) else value
    return out
