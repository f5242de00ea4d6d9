"""Probe, decode and encode videos with PyAV.

Only the frames a training sample needs are converted to RGB, and frames that
are neither wanted nor referenced by other frames (non-reference B-frames) are
not decoded at all. Decoding is sequential from the start of the stream,
except that when the next wanted frame lies beyond the next keyframe the
decoder seeks to the keyframe preceding it (``seek=True``); with short clips or
long GOPs this degenerates gracefully into a plain sequential decode. Both rely
on the presentation timestamps found by demuxing the whole stream once (cheap:
no decoding), so variable-frame-rate files are handled by frame index, not by
time. Streams without timestamps are decoded sequentially, counting frames.
"""

from __future__ import annotations

import bisect
import io
import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO, Union

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from lightning_m3ddm.video.errors import VideoDecodeError  # noqa: F401  (raised here; also importable from here)

VideoSource = Union[str, os.PathLike, bytes, BinaryIO]

VIDEO_EXTENSIONS = (
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".flv", ".wmv", ".ts",
)


@dataclass(frozen=True)
class VideoInfo:
    """What a shard's ``.json`` records about one video."""

    fps: float
    num_frames: int
    width: int
    height: int
    duration: float
    codec: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class FrameIndex:
    """Presentation timestamps of every frame and of the keyframes, both ascending.

    ``pts`` is None when the container does not carry timestamps; decoding then
    counts frames sequentially.
    """

    num_frames: int
    fps: float
    width: int
    height: int
    pts: tuple[int, ...] | None
    keyframe_pts: tuple[int, ...]


def _looks_like_video_container(head: bytes) -> bool:
    """Known container signatures: a file that has one but does not open is corrupt, not 'not a video'."""
    return (
        head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide")  # ISO BMFF (mp4, mov)
        or head.startswith(b"\x1aE\xdf\xa3")  # Matroska / WebM
        or (head.startswith(b"RIFF") and head[8:12] == b"AVI ")
        or head.startswith((b"\x00\x00\x01\xba", b"FLV"))
    )


def _head(source: VideoSource) -> bytes:
    try:
        if isinstance(source, (bytes, bytearray, memoryview)):
            return bytes(source[:16])
        if isinstance(source, (str, os.PathLike)):
            with open(source, "rb") as f:
                return f.read(16)
        source.seek(0)
        return source.read(16)
    except OSError:
        return b""


def _open(source: VideoSource) -> av.container.InputContainer:
    try:
        if isinstance(source, (bytes, bytearray, memoryview)):
            return av.open(io.BytesIO(bytes(source)), mode="r")
        if isinstance(source, (str, os.PathLike)):
            return av.open(os.fspath(source), mode="r")
        source.seek(0)
        return av.open(source, mode="r")
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise VideoDecodeError(f"no such file: {source}", "missing") from exc
        kind = "corrupt" if _looks_like_video_container(_head(source)) else "not_a_video"
        detail = getattr(exc, "strerror", None) or str(exc)
        raise VideoDecodeError(f"cannot open video: {detail}", kind) from exc


def _video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream:
    if not container.streams.video:
        raise VideoDecodeError("no video stream in file", "no_video_stream")
    return container.streams.video[0]


def _stream_fps(stream) -> float:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate is not None and float(rate) > 0:
            return float(rate)
    return 0.0


def header_frame_count(path: str | os.PathLike) -> float:
    """Frame count as the container header states it (no decoding; 0 when unknown or unreadable).

    Cheap enough to order a catalogue (one header read per file); exact counts come from
    the probe when the video is prepared.
    """
    try:
        with av.open(os.fspath(path)) as container:
            stream = container.streams.video[0]
            if stream.frames:
                return float(stream.frames)
            rate = stream.average_rate or stream.guessed_rate
            if stream.duration is not None and stream.time_base is not None and rate:
                return float(stream.duration * stream.time_base * rate)
            if container.duration is not None and rate:
                return float(container.duration / av.time_base * rate)
    except (av.error.FFmpegError, IndexError, OSError, ValueError):
        pass
    return 0.0


def index_frames(source: VideoSource) -> FrameIndex:
    """Demux the first video stream (no decoding) and list its frames' timestamps.

    Raises:
        VideoDecodeError: the file cannot be demuxed (truncated, not a video) or
            holds no video frame.
    """
    container = _open(source)
    try:
        stream = _video_stream(container)
        pts: list[int] = []
        keyframes: list[int] = []
        has_pts = True
        count = 0
        try:
            for packet in container.demux(stream):
                if packet.size == 0:  # flush packet
                    continue
                count += 1
                if packet.pts is None:
                    has_pts = False
                    continue
                pts.append(packet.pts)
                if packet.is_keyframe:
                    keyframes.append(packet.pts)
        except av.error.FFmpegError as exc:
            raise VideoDecodeError(f"corrupt or truncated stream: {exc}", "corrupt") from exc
        if count == 0:
            raise VideoDecodeError("video has zero frames", "zero_frames")
        declared = stream.frames or 0
        if declared > count:
            raise VideoDecodeError(f"truncated: container declares {declared} frames, {count} present", "truncated")
        fps = _stream_fps(stream)
        size = (stream.codec_context.width, stream.codec_context.height)
        if has_pts:
            pts.sort()
            keyframes.sort()
            return FrameIndex(count, fps, *size, tuple(pts), tuple(keyframes))
        return FrameIndex(count, fps, *size, None, ())
    finally:
        container.close()


