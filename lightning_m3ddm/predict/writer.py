"""OutpaintingWriter: writes ``DIR/<stem>_<ratio>.mp4`` for every prediction, records failures.

For each video it streams the source a second time next to the decoded canvases and
writes every target at once (one :class:`~lightning_m3ddm.video.stream.Mp4Writer`
per target, audio carried over), then deletes the video's latents. A failure (from
the predictor or while writing) is logged as one line naming the file and kept in
:attr:`OutpaintingWriter.failures`; the CLI exits non-zero when there is any. Outputs
of a failed video are removed, never left half-written.

It also runs the process's part of a catalogue job (:mod:`.batch_job`): leftovers of
killed runs removed at setup, a record per finished video (skipped by later runs unless
``overwrite``), a line per video in ``DIR/predict_report.jsonl``, stop signals
(:mod:`.preemption`), and the writes on a background thread (``background``) so that
sampling the next video is not held up by encoding this one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

import lightning as L
from lightning.pytorch.callbacks import BasePredictionWriter

from lightning_m3ddm.geometry import output_filename
from lightning_m3ddm.predict import resume
from lightning_m3ddm.predict.batch_job import BatchJob, new_run_id, settings_of
from lightning_m3ddm.predict.claims import LEASE_TIMEOUT_S
from lightning_m3ddm.predict.composite import OutputMode, make_compositor
from lightning_m3ddm.predict.encode_queue import BackgroundWrites, WriteAborted
from lightning_m3ddm.predict.errors import VIDEO_FAILURES, PredictConfigError, PredictError
from lightning_m3ddm.predict.preemption import Preempted, PreemptionGuard
from lightning_m3ddm.predict.predictor import VideoPrediction
from lightning_m3ddm.video.stream import Mp4Writer, copy_through, iter_source_frames

log = logging.getLogger(__name__)


def check_output_dir(path: str | os.PathLike | None) -> Path:
    """Create ``path`` if needed and make sure files can be written there.

    Raises:
        PredictConfigError: naming the folder and the reason.
    """
    if path is None or str(path) == "":
        raise PredictConfigError("no output folder given: --output_dir DIR")
    folder = Path(path).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise PredictConfigError(f"output folder {folder}: exists and is not a folder") from None
    except OSError as err:
        raise PredictConfigError(f"output folder {folder}: cannot create it ({err.strerror or err})") from None
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".m3ddm-write-test-"):
            pass
    except OSError as err:
        raise PredictConfigError(f"output folder {folder}: not writable ({err.strerror or err})") from None
    return folder


class OutpaintingWriter(BasePredictionWriter):
    """Writes each prediction's videos; linked from the CLI's ``--output_dir``.

    Args:
        output_dir: folder for ``<stem>_<ratio>.mp4`` (created if missing).
        mode: ``native`` (source resolution, source pixels untouched) or ``canvas``
            (the model-resolution crop, as the released script).
        seam: feathered seam width in model-canvas pixels (native mode; 0 = hard edge).
        crf, preset: libx264 quality and speed.
        overwrite: redo videos that a record in ``DIR/.m3ddm/done`` says are finished with
            the same source and settings (default: skip them).
        background: write finished videos on a background thread while the next samples.
        lease_timeout_s: a process on another node whose lease was not renewed for this long
            is taken for dead, and its claimed videos are taken over.
    """

    def __init__(
        self,
        output_dir: str | None = None,
        mode: OutputMode = "native",
        seam: float = 2.0,
        crf: int = 18,
        preset: str = "medium",
        overwrite: bool = False,
        background: bool = True,
        lease_timeout_s: float = LEASE_TIMEOUT_S,
    ):
        super().__init__(write_interval="batch")
        if mode not in ("native", "canvas"):
            raise ValueError(f"mode must be 'native' or 'canvas', got {mode!r}")
        self.output_dir = output_dir
        self.mode = mode
        self.seam = seam
        self.crf = crf
        self.preset = preset
        self.overwrite = overwrite
        self.background = background
        self.lease_timeout_s = lease_timeout_s
        self.written: list[Path] = []
        self.failures: list[str] = []
        self.batch_job: BatchJob | None = None
        self._writes: BackgroundWrites | None = None
        self._guard: PreemptionGuard | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.folder = check_output_dir(self.output_dir)
        if stage != "predict":
            return
        # our loader is iterable (claims decide what comes next), so Lightning has no sampler indices to
        # pass to write_on_batch_end; the writer does not use them
        warnings.filterwarnings("ignore", message="Couldn't infer the batch indices", category=UserWarning)
        run_id = trainer.strategy.broadcast(new_run_id(), src=0)
        writer_settings = dict(mode=self.mode, seam=self.seam, crf=self.crf, preset=self.preset)
        self.batch_job = BatchJob(
            self.folder, run_id, trainer.global_rank, trainer.world_size,
            fingerprint=resume.settings_fingerprint(settings_of(pl_module, writer_settings)),
            overwrite=self.overwrite, work_dir=getattr(pl_module, "hparams", {}).get("work_dir"),
            lease_timeout_s=self.lease_timeout_s,
        )
        self.batch_job.start()

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        launcher = getattr(trainer.strategy, "launcher", None)
        self._guard = PreemptionGuard(forward=launcher.kill if launcher is not None else None).install()
        if self.background:
            self._writes = BackgroundWrites(self._finish, discard=VideoPrediction.close)

    def on_predict_batch_start(self, trainer, pl_module, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        if self.batch_job is not None:
            for item in batch:
                self.batch_job.started[getattr(item, "job", item).stem] = time.monotonic()

    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: Sequence[VideoPrediction],
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        for item in prediction:
            if self._writes is not None:
                self._writes.put(item)
            else:
                self._finish(item)

    def _finish(self, prediction: VideoPrediction) -> None:
        """Write one prediction, then record and report it (finished only once its files are in place)."""
        job = prediction.job
        if self.batch_job is not None and prediction.ok:
            resume.forget(self.folder, job.stem)  # outputs about to change: no record may vouch for them
        failures = len(self.failures)
        paths = self.write(prediction)
        if self.batch_job is None:
            return
        if len(self.failures) > failures:
            self.batch_job.failed(job, self.failures[-1], prediction.info)
        else:
            self.batch_job.done(job, prediction.info, paths)

    def write(self, prediction: VideoPrediction) -> list[Path]:
        """Write every target of one prediction; record and log a failure instead of raising."""
        folder = getattr(self, "folder", None) or check_output_dir(self.output_dir)
        try:
            if prediction.error is not None:
                raise PredictError(prediction.error)
            info = prediction.info
            paths = []
            for target in prediction.copy_targets:
                destination = folder / output_filename(prediction.job.stem, target)
                paths.append(copy_through(info, destination, self.crf, self.preset))
            if prediction.video is not None:
                paths.extend(self._write_outpainted(prediction, folder))
            self.written.extend(paths)
            for path in paths:
                log.info("wrote %s", path)
            return paths
        except Exception as err:
            if isinstance(err, VIDEO_FAILURES):
                message = str(err)
            elif isinstance(err, OSError):  # disk full, permissions: the cause is the message
                message = f"{prediction.job.path}: cannot write the output: {err.strerror or err} ({err.filename or folder})"
            else:  # unexpected: keep the traceback in the log, the one-line summary for the report
                message = f"{prediction.job.path}: {type(err).__name__}: {err}"
                log.exception("%s: writing failed", prediction.job.path)
            log.error("FAILED %s", message)
            self.failures.append(message)
            return []
        finally:
            prediction.close()

    def _write_outpainted(self, prediction: VideoPrediction, folder: Path) -> list[Path]:
        info, video = prediction.info, prediction.video
        compositors = [
            make_compositor(self.mode, video.painter, info.width, info.height, target, self.seam)
            for target in prediction.outpaint_targets
        ]
        audio = info.path if info.audio_codec else None
        with contextlib.ExitStack() as stack:
            writers = [
                stack.enter_context(
                    Mp4Writer(
                        folder / output_filename(prediction.job.stem, target),
                        comp.width,
                        comp.height,
                        info.rate,
                        audio,
                        self.crf,
                        self.preset,
                    )
                )
                for target, comp in zip(prediction.outpaint_targets, compositors)
            ]
            for source, canvas in zip(iter_source_frames(info), video.canvas_frames(), strict=True):
                if self._writes is not None and self._writes.aborting.is_set():
                    raise WriteAborted()  # the writers' exit removes their partial files
                for writer, compose in zip(writers, compositors):
                    writer.write(compose(source, canvas))
        return [w.path for w in writers]

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._writes is not None:
            self._writes.drain()
            self._writes = None
        if self.batch_job is not None:
            self.batch_job.end()
            trainer.strategy.barrier("m3ddm_predict_end")
            if trainer.is_global_zero:
                self.batch_job.report.summary(world_size=trainer.world_size, complete=True)
        self._restore_signals()
        if self.failures:
            log.error(
                "%d file(s) written, %d video(s) failed:\n  %s",
                len(self.written),
                len(self.failures),
                "\n  ".join(self.failures),
            )
        else:
            log.info("%d file(s) written to %s", len(self.written), getattr(self, "folder", self.output_dir))

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        """Stopped (a signal, or an error): drop the write in progress, release claims, end the report."""
        if self._writes is not None:
            self._writes.abort()
            self._writes = None
        if self.batch_job is not None:
            stopped_by = str(exception) if isinstance(exception, Preempted) else type(exception).__name__
            self.batch_job.end(stopped_by=stopped_by)
            if trainer.is_global_zero:  # no barrier: the other ranks may be gone already
                self.batch_job.report.summary(world_size=trainer.world_size, complete=False)
        self._restore_signals()

    def _restore_signals(self) -> None:
        if self._guard is not None:
            self._guard.restore()
            self._guard = None
