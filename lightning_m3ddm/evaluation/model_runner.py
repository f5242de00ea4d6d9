"""The model as an evaluated method: predict's outpainting pipeline on a masked test clip.

A protocol's mask keeps a rectangle of each frame and asks for everything around it.
That is exactly an outpainting job: the protocol's bands are a
:class:`~lightning_m3ddm.geometry.Padding`; the *source* is the rectangle inside them
(:meth:`~lightning_m3ddm.geometry.Padding.inner_box`), the *target* the bands themselves,
which restore the full frame. The model never sees a generated-region pixel of the
ground truth.

The clip goes through :meth:`OutpaintingPipeline.outpaint` unchanged (canvas layout,
masked context and Telea start latents, global frames, the window plan, dual guidance,
seeds), its known rectangle handed over in memory (:meth:`SourceInfo.from_frames`).

Output frame: the target's crop of the generated canvas (the whole canvas when the
frame is square), resized to the protocol's frame size when the canvas differs (area
averaging when shrinking, bicubic when enlarging), with the known rectangle set to the
ground truth's pixels, as the released script pastes its source back and predict keeps
the source pixels.

Inference per method: ``dense`` = windows of 16 frames chained with guide frames, one
level (paper 4.2, appendix C.2: "the dense predict form for short video outpainting");
``coarse_to_fine`` = the protocol's strides (paper C.2: [30, 15, 1]) with the model's
dense threshold (videos shorter than it are done densely, as the released script).
"""

from __future__ import annotations

import os
import sys
from dataclasses import replace

import cv2
import numpy as np

from lightning_m3ddm.coarse_to_fine import ScheduleConfig
from lightning_m3ddm.geometry import Padding
from lightning_m3ddm.video.stream import SourceInfo

from .protocols import MaskProtocol

# A dense plan whatever the length: the dense threshold is above any frame count.
_ALWAYS_DENSE = sys.maxsize


def schedule_for(base: ScheduleConfig, inference: str, strides: tuple[int, ...] | None = None) -> ScheduleConfig:
    """The window schedule of one inference mode, from the model's own schedule.

    Args:
        base: the model's schedule (window, max_batch, dense threshold, strides).
        inference: ``"dense"`` or ``"coarse_to_fine"``.
        strides: the levels for ``coarse_to_fine`` (``None``: the model's).
    """
    if inference == "dense":
        return replace(base, strides=(1,), dense_threshold=_ALWAYS_DENSE)
    if inference == "coarse_to_fine":
        return replace(base, strides=tuple(strides or base.strides))
    raise ValueError(f"inference must be 'dense' or 'coarse_to_fine', got {inference!r}")


def protocol_schedule(base: ScheduleConfig, protocol: MaskProtocol, dense: bool = False) -> ScheduleConfig:
    """``m3ddm``: the protocol's inference; ``m3ddm_dense`` (``dense=True``): always dense."""
    return schedule_for(base, "dense" if dense else protocol.inference, protocol.strides)


def plan_key(schedule: ScheduleConfig, num_frames: int) -> tuple:
    """Identifies the model calls of a plan: equal keys give identical outputs (same seeds)."""
    return tuple(schedule.plan(num_frames).windows)


def canvas_to_frame(canvas: np.ndarray, crop, size: tuple[int, int]) -> np.ndarray:
    """The target's crop of a generated canvas at the evaluation size (width, height)."""
    region = canvas[crop.y0 : crop.y1, crop.x0 : crop.x1]
    width, height = size
    if region.shape[:2] != (height, width):
        shrink = region.shape[1] > width or region.shape[0] > height
        region = cv2.resize(region, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
    return region


class PipelineOutpainter:
    """Runs an :class:`~lightning_m3ddm.predict.pipeline.OutpaintingPipeline` on clips in memory.

    Args:
        pipeline: the model's pipeline (e.g. ``M3DDMPredictor.pipeline``); its sampling,
            canvas and global-frame settings are used as they are, its schedule is
            replaced per call.
        work_dir: where the per-clip latent files go (default: the pipeline's own).
    """

    def __init__(self, pipeline, work_dir: str | os.PathLike | None = None):
        self.pipeline = pipeline
        self.work_dir = work_dir

    @property
    def base_schedule(self) -> ScheduleConfig:
        return self.pipeline.schedule

    def outpaint(self, frames: np.ndarray, bands: Padding, fps: float, schedule: ScheduleConfig) -> np.ndarray:
        """Outpaint the masked bands of ``frames``.

        Args:
            frames: uint8 (F, H, W, 3) ground truth; only the known rectangle is used.
            bands: the protocol's masked bands on this H x W frame.
            fps: the clip's frame rate (conditions the model).
            schedule: dense or coarse-to-fine windows (:func:`protocol_schedule`).

        Returns:
            uint8 (F, H, W, 3): generated bands, ground-truth known rectangle.
        """
        height, width = frames.shape[1:3]
        known = bands.inner_box(width, height)
        rows, cols = slice(known.y0, known.y1), slice(known.x0, known.x1)
        info = SourceInfo.from_frames(frames[:, rows, cols], fps, name="known")
        work_dir = self.work_dir if self.work_dir is not None else self.pipeline.work_dir
        video = self.pipeline.replace(schedule=schedule, work_dir=work_dir).outpaint(info, [bands])
        try:
            crop = video.layout.crop_for(bands)
            out = np.empty_like(frames)
            for index, canvas in enumerate(video.canvas_frames()):
                out[index] = canvas_to_frame(canvas, crop, (width, height))
        finally:
            video.close()
        out[:, rows, cols] = frames[:, rows, cols]
        return out