def probe_video(source: VideoSource, verify_decode: bool = True) -> VideoInfo:
    """Read the metadata a shard records; the frame count comes from demuxing.

    Args:
        verify_decode: also decode the first frame, which catches files whose
            container is intact but whose bitstream is not.

    Raises:
        VideoDecodeError: with a one-line reason (not a video, truncated, zero frames).
    """
    index = index_frames(source)
    container = _open(source)
    try:
        stream = _video_stream(container)
        width, height = stream.codec_context.width, stream.codec_context.height
        codec = stream.codec_context.name
        if verify_decode:
            try:
                first = next(iter(container.decode(stream)), None)
            except av.error.FFmpegError as exc:
                raise VideoDecodeError(f"first frame does not decode: {exc}", "corrupt") from exc
            if first is None:
                raise VideoDecodeError("no frame decodes", "corrupt")
            width, height = first.width, first.height
    finally:
        container.close()
    if width <= 0 or height <= 0:
        raise VideoDecodeError(f"invalid frame size {width}x{height}", "corrupt")
    fps = index.fps
    if fps <= 0:
        raise VideoDecodeError("frame rate unknown", "corrupt")
    return VideoInfo(
        fps=fps,
        num_frames=index.num_frames,
        width=width,
        height=height,
        duration=index.num_frames / fps,
        codec=codec,
    )


@dataclass(frozen=True)
class ResizeCrop:
    """Scale a frame to (scaled_height, scaled_width), then crop (height, width) at (top, left)."""

    scaled_height: int
    scaled_width: int
    top: int
    left: int
    height: int
    width: int


def cover_resize(src_height: int, src_width: int, height: int, width: int) -> tuple[int, int]:
    """Smallest size keeping the aspect ratio that covers (height, width) (short side resize)."""
    scale = max(height / src_height, width / src_width)
    return max(height, round(src_height * scale)), max(width, round(src_width * scale))


