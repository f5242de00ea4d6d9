"""Streaming video input and output for predict (PyAV), bounded memory whatever the length.

Input: :func:`probe_source` checks a file once (exists, is a video, every frame is
there, the first one decodes) and reads what the output needs (size, frame count,
frame rate, audio); :func:`iter_source_frames` then decodes it front to back, one
RGB frame at a time, as often as predict needs a pass over it.

Output: :class:`Mp4Writer` encodes RGB frames to H.264 (yuv420p) in an mp4 at the
source's average frame rate, one output frame per source frame, and carries the
source's first audio stream over, interleaved with the video as it is written
(:class:`AudioCarrier`): packets are copied unchanged when mp4 holds the codec (AAC,
MP3, ALAC, AC-3, E-AC-3), re-encoded to AAC otherwise (e.g. PCM from a .mov/.mkv).
The file is written under a hidden temporary name in the output folder and renamed
into place only when complete, so a failed or interrupted run leaves no half-written
video behind.

Variable-frame-rate sources are written at their average rate (frame timing is
regularised; the frame count and total duration are kept).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from lightning_m3ddm.video.decode import iter_frames, probe_video
from lightning_m3ddm.video.errors import VideoDecodeError, VideoInputError

log = logging.getLogger(__name__)

# Audio codecs an mp4 holds as they are (copied packet by packet); others are re-encoded to AAC.
MP4_AUDIO_CODECS = frozenset({"aac", "mp3", "alac", "ac3", "eac3"})
# Containers whose file can be copied byte for byte under an .mp4 name (copy-through).
MP4_SUFFIXES = (".mp4", ".m4v")


@dataclass(frozen=True)
class SourceInfo:
    """What predict needs to know about an input video.

    Attributes:
        path: the file.
        width, height: decoded frame size in pixels.
        num_frames: frames in the first video stream (demuxed count).
        fps: average frame rate as a float (conditions the model, paper 3.2).
        rate: the same as an exact fraction (e.g. 30000/1001), for the writer.
        audio_codec: codec of the first audio stream, None without audio.
        frames: the decoded frames themselves, (F, H, W, 3) uint8, for a video held in
            memory (:meth:`from_frames`); None for a file, which is streamed.
    """

    path: Path
    width: int
    height: int
    num_frames: int
    fps: float
    rate: Fraction
    audio_codec: str | None
    frames: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def stem(self) -> str:
        return self.path.stem

    @classmethod
    def from_frames(cls, frames, fps: float, name: str = "video") -> "SourceInfo":
        """A video held in memory: ``frames`` (F, H, W, 3) uint8 RGB (numpy or torch), at ``fps``.

        Raises:
            VideoInputError: frames of another shape or dtype, or a frame rate that is not > 0.
        """
        path = Path(f"<{name}>")
        if hasattr(frames, "detach"):  # a torch tensor
            frames = frames.detach().cpu().numpy()
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or 0 in frames.shape:
            raise VideoInputError(
                path, f"frames must be a non-empty uint8 (F, H, W, 3) RGB array, got {frames.dtype} {frames.shape}",
                "not_a_video",
            )
        if fps is None or not float(fps) > 0:
            raise VideoInputError(path, f"frames need their frame rate: fps > 0, got {fps!r}", "not_a_video")
        rate = Fraction(float(fps)).limit_denominator(1001)
        count, height, width = frames.shape[:3]
        return cls(path, width, height, count, float(fps), rate, None, frames)


def probe_source(path: str | os.PathLike) -> SourceInfo:
    """Check that ``path`` is a readable video and read its properties.

    Raises:
        VideoInputError: naming the file and what is wrong with it (missing, a
            folder, not a video, no video stream, truncated, zero frames, corrupt).
    """
    path = Path(path)
    if not path.exists():
        raise VideoInputError(path, "no such file", "missing")
    if path.is_dir():
        raise VideoInputError(path, "is a folder, not a video file", "not_a_video")
    try:
        info = probe_video(path, verify_decode=True)
    except VideoDecodeError as err:
        reason = str(err)
        if err.kind == "not_a_video":
            reason = f"not a video file ({reason})"
        elif err.kind == "corrupt":
            reason = f"corrupt or truncated video ({reason})"
        raise VideoInputError(path, reason, err.kind) from None
    try:
        with av.open(os.fspath(path)) as container:
            stream = container.streams.video[0]
            rate = next(
                (Fraction(r) for r in (stream.average_rate, stream.guessed_rate) if r is not None and r > 0),
                Fraction(info.fps).limit_denominator(1001),
            )
            audio = container.streams.audio[0].codec_context.name if container.streams.audio else None
    except av.error.FFmpegError as err:
        raise VideoInputError(path, f"cannot open video: {err}", "corrupt") from None
    return SourceInfo(path, info.width, info.height, info.num_frames, float(rate), rate, audio)


def iter_source_frames(info: SourceInfo) -> Iterator[np.ndarray]:
    """Yield the ``info.num_frames`` frames of the source in order, RGB uint8 (H, W, 3).

    A frame whose size differs from the probed one (a mid-stream resolution change)
    is resized to it, so that every consumer sees one geometry.

    Raises:
        VideoInputError: the stream fails to decode or ends early (truncated).
    """
    if info.frames is not None:
        yield from info.frames
        return
    count = 0
    try:
        for frame in iter_frames(info.path):
            if count == info.num_frames:
                return
            if frame.shape[:2] != (info.height, info.width):
                frame = cv2.resize(frame, (info.width, info.height), interpolation=cv2.INTER_AREA)
            count += 1
            yield frame
    except VideoDecodeError as err:
        raise VideoInputError(info.path, f"{err} (after {count} of {info.num_frames} frames)", "truncated") from None
    if count < info.num_frames:
        raise VideoInputError(
            info.path, f"truncated: the stream ended after {count} of {info.num_frames} frames", "truncated"
        )


def partial_path(path: Path) -> Path:
    """Hidden temporary name next to ``path`` (same folder, so the final rename is atomic)."""
    return path.with_name(f".{path.stem}.{os.getpid()}.partial{path.suffix}")


def _default_layout(channels: int) -> str:
    """FFmpeg's default channel layout name for a channel count."""
    return {1: "mono", 2: "stereo", 3: "2.1", 4: "quad", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}.get(channels, "stereo")


