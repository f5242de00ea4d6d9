"""Mask and guide-frame augmentation of M3DDM training clips (paper 3.2.1, 3.2.2).

Each clip draws one *direction strategy* and one *mask ratio*; the resulting
edge mask is shared by all its frames (at inference the region to outpaint is
the same padding on every frame) and by its global frames (3.2.2: they are
masked like the context frames so the region to fill does not leak). Then a
*guide case* decides which frames are given whole (mask 0, raw content), as
used by the coarse-to-fine inference (first frame, first and last frame, or
any set of already generated frames).

Mask ratio semantics: the ratio r ~ U[ratio_min, ratio_max] is the fraction of
the side length that is masked along each masked axis; when both sides of an
axis are masked they share it equally (centred content, as in the released
inference code, which pads evenly). Every masked band is snapped to a multiple
of ``grid`` pixels (8 = one latent cell of the SD VAE), is at least one grid
cell wide, and at least one grid cell of every axis stays known.

Pure geometry (no tensors) lives in :func:`mask_geometry`; sampling uses a
``torch.Generator`` so the same seed gives the same masks everywhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum

import torch
from einops import rearrange, repeat

from lightning_m3ddm.geometry import LATENT_SCALE, Padding

SIDES = ("top", "bottom", "left", "right")


class MaskStrategy(str, Enum):
    ALL_SIDES = "all_sides"
    ONE_SIDE = "one_side"
    BOTH_SIDES_OF_AXIS = "both_sides_of_axis"
    RANDOM_SIDES = "random_sides"
    WHOLE_FRAME = "whole_frame"


class GuideCase(str, Enum):
    NONE = "none"
    FIRST = "first"
    FIRST_AND_LAST = "first_and_last"
    RANDOM_FRAMES = "random_frames"


def _check_distribution(name: str, probabilities: dict[str, float]) -> None:
    if any(p < 0 for p in probabilities.values()):
        raise ValueError(f"{name}: probabilities must be >= 0, got {probabilities}")
    total = sum(probabilities.values())
    if not math.isclose(total, 1.0, abs_tol=1e-6):
        raise ValueError(f"{name}: probabilities must sum to 1, got {total:.6f} from {probabilities}")


@dataclass(frozen=True)
class MaskConfig:
    """Direction strategies and mask ratio (paper 3.2.1: 0.2 / 0.1 / 0.35 / 0.1 / 0.25, ratio U[0.15, 0.75])."""

    p_all_sides: float = 0.2
    p_one_side: float = 0.1
    p_both_sides_of_axis: float = 0.35
    p_random_sides: float = 0.1
    p_whole_frame: float = 0.25
    ratio_min: float = 0.15
    ratio_max: float = 0.75
    grid: int = LATENT_SCALE  # SD VAE downsampling factor: masks align with latent cells

    def __post_init__(self) -> None:
        _check_distribution("MaskConfig", self.strategy_probabilities())
        if not 0.0 < self.ratio_min <= self.ratio_max < 1.0:
            raise ValueError(f"MaskConfig: need 0 < ratio_min <= ratio_max < 1, got {self.ratio_min}, {self.ratio_max}")
        if self.grid < 1:
            raise ValueError(f"MaskConfig: grid must be >= 1, got {self.grid}")

    def strategy_probabilities(self) -> dict[str, float]:
        return {
            MaskStrategy.ALL_SIDES.value: self.p_all_sides,
            MaskStrategy.ONE_SIDE.value: self.p_one_side,
            MaskStrategy.BOTH_SIDES_OF_AXIS.value: self.p_both_sides_of_axis,
            MaskStrategy.RANDOM_SIDES.value: self.p_random_sides,
            MaskStrategy.WHOLE_FRAME.value: self.p_whole_frame,
        }


@dataclass(frozen=True)
class GuideFrameConfig:
    """Which frames are given whole (paper 3.2.1: cases 0.3 / 0.35 / 0.35, p_frame = 0.5).

    The paper's second case, "the first frame or the first and last frames"
    (0.35), is split evenly here: 0.175 first frame only, 0.175 first and last.
    """

    p_none: float = 0.3
    p_first: float = 0.175
    p_first_and_last: float = 0.175
    p_random_frames: float = 0.35
    p_frame: float = 0.5

    def __post_init__(self) -> None:
        _check_distribution("GuideFrameConfig", self.case_probabilities())
        if not 0.0 <= self.p_frame <= 1.0:
            raise ValueError(f"GuideFrameConfig: p_frame must be in [0, 1], got {self.p_frame}")

    def case_probabilities(self) -> dict[str, float]:
        return {
            GuideCase.NONE.value: self.p_none,
            GuideCase.FIRST.value: self.p_first,
            GuideCase.FIRST_AND_LAST.value: self.p_first_and_last,
            GuideCase.RANDOM_FRAMES.value: self.p_random_frames,
        }


@dataclass(frozen=True)
class AugmentationConfig:
    mask: MaskConfig = field(default_factory=MaskConfig)
    guide: GuideFrameConfig = field(default_factory=GuideFrameConfig)


def band_mask_tensor(bands: Padding, height: int, width: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Float mask (height, width), 1 = region to generate: everything outside ``bands.inner_box``."""
    mask = torch.ones(height, width, device=device)
    known = bands.inner_box(width, height)
    mask[known.y0 : known.y1, known.x0 : known.x1] = 0
    return mask


