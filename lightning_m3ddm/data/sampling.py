"""Which frames of a video form a training clip and its global frames (paper 3.2, 3.2.2).

Pure functions on frame counts; no decoding, no tensors.

A clip is F equally spaced frames. Its sampling rate is drawn uniformly from
the integers [min_rate, max_rate] frames per second; the frame interval is
``round(source_fps / rate)`` (at least 1) and is shortened when the clip would
not fit in the video. The rate the model is told (its fps embedding) is the
*effective* one, ``floor(source_fps / interval)`` (at least 1): the released
inference code passes ``fps // stride`` for a level with frame stride
``stride``, so training uses the same quantity.

Videos with fewer than F frames give all their frames followed by copies of
the last one ("pad", as the released inference code fills a short last clip)
or repeat from the start ("loop").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SHORT_VIDEO_MODES = ("pad", "loop")


@dataclass(frozen=True)
class ClipPlan:
    """Frame indices of one clip and the rate to embed."""

    indices: tuple[int, ...]
    interval: int
    fps: int


def frame_interval(source_fps: float, rate: int, num_video_frames: int, clip_len: int) -> int:
    """Interval giving ``rate`` frames per second, at least 1, shortened so the clip fits."""
    if rate < 1:
        raise ValueError(f"sampling rate must be >= 1 fps, got {rate}")
    if source_fps <= 0:
        raise ValueError(f"source fps must be > 0, got {source_fps}")
    interval = max(1, round(source_fps / rate))
    if clip_len > 1:
        interval = min(interval, max(1, (num_video_frames - 1) // (clip_len - 1)))
    return interval


def effective_fps(source_fps: float, interval: int) -> int:
    """The fps a clip of frames ``interval`` apart is conditioned on, in training and sampling alike
    (:func:`lightning_m3ddm.coarse_to_fine.level_fps` uses it): ``floor(source_fps / interval)``,
    at least 1; the epsilon keeps exact quotients (30 / 3) from flooring down through rounding."""
    return max(1, math.floor(source_fps / interval + 1e-6))


def clip_indices(start: int, interval: int, clip_len: int, num_video_frames: int, short_video: str = "pad") -> tuple[int, ...]:
    """``clip_len`` indices from ``start`` every ``interval``; past the end: pad with the last frame or loop."""
    if short_video not in SHORT_VIDEO_MODES:
        raise ValueError(f"short_video must be one of {SHORT_VIDEO_MODES}, got {short_video!r}")
    out = []
    for i in range(clip_len):
        index = start + i * interval
        if index >= num_video_frames:
            index = num_video_frames - 1 if short_video == "pad" else index % num_video_frames
        out.append(index)
    return tuple(out)


def max_clip_start(interval: int, clip_len: int, num_video_frames: int) -> int:
    """Largest start index whose clip fits entirely (0 when the video is too short)."""
    return max(0, num_video_frames - 1 - interval * (clip_len - 1))


def plan_clip(
    num_video_frames: int,
    source_fps: float,
    rate: int,
    start_fraction: float,
    clip_len: int = 16,
    short_video: str = "pad",
) -> ClipPlan:
    """Clip for a drawn ``rate`` and a start position ``start_fraction`` in [0, 1)."""
    if num_video_frames < 1:
        raise ValueError("video has no frames")
    interval = frame_interval(source_fps, rate, num_video_frames, clip_len)
    start = min(int(start_fraction * (max_clip_start(interval, clip_len, num_video_frames) + 1)),
                max_clip_start(interval, clip_len, num_video_frames))
    indices = clip_indices(start, interval, clip_len, num_video_frames, short_video)
    return ClipPlan(indices, interval, effective_fps(source_fps, interval))


def global_frame_indices(num_video_frames: int, num_global_frames: int = 16) -> tuple[int, ...]:
    """``num_global_frames`` indices spread uniformly over the whole video, first and last included.

    Same rule as the released inference code (linspace truncated to int); short
    videos repeat frames.
    """
    if num_video_frames < 1:
        raise ValueError("video has no frames")
    if num_global_frames == 1:
        return (0,)
    step = (num_video_frames - 1) / (num_global_frames - 1)
    return tuple(int(i * step + 1e-9) for i in range(num_global_frames))