class AudioCarrier:
    """Carries the first audio stream of ``source`` into ``output``, interleaved with the video.

    Call :meth:`mux_until` with the time written so far after each video frame, and
    :meth:`finish` once at the end (the audio is carried over whole, also any part
    that lasts beyond the last video frame).
    """

    def __init__(self, source: Path, output: av.container.OutputContainer):
        self._output = output
        self._input = av.open(os.fspath(source))
        try:
            in_stream = self._input.streams.audio[0]
            self.copy = in_stream.codec_context.name in MP4_AUDIO_CODECS
            if self.copy:
                self._stream = output.add_stream_from_template(in_stream)
            else:
                rate = in_stream.codec_context.sample_rate or 48000
                self._stream = output.add_stream("aac", rate=rate)
                # the default layout for the channel count: a source may say "1 channels" (no order)
                self._stream.layout = _default_layout(in_stream.codec_context.channels)
                self._stream.format = "fltp"  # what FFmpeg's AAC encoder takes; PyAV resamples to it
            self._packets = self._input.demux(in_stream)
        except Exception:
            self._input.close()
            raise
        self._pending: av.Packet | None = None

    def mux_until(self, seconds: float | None) -> None:
        """Write the audio up to ``seconds`` of presentation time (everything when None)."""
        while True:
            packet = self._pending if self._pending is not None else next(self._packets, None)
            self._pending = None
            if packet is None:
                return
            stamp = packet.pts if packet.pts is not None else packet.dts
            if seconds is not None and stamp is not None and float(stamp * packet.time_base) > seconds:
                self._pending = packet
                return
            self._emit(packet)

    def _emit(self, packet: av.Packet) -> None:
        if self.copy:
            if packet.dts is None:  # the demuxer's empty flush packet
                return
            packet.stream = self._stream
            self._output.mux(packet)
            return
        for frame in packet.decode():
            frame.pts = None  # the encoder's FIFO re-times the resampled audio
            self._output.mux(self._stream.encode(frame))

    def finish(self) -> None:
        self.mux_until(None)
        if not self.copy:
            self._output.mux(self._stream.encode(None))

    def close(self) -> None:
        self._input.close()