def snap_to_grid(pixels: float, grid: int) -> int:
    """Nearest multiple of ``grid``, at least one grid cell."""
    return max(grid, int(round(pixels / grid)) * grid)


def mask_geometry(sides: frozenset[str] | set[str], ratio: float, height: int, width: int, grid: int = LATENT_SCALE) -> Padding:
    """Band widths for masking ``sides`` with ``ratio`` of each masked axis (see module docstring).

    Raises:
        ValueError: unknown side name, or a frame too small to keep one known grid cell.
    """
    unknown = set(sides) - set(SIDES)
    if unknown:
        raise ValueError(f"unknown side(s) {sorted(unknown)}; expected a subset of {SIDES}")
    widths = {side: 0 for side in SIDES}
    for first, second, length in (("top", "bottom", height), ("left", "right", width)):
        masked = [s for s in (first, second) if s in sides]
        if not masked:
            continue
        if length < (len(masked) + 1) * grid:
            raise ValueError(f"frame side {length}px too small to mask {len(masked)} band(s) of {grid}px and keep {grid}px")
        per_side = snap_to_grid(ratio * length / len(masked), grid)
        # Keep at least one known grid cell on the axis.
        max_per_side = ((length - grid) // len(masked)) // grid * grid
        per_side = min(per_side, max_per_side)
        for side in masked:
            widths[side] = per_side
    return Padding(**widths)


@dataclass(frozen=True)
class MaskSample:
    """One draw of the spatial mask: what was chosen and the resulting geometry."""

    strategy: MaskStrategy
    sides: frozenset[str]
    ratio: float
    geometry: Padding


def _choice(probabilities: dict[str, float], generator: torch.Generator) -> str:
    names = list(probabilities)
    weights = torch.tensor([probabilities[n] for n in names], dtype=torch.float64)
    return names[int(torch.multinomial(weights, 1, generator=generator))]


def _randint(high: int, generator: torch.Generator) -> int:
    return int(torch.randint(high, (1,), generator=generator))


def _uniform(low: float, high: float, generator: torch.Generator) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator, dtype=torch.float64))


def sample_mask(config: MaskConfig, height: int, width: int, generator: torch.Generator) -> MaskSample:
    """Draw a direction strategy, its sides and a ratio, and build the geometry."""
    strategy = MaskStrategy(_choice(config.strategy_probabilities(), generator))
    ratio = _uniform(config.ratio_min, config.ratio_max, generator)
    if strategy is MaskStrategy.WHOLE_FRAME:
        return MaskSample(strategy, frozenset(SIDES), ratio, Padding.whole_frame(width, height))
    if strategy is MaskStrategy.ALL_SIDES:
        sides = frozenset(SIDES)
    elif strategy is MaskStrategy.ONE_SIDE:
        sides = frozenset({SIDES[_randint(4, generator)]})
    elif strategy is MaskStrategy.BOTH_SIDES_OF_AXIS:
        sides = frozenset({"left", "right"} if _randint(2, generator) else {"top", "bottom"})
    else:  # RANDOM_SIDES: uniform over the 15 non-empty subsets of the four sides
        bits = 1 + _randint(15, generator)
        sides = frozenset(side for i, side in enumerate(SIDES) if bits >> i & 1)
    return MaskSample(strategy, sides, ratio, mask_geometry(sides, ratio, height, width, config.grid))


