"""The CPU half of outpainting a video, done ahead in DataLoader worker processes.

Before the model sees a video, every frame is decoded, drawn on the canvas, masked and
Telea-inpainted (:class:`~lightning_m3ddm.predict.canvas.CanvasPainter`), and the global
frames are picked: seconds of CPU per hundred frames that an accelerator would otherwise
wait for. :func:`paint_frames` is that pass; the pipeline runs it inline, or a loader
worker runs it ahead (:func:`prepare_job`) and writes the canvases to a private folder
in the work folder (``m3ddm-prepared-<owner pid>@<host>-*``, raw uint8 records, read
back in order by the main process), so memory stays bounded whatever the length and only
paths travel between processes. How far ahead: ``num_workers x prefetch_factor`` videos
(:class:`~lightning_m3ddm.predict.datamodule.VideoPredictDataModule`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lightning_m3ddm.geometry import CropMode, Target, canvas_layout, is_copy_through
from lightning_m3ddm.predict.canvas import CanvasPainter
from lightning_m3ddm.predict.datamodule import VideoJob
from lightning_m3ddm.predict.errors import PredictError, VideoInputError
from lightning_m3ddm.predict.leftovers import owner_tag
from lightning_m3ddm.video.stream import SourceInfo, iter_source_frames, probe_source


@dataclass(frozen=True)
class PaintedFrame:
    """One source frame on the canvas.

    Attributes:
        index: frame number in the source.
        masked: (ch, cw, 3) uint8 context canvas (unknown cells black).
        start: (ch, cw, 3) uint8 Telea-inpainted canvas, None when sampling starts from noise.
        global_canvas: (ch, cw, 3) uint8 when this frame is a global frame, else None.
    """

    index: int
    masked: np.ndarray
    start: np.ndarray | None = None
    global_canvas: np.ndarray | None = None


def paint_frames(info: SourceInfo, painter: CanvasPainter, use_start: bool, global_index: Collection[int],
                 global_mode: str | None) -> Iterator[PaintedFrame]:
    """Stream the source once and draw every frame (see :class:`PaintedFrame`)."""
    wanted = set(int(i) for i in global_index)
    for i, frame in enumerate(iter_source_frames(info)):
        drawn = painter.drawn(frame)
        masked = painter.masked(drawn)
        keep = None
        if i in wanted:
            keep = painter.whole_frame(frame) if global_mode == "resize" else masked
        yield PaintedFrame(i, masked, painter.inpainted(drawn) if use_start else None, keep)


@dataclass(frozen=True)
class CanvasRecipe:
    """What a worker needs to paint a video as the pipeline would (no model, picklable)."""

    canvas_size: tuple[int, int]
    crop_mode: CropMode
    downscale: int
    inpaint_radius: int
    use_start: bool
    global_count: int
    global_mode: str | None

    @classmethod
    def of(cls, pipeline) -> "CanvasRecipe":
        """The settings of an :class:`~lightning_m3ddm.predict.pipeline.OutpaintingPipeline`."""
        return cls(
            canvas_size=tuple(pipeline.generation_canvas),  # larger than the model's when tiled
            crop_mode=pipeline.crop_mode,
            downscale=pipeline.autoencoder.downscale,
            inpaint_radius=pipeline.sampling.inpaint_radius,
            use_start=pipeline.sampling.init == "inpaint",
            global_count=pipeline.global_frames.count,
            global_mode=pipeline.global_frames.mode,
        )

    def painter(self, info: SourceInfo, targets: tuple[Target, ...]) -> CanvasPainter:
        layout = canvas_layout(info.width, info.height, targets, *self.canvas_size, crop_mode=self.crop_mode)
        return CanvasPainter(layout, self.downscale, self.inpaint_radius)


@dataclass
class PreparedCanvases:
    """The painted frames of one video in a private folder, read back once, in order."""

    folder: Path
    num_frames: int
    shape: tuple[int, int, int]
    has_start: bool
    global_canvases: dict[int, np.ndarray] = field(default_factory=dict)

    def frames(self) -> Iterator[PaintedFrame]:
        size = int(np.prod(self.shape))
        with open(self.folder / "masked.u8", "rb") as masked, \
                (open(self.folder / "start.u8", "rb") if self.has_start else open(os.devnull, "rb")) as start:
            for i in range(self.num_frames):
                m = np.frombuffer(masked.read(size), np.uint8).reshape(self.shape)
                s = np.frombuffer(start.read(size), np.uint8).reshape(self.shape) if self.has_start else None
                yield PaintedFrame(i, m, s, self.global_canvases.get(i))

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


@dataclass
class PreparedJob:
    """A batch item: the job, and what a loader worker found and prepared for it.

    Attributes:
        job: the input.
        info: the probed source (None: not probed yet, or it failed).
        canvases: painted frames for the targets the model generates (None: paint inline).
        error: why the video cannot be done (one line), found while preparing.
    """

    job: VideoJob
    info: SourceInfo | None = None
    canvases: PreparedCanvases | None = None
    error: str | None = None

    def close(self) -> None:
        if self.canvases is not None:
            self.canvases.close()
            self.canvases = None


def write_canvases(info: SourceInfo, painter: CanvasPainter, recipe: CanvasRecipe, global_index,
                   work_dir: str | os.PathLike | None, owner_pid: int) -> PreparedCanvases:
    """Paint every frame of ``info`` into a new folder (removed again if anything fails)."""
    folder = Path(tempfile.mkdtemp(prefix=f"m3ddm-prepared-{owner_tag(owner_pid)}-", dir=work_dir))
    cw, ch = painter.canvas_size
    prepared = PreparedCanvases(folder, 0, (ch, cw, 3), recipe.use_start)
    try:
        with open(folder / "masked.u8", "wb") as masked, \
                (open(folder / "start.u8", "wb") if recipe.use_start else open(os.devnull, "wb")) as start:
            for painted in paint_frames(info, painter, recipe.use_start, global_index, recipe.global_mode):
                masked.write(np.ascontiguousarray(painted.masked).data)
                if painted.start is not None:
                    start.write(np.ascontiguousarray(painted.start).data)
                if painted.global_canvas is not None:
                    prepared.global_canvases[painted.index] = painted.global_canvas
                prepared.num_frames += 1
    except BaseException:
        prepared.close()
        raise
    return prepared


def prepare_job(job: VideoJob, recipe: CanvasRecipe, work_dir: str | os.PathLike | None,
                owner_pid: int) -> PreparedJob:
    """Probe and paint ``job`` (in a loader worker); a bad input becomes ``error``, never raises."""
    from lightning_m3ddm.predict.pipeline import global_frame_indices

    if job.error is not None:
        return PreparedJob(job, error=job.error)
    try:
        info = probe_source(job.path)
        generate = tuple(t for t in job.targets if not is_copy_through(info.width, info.height, t))
        if not generate:
            return PreparedJob(job, info)
        try:
            painter = recipe.painter(info, generate)
        except ValueError as err:  # the pipeline reports the same target as bad_target
            raise VideoInputError(info.path, str(err), "bad_target") from None
        index = global_frame_indices(info.num_frames, recipe.global_count)
        return PreparedJob(job, info, write_canvases(info, painter, recipe, index, work_dir, owner_pid))
    except PredictError as err:
        return PreparedJob(job, error=str(err))
    except Exception as err:  # the model side would fail the same way; report it for this video only
        return PreparedJob(job, error=f"{job.path}: {type(err).__name__}: {err}")
