"""Errors of video files, one line each naming the file and what is wrong.

:class:`VideoDecodeError` comes from decoding (training data, evaluation, predict);
:class:`VideoInputError` fails one input video of a run (predict, the Python pipeline,
evaluation), which goes on with the others.
"""

from __future__ import annotations

from pathlib import Path


class VideoError(Exception):
    """Base class of the errors of one video."""


class VideoDecodeError(VideoError, RuntimeError):
    """A video cannot be opened or does not hold the frames that were asked for.

    ``kind`` classifies the failure for summaries: ``missing``, ``not_a_video``,
    ``no_video_stream``, ``corrupt``, ``truncated``, ``zero_frames`` or ``decode_failed``.
    """

    def __init__(self, message: str, kind: str = "decode_failed") -> None:
        super().__init__(message)
        self.kind = kind


class VideoInputError(VideoError):
    """One input video cannot be outpainted (missing, not a video, truncated, zero frames, bad target).

    ``kind`` classifies the failure for summaries (``missing``, ``not_a_video``,
    ``truncated``, ``zero_frames``, ``bad_target``, ...).
    """

    def __init__(self, path: str | Path, reason: str, kind: str = "invalid"):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason
        self.kind = kind
