"""Test videos of an ``evaluate`` run and their frames at a protocol's geometry.

Inputs (``data.init_args.inputs``), expanded as predict expands its own
(:mod:`lightning_m3ddm.video.inputs`), frame folders included; each one of:

* a video file (mp4, mkv, webm, ...; SSv2 ships ``.webm``);
* a folder of frame images (``.jpg``/``.jpeg``/``.png``), one video, frames in natural
  name order (``00000.jpg``, ``00001.jpg``, ...): a DAVIS or YouTube-VOS sequence;
* a folder of such videos: the video files and the frame folders directly inside it,
  e.g. DAVIS ``JPEGImages/480p`` or YouTube-VOS ``valid/JPEGImages`` (one level deep);
* a glob (``videos/*.webm``), sorted;
* a list file (``.txt``, ``.list``, ``.lst``): one input per line, relative to the list
  file's folder; blank lines and ``#`` comments skipped (a line with predict's per-video
  targets after a TAB is reported: evaluate has no per-video settings).

``names_file`` keeps only the videos whose name (file stem or folder name) it lists,
e.g. DAVIS ``ImageSets/2017/val.txt``.

Frame folders carry no frame rate; ``frames_fps`` gives it (the model is conditioned on
the frame rate, paper 3.2): DAVIS sequences are 24 fps, YouTube-VOS' ``JPEGImages``
of the valid/test sets hold every 5th frame of 30 fps videos (6 fps;
``valid_all_frames``: 30 fps).

An input that cannot be used becomes an :class:`EvalVideo` with ``error`` set: the run
reports it (one line naming the path and what is wrong) and goes on with the others.

Geometry (:func:`fit_frame`): every frame becomes a square ``size x size`` frame,
squashed (``resize``; area averaging when shrinking, bilinear when enlarging) or short
side resized and center cropped (``center_crop``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from lightning_m3ddm.video.inputs import FRAME_EXTENSIONS, InputItem, expand_inputs, frame_files
from lightning_m3ddm.video.names import unique_name

# DAVIS: "24fps" sequences (Perazzi et al. 2016).
DAVIS_FPS = 24.0


class EvalInputError(Exception):
    """One test video cannot be read; the message names the path and the problem."""

    def __init__(self, path: str | os.PathLike, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


@dataclass(frozen=True)
class EvalVideo:
    """One test video: where it is and how to read it (no pixels).

    Attributes:
        name: unique within the run (file stem or folder name; ``name-2`` on a clash, as predict).
        path: the file or frame folder.
        kind: ``"file"`` or ``"frames"`` (a folder of images).
        fps: frame rate of a frame folder (``frames_fps``); a file's comes from its stream.
        max_frames: read only the first frames (``None``: all).
        error: why this input cannot be used, or ``None``.
    """

    name: str
    path: str
    kind: Literal["file", "frames"] = "file"
    fps: float | None = None
    max_frames: int | None = None
    error: str | None = None


@dataclass
class VideoFrames:
    """A test video at one geometry: ``frames`` uint8 (F, size, size, 3) RGB, its frame rate."""

    frames: np.ndarray
    fps: float


def resolve_videos(
    inputs: str | Sequence[str],
    names: Sequence[str] | None = None,
    frames_fps: float = DAVIS_FPS,
    max_frames: int | None = None,
) -> list[EvalVideo]:
    """Test videos named by ``inputs`` (see module docstring), in the order given.

    Args:
        names: keep only videos of these names; a listed name that no input provides
            becomes an error entry.
        frames_fps: frame rate of frame folders.
        max_frames: read only the first ``max_frames`` frames of each video.

    Raises:
        ValueError: no input at all, or a bad ``frames_fps`` / ``max_frames``.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    if not inputs:
        raise ValueError("no test video given (data.init_args.inputs: video files, frame folders, folders, globs or list files)")
    if not (isinstance(frames_fps, (int, float)) and frames_fps > 0):
        raise ValueError(f"frames_fps must be > 0, got {frames_fps!r}")
    if max_frames is not None and (isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 1):
        raise ValueError(f"max_frames must be None or an integer >= 1, got {max_frames!r}")
    found = [_without_spec(item) for item in expand_inputs(inputs, frame_folders=True)]
    if names is not None:
        wanted = list(dict.fromkeys(n.strip() for n in names if n.strip()))
        kept = [item for item in found if item.error is None and item.name in wanted]
        present = {item.name for item in kept}
        errors = [item for item in found if item.error is not None]
        missing = [InputItem(Path(n), error="listed in names_file but not found in the inputs") for n in wanted if n not in present]
        found = errors + kept + missing
    videos: list[EvalVideo] = []
    taken: dict[str, int] = {}
    for item in found:
        fps = float(frames_fps) if item.kind == "frames" else None
        videos.append(EvalVideo(unique_name(item.name, taken), str(item.path), item.kind, fps, max_frames, item.error))
    return videos


