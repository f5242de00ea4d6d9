"""Small generated videos (optionally with a sound track) for predict's tests and benchmarks.

Frames are cheap to render (a fixed gradient with a square moving across), so a
2,000-frame clip takes a second or two; the audio is a sine tone.
"""

from __future__ import annotations

import io
import os
from fractions import Fraction
from pathlib import Path
from typing import Literal

import av
import numpy as np

AudioKind = Literal["aac", "pcm"]


def render_frame(index: int, width: int, height: int) -> np.ndarray:
    """RGB uint8 (height, width, 3): a smooth gradient with a square that moves with ``index``."""
    y, x = np.mgrid[0:height, 0:width]
    frame = np.stack(
        [x * 255 // max(1, width - 1), y * 255 // max(1, height - 1), np.full_like(x, 96)], axis=-1
    ).astype(np.uint8)
    side = max(2, min(width, height) // 4)
    x0 = (index * 2) % max(1, width - side)
    y0 = (height - side) // 2
    frame[y0 : y0 + side, x0 : x0 + side] = (240, 240, 32)
    return frame


def write_sample_video(
    path: str | os.PathLike,
    num_frames: int,
    width: int = 64,
    height: int = 48,
    fps: Fraction | float = 30,
    audio: AudioKind | None = None,
    sample_rate: int = 16000,
    crf: int = 10,
) -> Path:
    """Write an H.264 video; ``audio`` adds a 440 Hz tone as AAC (mp4) or PCM (use .mkv/.mov).

    The container follows the suffix (``.mp4``, ``.mkv``, ``.mov``). Width and height must be even.
    """
    path = Path(path)
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(os.fspath(path), mode="w") as container:
        video = container.add_stream("libx264", rate=rate)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.options = {"crf": str(crf), "preset": "ultrafast"}
        sound = None
        if audio is not None:
            sound = container.add_stream("aac" if audio == "aac" else "pcm_s16le", rate=sample_rate)
            sound.layout = "mono"
        for i in range(num_frames):
            frame = av.VideoFrame.from_ndarray(render_frame(i, width, height), format="rgb24")
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        if sound is not None:
            total = int(round(num_frames / rate * sample_rate))
            tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(total) / sample_rate)
            fmt = sound.codec_context.format.name
            for start in range(0, total, 1024):
                chunk = tone[start : start + 1024]
                data = chunk.astype(np.float32)[None] if fmt == "fltp" else (chunk * 32767).astype(np.int16)[None]
                frame = av.AudioFrame.from_ndarray(data, format=fmt, layout="mono")
                frame.sample_rate = sample_rate
                frame.pts = start
                container.mux(sound.encode(frame))
            container.mux(sound.encode(None))
    return path


def write_zero_frame_video(path: str | os.PathLike, width: int = 64, height: int = 48) -> Path:
    """An AVI whose video stream holds not a single frame.

    (An mp4 track without samples is dropped by FFmpeg's demuxer, which then reports
    no video stream at all; AVI keeps the empty stream.)
    """
    path = Path(path)
    one_frame = io.BytesIO()
    with av.open(one_frame, mode="w", format="mp4") as container:
        video = container.add_stream("libx264", rate=30)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        container.mux(video.encode(av.VideoFrame.from_ndarray(render_frame(0, width, height), format="rgb24")))
        container.mux(video.encode(None))
    one_frame.seek(0)
    with av.open(one_frame) as source, av.open(os.fspath(path), mode="w", format="avi") as container:
        container.add_stream_from_template(source.streams.video[0])
        container.start_encoding()
    return path


def write_truncated_copy(source: str | os.PathLike, destination: str | os.PathLike, keep: float = 0.5) -> Path:
    """The first ``keep`` fraction of the bytes of ``source`` (a download cut short)."""
    data = Path(source).read_bytes()
    destination = Path(destination)
    destination.write_bytes(data[: int(len(data) * keep)])
    return destination
