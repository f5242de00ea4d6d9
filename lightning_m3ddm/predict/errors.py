"""Errors of a predict run that name what is wrong, one line each.

A :class:`VideoInputError` fails one video (the run goes on with the others); a
:class:`PredictConfigError` is wrong for the whole run (bad ratio on the command
line, unwritable output folder) and stops it before any model work.
"""

from __future__ import annotations

from lightning_m3ddm.video.errors import VideoInputError

__all__ = ["PredictConfigError", "PredictError", "VideoInputError", "VIDEO_FAILURES"]


class PredictError(Exception):
    """Base class: the message is complete and meant for the user as is."""


class PredictConfigError(PredictError, ValueError):
    """The run's configuration is unusable (e.g. an unparsable --target_ratio, an unwritable output folder)."""


# What fails one video without stopping the run: both messages are complete and meant for the user.
VIDEO_FAILURES = (PredictError, VideoInputError)