def sample_guide_frames(config: GuideFrameConfig, num_frames: int, generator: torch.Generator) -> tuple[GuideCase, list[bool]]:
    """Draw a guide case and which of ``num_frames`` frames are given whole."""
    case = GuideCase(_choice(config.case_probabilities(), generator))
    guide = [False] * num_frames
    if case is GuideCase.FIRST:
        guide[0] = True
    elif case is GuideCase.FIRST_AND_LAST:
        guide[0] = guide[-1] = True
    elif case is GuideCase.RANDOM_FRAMES:
        draws = torch.rand(num_frames, generator=generator)
        guide = [bool(d < config.p_frame) for d in draws]
    return case, guide


@dataclass
class AugmentedClip:
    """Output of :func:`augment`; shapes follow the input (leading batch dim optional).

    Attributes:
        masked_video: (..., F, 3, H, W); masked pixels hold -1, guide frames are whole.
        mask: (..., F, 1, H, W); 1 = to generate, 0 = known (guide frames all 0).
        global_frames: (..., g, 3, H, W) masked with the spatial mask, or None.
        spatial_mask: (..., 1, H, W) the mask of non-guide frames.
        guide: (..., F) bool, frames given whole.
        mask_samples / guide_cases: the draws, one per clip (for logging and tests).
    """

    masked_video: torch.Tensor
    mask: torch.Tensor
    global_frames: torch.Tensor | None
    spatial_mask: torch.Tensor
    guide: torch.Tensor
    mask_samples: list[MaskSample]
    guide_cases: list[GuideCase]


def augment(
    video: torch.Tensor,
    generator: torch.Generator,
    config: AugmentationConfig | None = None,
    global_frames: torch.Tensor | None = None,
) -> AugmentedClip:
    """Mask clips for training (paper 3.2.1) and their global frames alike (3.2.2).

    Args:
        video: (F, 3, H, W) or (B, F, 3, H, W) in [-1, 1]; each clip of a batch draws independently.
        generator: CPU torch.Generator; the same state gives the same result.
        config: probabilities and ranges; paper defaults when None.
        global_frames: (g, 3, H, W) or (B, g, 3, H, W), masked with each clip's spatial
            mask (never given whole), or None.

    Returns:
        :class:`AugmentedClip` with shapes matching the input's batch layout.
    """
    config = config or AugmentationConfig()
    batched = video.dim() == 5
    if video.dim() not in (4, 5) or video.shape[-3] != 3:
        raise ValueError(f"video must be (F, 3, H, W) or (B, F, 3, H, W), got {tuple(video.shape)}")
    clips = video if batched else video.unsqueeze(0)
    globals_ = None
    if global_frames is not None:
        globals_ = global_frames if batched else global_frames.unsqueeze(0)
        if globals_.dim() != 5 or globals_.shape[0] != clips.shape[0] or globals_.shape[-2:] != clips.shape[-2:]:
            raise ValueError(
                f"global_frames {tuple(global_frames.shape)} do not match video {tuple(video.shape)} "
                "(same batch layout and H, W expected)"
            )
    b, f, _, h, w = clips.shape
    samples = [sample_mask(config.mask, h, w, generator) for _ in range(b)]
    guides = [sample_guide_frames(config.guide, f, generator) for _ in range(b)]
    spatial = torch.stack([band_mask_tensor(s.geometry, h, w, device=clips.device) for s in samples])  # (B, H, W)
    guide = torch.tensor([g for _, g in guides], dtype=torch.bool, device=clips.device)  # (B, F)
    mask = repeat(spatial, "b h w -> b f 1 h w", f=f) * rearrange(~guide, "b f -> b f 1 1 1").to(spatial.dtype)
    masked_video = clips.masked_fill(mask.bool(), -1.0)
    masked_globals = None
    if globals_ is not None:
        masked_globals = globals_.masked_fill(rearrange(spatial, "b h w -> b 1 1 h w").bool(), -1.0)
    spatial = rearrange(spatial, "b h w -> b 1 h w")
    if not batched:
        masked_video, mask, spatial, guide = masked_video[0], mask[0], spatial[0], guide[0]
        masked_globals = None if masked_globals is None else masked_globals[0]
    return AugmentedClip(
        masked_video=masked_video,
        mask=mask.to(video.dtype),
        global_frames=masked_globals,
        spatial_mask=spatial.to(video.dtype),
        guide=guide,
        mask_samples=samples,
        guide_cases=[c for c, _ in guides],
    )