class Mp4Writer:
    """H.264 mp4 of RGB frames, audio carried over from a source, written atomically.

    Use as a context manager; leaving it by an exception removes the partial file::

        with Mp4Writer(path, width, height, rate, audio_source=source) as writer:
            for frame in frames:
                writer.write(frame)

    Args:
        path: final file (``.mp4``); its folder must exist.
        width, height: frame size, both even (yuv420p).
        rate: frame rate; output frame ``i`` is shown at ``i / rate``.
        audio_source: file whose first audio stream is carried over (None: no audio).
        crf, preset: libx264 quality (18 is visually lossless) and speed.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        width: int,
        height: int,
        rate: Fraction,
        audio_source: str | os.PathLike | None = None,
        crf: int = 18,
        preset: str = "medium",
    ):
        if width % 2 or height % 2 or width < 2 or height < 2:
            raise ValueError(f"H.264 (yuv420p) needs an even frame size, got {width}x{height}")
        self.path = Path(path)
        self.width, self.height = width, height
        self.rate = Fraction(rate)
        self.audio_source = Path(audio_source) if audio_source is not None else None
        self.crf, self.preset = crf, preset
        self.frames_written = 0
        self._container = None
        self._stream = None
        self._audio: AudioCarrier | None = None
        self._tmp = partial_path(self.path)

    def __enter__(self) -> "Mp4Writer":
        self.open()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def open(self) -> None:
        try:
            self._container = av.open(
                os.fspath(self._tmp), mode="w", format="mp4", options={"movflags": "+faststart"}
            )
            self._stream = self._container.add_stream("libx264", rate=self.rate)
            self._stream.width, self._stream.height = self.width, self.height
            self._stream.pix_fmt = "yuv420p"
            self._stream.codec_context.time_base = 1 / self.rate
            self._stream.options = {"crf": str(self.crf), "preset": self.preset}
            if self.audio_source is not None:
                self._audio = AudioCarrier(self.audio_source, self._container)
        except Exception:
            self.abort()
            raise

    def write(self, frame_rgb: np.ndarray) -> None:
        """Append one RGB uint8 (height, width, 3) frame."""
        if frame_rgb.shape != (self.height, self.width, 3) or frame_rgb.dtype != np.uint8:
            raise ValueError(
                f"frame must be uint8 ({self.height}, {self.width}, 3), got {frame_rgb.dtype} {frame_rgb.shape}"
            )
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame_rgb), format="rgb24")
        frame.pts = self.frames_written
        frame.time_base = 1 / self.rate
        self._container.mux(self._stream.encode(frame))
        self.frames_written += 1
        if self._audio is not None:
            self._audio.mux_until(float(self.frames_written / self.rate))

    def close(self) -> Path:
        """Finish the file and move it into place; returns its path."""
        try:
            if self.frames_written == 0:
                raise ValueError(f"{self.path}: no frame was written")
            self._container.mux(self._stream.encode(None))
            if self._audio is not None:
                self._audio.finish()
                self._audio.close()
                self._audio = None
            self._container.close()
            self._container = None
            os.replace(self._tmp, self.path)
        except Exception:
            self.abort()
            raise
        return self.path

    def abort(self) -> None:
        """Drop the partial file (idempotent)."""
        if self._audio is not None:
            self._audio.close()
            self._audio = None
        if self._container is not None:
            try:
                self._container.close()
            except Exception:  # closing a broken muxer may fail; the file goes anyway
                pass
            self._container = None
        self._tmp.unlink(missing_ok=True)


def even_frame(frame_rgb: np.ndarray) -> np.ndarray:
    """Repeat the last row/column of an odd-sized frame so that H.264 (yuv420p) takes it."""
    h, w = frame_rgb.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return frame_rgb
    return np.pad(frame_rgb, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def copy_through(info: SourceInfo, destination: Path, crf: int = 18, preset: str = "medium") -> Path:
    """Write the source unchanged to ``destination`` (a target that adds no border).

    An mp4 source is copied byte for byte; other containers are re-encoded to H.264
    with the audio carried over (an odd frame size gains one repeated row/column).
    """
    if info.path.suffix.lower() in MP4_SUFFIXES:
        tmp = partial_path(destination)
        try:
            shutil.copyfile(info.path, tmp)
            os.replace(tmp, destination)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return destination
    width, height = info.width + info.width % 2, info.height + info.height % 2
    audio = info.path if info.audio_codec else None
    with Mp4Writer(destination, width, height, info.rate, audio, crf, preset) as writer:
        for frame in iter_source_frames(info):
            writer.write(even_frame(frame))
    return destination