def center_crop_plan(src_height: int, src_width: int, height: int, width: int) -> ResizeCrop:
    sh, sw = cover_resize(src_height, src_width, height, width)
    return ResizeCrop(sh, sw, (sh - height) // 2, (sw - width) // 2, height, width)


def decode_frames(
    source: VideoSource,
    indices: Sequence[int],
    plan: ResizeCrop | None = None,
    index: FrameIndex | None = None,
    seek: bool = True,
    threads: int = 1,
    interpolation: str = "BILINEAR",
) -> np.ndarray:
    """Decode the frames at ``indices`` (any order, repeats allowed).

    Args:
        source: path, bytes or binary file object.
        indices: frame numbers in presentation order, 0-based.
        plan: resize and crop applied during the RGB conversion; None keeps the size.
        index: the result of :func:`index_frames` if already computed.
        seek: allow seeking to keyframes to skip runs of unneeded frames.
        threads: decoder threads (1 in dataloader workers: parallelism comes from workers).

    Returns:
        uint8 array (len(indices), H, W, 3), RGB.

    Raises:
        VideoDecodeError: the stream is corrupt or shorter than the largest index.
    """
    if len(indices) == 0:
        raise ValueError("no frame indices given")
    index = index or index_frames(source)
    wanted = sorted(set(int(i) for i in indices))
    if wanted[0] < 0 or wanted[-1] >= index.num_frames:
        raise VideoDecodeError(
            f"frame index out of range: {wanted[0]}..{wanted[-1]} for {index.num_frames} frames"
        )
    container = _open(source)
    try:
        stream = _video_stream(container)
        # FFmpeg's default (0 = one thread per core) would oversubscribe the CPU under dataloader workers.
        stream.codec_context.thread_count = max(1, threads)
        if threads > 1:
            stream.codec_context.thread_type = "AUTO"
        if index.pts is None:
            decoded = _decode_sequential(container, stream, wanted, plan, interpolation)
        else:
            decoded = _decode_by_pts(container, stream, wanted, index, plan, interpolation, seek)
    except av.error.FFmpegError as exc:
        raise VideoDecodeError(f"decoding failed: {exc}") from exc
    finally:
        container.close()
    return np.stack([decoded[i] for i in indices])


_local = threading.local()


def _to_rgb(frame: av.VideoFrame, plan: ResizeCrop | None, interpolation: str) -> np.ndarray:
    # A reformatter kept per thread reuses its scaler context between frames of one size (2-3x cheaper).
    # It is rebuilt in a forked child (dataloader worker), and single-threaded: a scaler's thread pool
    # does not survive fork and would deadlock the child.
    cached = getattr(_local, "reformatter", None)
    if cached is None or cached[0] != os.getpid():
        cached = _local.reformatter = (os.getpid(), VideoReformatter())
    reformatter = cached[1]
    if plan is None:
        return reformatter.reformat(frame, format="rgb24", threads=1).to_ndarray()
    rgb = reformatter.reformat(
        frame, width=plan.scaled_width, height=plan.scaled_height, format="rgb24", interpolation=interpolation, threads=1
    ).to_ndarray()
    return np.ascontiguousarray(rgb[plan.top : plan.top + plan.height, plan.left : plan.left + plan.width])


def _decode_sequential(container, stream, wanted, plan, interpolation) -> dict[int, np.ndarray]:
    out: dict[int, np.ndarray] = {}
    targets = set(wanted)
    for i, frame in enumerate(container.decode(stream)):
        if i in targets:
            out[i] = _to_rgb(frame, plan, interpolation)
        if i >= wanted[-1]:
            break
    if len(out) != len(targets):
        raise VideoDecodeError(f"stream ended before frame {wanted[-1]}")
    return out


class _SeekMissed(Exception):
    """A seek landed after the wanted frame (unreliable index); decode sequentially instead."""


def _decode_by_pts(container, stream, wanted, index: FrameIndex, plan, interpolation, seek) -> dict[int, np.ndarray]:
    if seek:
        try:
            return _decode_by_pts_once(container, stream, wanted, index, plan, interpolation, seek=True)
        except _SeekMissed:
            container.seek(0, backward=True, any_frame=False)
    return _decode_by_pts_once(container, stream, wanted, index, plan, interpolation, seek=False)


def _frames_skipping_unwanted(container, stream, wanted_pts: set[int]):
    """Decoded frames in presentation order; unwanted non-reference frames are not decoded at all.

    No other frame depends on a non-reference frame, so skipping those not asked
    for changes no output pixel (with x264's default B-frames that is ~40% of the work).
    """
    ctx = stream.codec_context
    for packet in container.demux(stream):
        ctx.skip_frame = "NONREF" if packet.size and packet.pts not in wanted_pts else "DEFAULT"
        yield from ctx.decode(packet)


def _decode_by_pts_once(container, stream, wanted, index, plan, interpolation, seek) -> dict[int, np.ndarray]:
    out: dict[int, np.ndarray] = {}
    wanted_pts = {index.pts[i] for i in wanted}
    frames = _frames_skipping_unwanted(container, stream, wanted_pts)
    last_pts = index.pts[0] - 1
    for target in wanted:
        target_pts = index.pts[target]
        k = bisect.bisect_right(index.keyframe_pts, target_pts) - 1
        # Seek when the run up to the target contains a keyframe: every frame before it is wasted work.
        if seek and k >= 0 and index.keyframe_pts[k] > last_pts:
            container.seek(index.keyframe_pts[k], stream=stream, backward=True)
            frames = _frames_skipping_unwanted(container, stream, wanted_pts)
            first = True
        else:
            first = False
        found = None
        for frame in frames:
            if frame.pts is None:
                raise VideoDecodeError("decoded frame without timestamp")
            if first and frame.pts > target_pts:
                raise _SeekMissed()
            first = False
            last_pts = frame.pts
            if frame.pts >= target_pts:
                found = frame
                break
        if found is None:
            raise VideoDecodeError(f"stream ended before frame {target}")
        # A missing timestamp (dropped frame) takes the next frame rather than failing the sample.
        out[target] = _to_rgb(found, plan, interpolation)
    return out


def encode_video(
    frames: Iterable[np.ndarray],
    path: str | os.PathLike,
    fps: float,
    codec: str = "libx264",
    crf: int = 20,
    gop: int | None = None,
    preset: str = "veryfast",
) -> Path:
    """Write RGB uint8 frames (H, W, 3) to an mp4 (yuv420p; H and W must be even for h264).

    Args:
        gop: keyframe interval in frames; None keeps the encoder default.
    """
    path = Path(path)
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(os.fspath(path), mode="w", format="mp4") as container:
        stream = None
        for frame_rgb in frames:
            if stream is None:
                height, width = frame_rgb.shape[:2]
                stream = container.add_stream(codec, rate=rate)
                stream.width, stream.height = width, height
                stream.pix_fmt = "yuv420p"
                options = {}
                if codec in ("libx264", "libx265"):
                    options = {"crf": str(crf), "preset": preset}
                if gop is not None:
                    stream.codec_context.gop_size = int(gop)
                stream.options = options
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame_rgb), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        if stream is None:
            raise ValueError("no frames to encode")
        for packet in stream.encode():
            container.mux(packet)
    return path


def iter_frames(source: VideoSource, plan_size: tuple[int, int] | None = None, interpolation: str = "AREA"):
    """Yield every frame as RGB uint8 (H, W, 3), optionally resized to ``plan_size`` = (height, width)."""
    container = _open(source)
    try:
        stream = _video_stream(container)
        stream.codec_context.thread_type = "AUTO"
        for frame in container.decode(stream):
            if plan_size is None:
                yield frame.to_ndarray(format="rgb24")
            else:
                yield frame.to_ndarray(
                    format="rgb24", width=plan_size[1], height=plan_size[0], interpolation=interpolation
                )
    except av.error.FFmpegError as exc:
        raise VideoDecodeError(f"decoding failed: {exc}") from exc
    finally:
        container.close()