def _without_spec(item: InputItem) -> InputItem:
    """A list-file line's settings after a TAB are predict's targets: evaluate has none to take."""
    if item.spec is None or item.error is not None:
        return item
    return replace(item, spec=None, error=f"evaluate takes no per-video settings (list file gives {item.spec!r} after a TAB)")


def read_names_file(path: str | os.PathLike) -> list[str]:
    """Names, one per line (blank lines and ``#`` comments skipped).

    Raises:
        ValueError: the file does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"names_file not found: {path}")
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.lstrip().startswith("#")]


# --------------------------------------------------------------------------- geometry


def fit_frame(frame: np.ndarray, size: int, fit: str = "resize") -> np.ndarray:
    """A (H, W, 3) uint8 frame as a (size, size, 3) frame (module docstring)."""
    height, width = frame.shape[:2]
    if fit == "resize":
        target_w, target_h = size, size
    elif fit == "center_crop":
        scale = size / min(height, width)
        target_w, target_h = max(size, round(width * scale)), max(size, round(height * scale))
    else:
        raise ValueError(f"frame fit must be 'resize' or 'center_crop', got {fit!r}")
    if (target_w, target_h) != (width, height):
        shrink = target_w < width or target_h < height
        frame = cv2.resize(frame, (target_w, target_h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    top, left = (target_h - size) // 2, (target_w - size) // 2
    return np.ascontiguousarray(frame[top : top + size, left : left + size])


def clip_starts(num_frames: int, clip_frames: int | None, clips: int = 1) -> list[int]:
    """First frames of the evaluated clips of a video.

    ``clip_frames=None``: the whole video, one clip from frame 0. Otherwise ``clips``
    windows of ``clip_frames`` spread evenly from the first to the last possible start
    (two windows: the first and the last ``clip_frames`` frames), duplicates dropped; a
    video no longer than one window gives one clip of all its frames.
    """
    if num_frames < 1:
        raise ValueError(f"clip_starts: video has no frames (num_frames={num_frames})")
    if clip_frames is None or num_frames <= clip_frames:
        return [0]
    last = num_frames - clip_frames
    return list(dict.fromkeys(int(s) for s in np.rint(np.linspace(0, last, clips))))


# --------------------------------------------------------------------------- reading


def _image_frames(video: EvalVideo) -> Iterator[np.ndarray]:
    files = frame_files(Path(video.path))
    if not files:
        raise EvalInputError(video.path, f"no frame images ({', '.join(FRAME_EXTENSIONS)}) in this folder")
    for file in files:
        bgr = cv2.imread(str(file), cv2.IMREAD_COLOR)
        if bgr is None:
            raise EvalInputError(video.path, f"cannot read frame image {file.name}")
        yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_video(video: EvalVideo, size: int, fit: str = "resize") -> VideoFrames:
    """All frames of ``video`` (up to ``video.max_frames``) at ``size x size``.

    Raises:
        EvalInputError: the input is missing, not a video, truncated, corrupt or empty.
    """
    if video.error is not None:
        raise EvalInputError(video.path, video.error)
    frames: list[np.ndarray] = []
    if video.kind == "frames":
        source: Iterator[np.ndarray] = _image_frames(video)
        fps = float(video.fps or DAVIS_FPS)
    else:
        from lightning_m3ddm.video.errors import VideoInputError
        from lightning_m3ddm.video.stream import iter_source_frames, probe_source

        try:
            info = probe_source(video.path)
        except VideoInputError as error:
            raise EvalInputError(video.path, error.reason) from None
        source = iter_source_frames(info)
        fps = info.fps
    try:
        for frame in source:
            frames.append(fit_frame(frame, size, fit))
            if video.max_frames is not None and len(frames) == video.max_frames:
                break
    except EvalInputError:
        raise
    except Exception as error:  # a decoder failure mid-stream (truncated file)
        reason = getattr(error, "reason", None) or f"{type(error).__name__}: {error}"
        raise EvalInputError(video.path, reason) from None
    finally:
        close = getattr(source, "close", None)
        if close is not None:
            close()
    if not frames:
        raise EvalInputError(video.path, "no frame could be read")
    return VideoFrames(np.stack(frames), fps)
