"""Turn one encoded video into a training example: clip, global frames, fps (paper 3.2, 3.2.2).

The frames are resized so the short side covers the output size and cropped
(centre by default, or at a random position shared by the clip and its global
frames so both show the same field of view). Only the F + g needed frames are
converted to RGB; see :mod:`lightning_m3ddm.video.decode` for decoding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange

from lightning_m3ddm.data.sampling import SHORT_VIDEO_MODES, global_frame_indices, plan_clip
from lightning_m3ddm.video.decode import (
    FrameIndex,
    ResizeCrop,
    VideoDecodeError,
    VideoSource,
    cover_resize,
    decode_frames,
    index_frames,
)


@dataclass(frozen=True)
class ClipConfig:
    """What a training example holds (paper 3.2: F = 16 frames at 1-30 fps; 3.2.2: g = 16 global frames)."""

    height: int = 256
    width: int = 256
    num_frames: int = 16
    num_global_frames: int = 16
    min_rate: int = 1
    max_rate: int = 30
    short_video: str = "pad"
    random_crop: bool = False
    seek: bool = True
    decode_threads: int = 1
    interpolation: str = "BILINEAR"

    def __post_init__(self) -> None:
        if self.height < 8 or self.width < 8:
            raise ValueError(f"ClipConfig: output size {self.height}x{self.width} too small")
        if self.num_frames < 1 or self.num_global_frames < 1:
            raise ValueError("ClipConfig: num_frames and num_global_frames must be >= 1")
        if not 1 <= self.min_rate <= self.max_rate:
            raise ValueError(f"ClipConfig: need 1 <= min_rate <= max_rate, got {self.min_rate}, {self.max_rate}")
        if self.short_video not in SHORT_VIDEO_MODES:
            raise ValueError(f"ClipConfig: short_video must be one of {SHORT_VIDEO_MODES}, got {self.short_video!r}")


@dataclass
class ClipExample:
    """Tensors of one example before masking.

    Attributes:
        video: (F, 3, H, W) float32 in [-1, 1].
        global_frames: (g, 3, H, W) float32 in [-1, 1].
        fps: the effective sampling rate of the clip (frames per second).
        indices: the clip's frame numbers in the source video.
    """

    video: torch.Tensor
    global_frames: torch.Tensor
    fps: int
    indices: tuple[int, ...]


def crop_plan(src_height: int, src_width: int, height: int, width: int, top_fraction: float, left_fraction: float) -> ResizeCrop:
    """Short-side resize to cover (height, width), crop at fractions in [0, 1] of the free range (0.5 = centre)."""
    sh, sw = cover_resize(src_height, src_width, height, width)
    top = min(sh - height, int(top_fraction * (sh - height + 1)))
    left = min(sw - width, int(left_fraction * (sw - width + 1)))
    return ResizeCrop(sh, sw, top, left, height, width)


def _uint8_to_unit(frames) -> torch.Tensor:
    return rearrange(torch.from_numpy(frames), "n h w c -> n c h w").float().div_(127.5).sub_(1.0)


def load_clip_example(
    video: VideoSource,
    generator: torch.Generator,
    config: ClipConfig = ClipConfig(),
    fallback_fps: float | None = None,
    index: FrameIndex | None = None,
) -> ClipExample:
    """Draw a sampling rate and a start, then decode the clip and the global frames.

    Args:
        video: encoded video (bytes, path or file object).
        generator: draws the rate, the start and the crop.
        fallback_fps: used when the container states no frame rate (e.g. from the shard's json).

    Raises:
        VideoDecodeError: undecodable stream or unknown frame rate.
    """
    index = index or index_frames(video)
    fps = index.fps if index.fps > 0 else (fallback_fps or 0.0)
    if fps <= 0:
        raise VideoDecodeError("frame rate unknown")
    if index.width <= 0 or index.height <= 0:
        raise VideoDecodeError(f"invalid frame size {index.width}x{index.height}")
    draws = torch.rand(3, generator=generator, dtype=torch.float64).tolist()
    rate = int(torch.randint(config.min_rate, config.max_rate + 1, (1,), generator=generator))
    plan = plan_clip(index.num_frames, fps, rate, draws[0], config.num_frames, config.short_video)
    global_indices = global_frame_indices(index.num_frames, config.num_global_frames)
    top, left = (draws[1], draws[2]) if config.random_crop else (0.5, 0.5)
    resize = crop_plan(index.height, index.width, config.height, config.width, top, left)
    frames = decode_frames(
        video,
        plan.indices + global_indices,
        plan=resize,
        index=index,
        seek=config.seek,
        threads=config.decode_threads,
        interpolation=config.interpolation,
    )
    frames = _uint8_to_unit(frames)
    return ClipExample(
        video=frames[: config.num_frames],
        global_frames=frames[config.num_frames :],
        fps=plan.fps,
        indices=plan.indices,
    )
