"""Errors of a predict run that name what is wrong, one line each.

A :class:`VideoInputError` fails one video (the run goes on with the others); a
:class:`PredictConfigError` is wrong for the whole run (bad ratio on the command
line, unwritable output folder) and stops it before any model work.
"""

from __future__ import annotations

from pathlib import Path


class PredictError(Exception):
    """Base class: the message is complete and meant for the user as is."""


class VideoInputError(PredictError):
    """One input video cannot be outpainted (missing, not a video, truncated, zero frames, bad target).

    ``kind`` classifies the failure for summaries (``missing``, ``not_a_video``,
    ``truncated``, ``zero_frames``, ``bad_target``, ...).
    """

    def __init__(self, path: str | Path, reason: str, kind: str = "invalid"):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason
        self.kind = kind


class PredictConfigError(PredictError, ValueError):
    """The run's configuration is unusable (e.g. an unparsable --target_ratio, an unwritable output folder)."""
