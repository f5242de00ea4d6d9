"""One process's part of a predict run over a catalogue: which videos it takes, what it records.

:class:`BatchJob` is created by the :class:`~lightning_m3ddm.predict.writer.OutpaintingWriter`
at setup (it knows the output folder, the run id shared by all ranks and the settings)
and drives, for this process:

* leftovers of killed runs, removed at start (:mod:`.leftovers`);
* the videos it takes (:class:`JobStream`, the predict dataset): by claims (``balanced``,
  :mod:`.claims`) or a fixed share (``static``, :mod:`.assignment`), skipping those a
  matching record says are finished (:mod:`.resume`) unless ``overwrite``;
* the records and report lines of finished, skipped and failed videos (:mod:`.report`);
* the release of its claims and lease at the end, preempted or not.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import signal
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from lightning_m3ddm.geometry import output_filename, target_padding
from lightning_m3ddm.predict import resume
from lightning_m3ddm.predict.assignment import (
    Assignment,
    claim_order,
    length_estimates,
    longest_first,
    static_share,
)
from lightning_m3ddm.predict.claims import LEASE_TIMEOUT_S, ClaimBook, Owner
from lightning_m3ddm.predict.datamodule import VideoJob
from lightning_m3ddm.predict.leftovers import owner_tag, remove_leftovers
from lightning_m3ddm.predict.preemption import critical
from lightning_m3ddm.predict.preparation import CanvasRecipe, PreparedJob, prepare_job
from lightning_m3ddm.predict.report import RunReport
from lightning_m3ddm.video.stream import SourceInfo

log = logging.getLogger(__name__)


def new_run_id() -> str:
    """Sortable and unique: ``20261202T070000Z-a1b2c3``."""
    return f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{secrets.token_hex(3)}"


def target_labels(job: VideoJob) -> list[str]:
    return [t.label for t in job.targets]


class BatchJob:
    """Claims, resume records and report lines of one process (rank) of a run.

    Args:
        output_dir: the output folder (shared by every rank and node).
        run_id: the same on every rank of the run.
        rank, world_size: this process among the run's.
        fingerprint: :func:`~lightning_m3ddm.predict.resume.settings_fingerprint` of the settings.
        overwrite: redo videos a record says are finished.
        work_dir: where latents and prepared canvases go (None: the system temp folder).
        lease_timeout_s: a process whose lease is older is taken for dead (another node).
    """

    def __init__(self, output_dir: str | os.PathLike, run_id: str, rank: int = 0, world_size: int = 1,
                 fingerprint: str = "", overwrite: bool = False, work_dir: str | os.PathLike | None = None,
                 lease_timeout_s: float = LEASE_TIMEOUT_S):
        self.output_dir = Path(output_dir)
        self.run_id = run_id
        self.rank = rank
        self.world_size = world_size
        self.fingerprint = fingerprint
        self.overwrite = overwrite
        self.work_dir = work_dir
        self.owner = Owner.current(run_id, rank)
        self.book = ClaimBook(output_dir, self.owner, lease_timeout_s)
        self.report = RunReport(output_dir, run_id, rank)
        self.started: dict[str, float] = {}
        self._t0 = time.monotonic()

    def start(self) -> None:
        """Take the lease and remove what dead runs left behind."""
        self._t0 = time.monotonic()
        self.book.start()
        remove_leftovers(self.output_dir, self.work_dir, self.book)

    # -- taking videos (main process or loader worker) -------------------------------------

    def take(self, job: VideoJob, claim: bool) -> bool:
        """Whether this process does ``job`` now; a finished one is reported as skipped."""
        with critical():  # a claim is taken and reported whole, or not at all
            if claim and not self.book.claim(job.stem):
                return False  # another rank or run has it
            if job.error is None and not self.overwrite:
                record = resume.finished_record(self.output_dir, job.stem, job.path, self.fingerprint,
                                                target_labels(job))
                if record is not None:
                    self.report.video("skipped", job.path, job.stem, reason="finished by an earlier run",
                                      frames=record.get("frames"), outputs=record.get("outputs", []))
                    return False
        return True

    # -- outcomes (writer) ------------------------------------------------------------------

    def done(self, job: VideoJob, info: SourceInfo, paths: Sequence[Path]) -> None:
        """Record ``job`` as finished (after its outputs are in place) and report it."""
        seconds = time.monotonic() - self.started.pop(job.stem, time.monotonic())
        resume.write_record(self.output_dir, job.stem, job.path, self.fingerprint, target_labels(job),
                            info.num_frames, paths, self.run_id)
        padding = [target_padding(info.width, info.height, t) for t in job.targets]
        self.report.video("done", job.path, job.stem, frames=info.num_frames, seconds=seconds,
                          outputs=[output_filename(job.stem, t) for t in job.targets],
                          padding=[[p.left, p.right, p.top, p.bottom] for p in padding])

    def failed(self, job: VideoJob, message: str, info: SourceInfo | None = None) -> None:
        seconds = time.monotonic() - self.started.pop(job.stem, time.monotonic())
        self.report.video("failed", job.path, job.stem, reason=message, seconds=seconds,
                          frames=info.num_frames if info is not None else None)

    def end(self, stopped_by: str | None = None) -> None:
        """Release claims and lease; the last report line of this process."""
        self.book.stop()
        self.report.append("end", stopped_by=stopped_by, elapsed_s=round(time.monotonic() - self._t0, 3))

    def remove_own_work_folders(self) -> list[Path]:
        """Prepared canvases and latents of this process (after its loader workers stopped)."""
        work = Path(self.work_dir) if self.work_dir is not None else Path(tempfile.gettempdir())
        tag = owner_tag(self.owner.pid)
        gone = [p for p in work.glob(f"m3ddm-*-{tag}-*") if p.is_dir()]
        for path in gone:
            shutil.rmtree(path, ignore_errors=True)
        return gone


def settings_of(pl_module, writer_settings: Mapping[str, Any]) -> dict[str, Any]:
    """The settings that shape a video's outputs: the model's, its weights file's, the writer's."""
    settings = {f"model.{k}": v for k, v in dict(getattr(pl_module, "hparams", {})).items()
                if k not in ("progress", "work_dir")}
    autoencoder = getattr(pl_module, "autoencoder", None)
    settings["model.autoencoder"] = repr(autoencoder)
    weights = settings.get("model.weights")
    path = getattr(weights, "path", None)
    if path is not None:
        settings["model.weights_file"] = resume.file_identity(path)
    settings.update({f"writer.{k}": v for k, v in writer_settings.items()})
    return settings


class JobStream(IterableDataset):
    """The predict dataset: the videos this process takes, prepared ahead in loader workers.

    Yields :class:`~lightning_m3ddm.predict.preparation.PreparedJob`; in a worker (with a
    ``recipe``) its canvases are painted already, in the main process they are painted
    by the pipeline when the video's turn comes.

    Args:
        jobs: the run's videos (longest first for ``balanced``).
        depth: videos this process holds at once (sampling, fetched and prepared ahead).
        lengths: of ``jobs``, to deal the longest between ranks (:func:`.assignment.claim_order`).
        batch_job: claims, records, report of this process.
        assignment: ``balanced`` (claims) or ``static`` (rank / worker shares).
        recipe: how to paint (None: never prepare ahead).
    """

    def __init__(self, jobs: Sequence[VideoJob], batch_job: BatchJob, assignment: Assignment = "balanced",
                 recipe: CanvasRecipe | None = None, depth: int = 1, lengths: Sequence[float] | None = None):
        super().__init__()
        if assignment not in ("balanced", "static"):
            raise ValueError(f"assignment must be 'balanced' or 'static', got {assignment!r}")
        self.jobs = list(jobs)
        self.batch_job = batch_job
        self.assignment = assignment
        self.recipe = recipe
        self.depth = depth
        self.lengths = list(lengths) if lengths is not None else [0.0] * len(self.jobs)

    def __iter__(self):
        worker = get_worker_info()
        wid, workers = (worker.id, worker.num_workers) if worker is not None else (0, 1)
        job = self.batch_job
        if self.assignment == "static":
            mine = static_share(self.jobs, job.rank, job.world_size, wid, workers)
        else:
            mine = claim_order(self.jobs, self.lengths, job.rank, job.world_size, self.depth)
        for video in mine:
            if not job.take(video, claim=self.assignment == "balanced"):
                continue
            if worker is not None and self.recipe is not None:
                yield prepare_job(video, self.recipe, job.work_dir, job.owner.pid)
            else:
                yield PreparedJob(video)


def job_stream_loader(jobs: Sequence[VideoJob], batch_job: BatchJob, model, batch_size: int = 1,
                      num_workers: int = 2, prefetch_factor: int = 1,
                      assignment: Assignment = "balanced") -> DataLoader:
    """The predict loader of a run with a writer: claimed (or shared) videos, prepared ahead by workers."""
    lengths = {job.stem: 0.0 for job in jobs}
    if assignment == "balanced":
        lengths = dict(zip(lengths, length_estimates([job.path for job in jobs])))
        jobs = longest_first(jobs, lambda job: lengths[job.stem])
    pipeline = getattr(model, "pipeline", None)
    recipe = CanvasRecipe.of(pipeline) if pipeline is not None and num_workers > 0 else None
    extra = {}
    if num_workers > 0:
        extra = dict(prefetch_factor=prefetch_factor, worker_init_fn=start_loader_worker)
        # OpenCV's thread pool does not survive fork (a worker forked while its threads exist hangs in
        # its first OpenCV call); one thread here leaves none behind, and the painting runs in the workers
        cv2.setNumThreads(1)
    # in_order=False: a worker done with a short video hands it over while another still paints a long one
    # videos a rank holds at once: the one sampling, the batch Lightning's loop fetches ahead (to know
    # the last batch), and those the workers prepare ahead
    depth = batch_size * (2 + num_workers * prefetch_factor)
    stream = JobStream(jobs, batch_job, assignment, recipe, depth, [lengths[job.stem] for job in jobs])
    return DataLoader(stream, batch_size=batch_size,
                      num_workers=num_workers, collate_fn=list, in_order=False, **extra)


def start_loader_worker(worker_id: int) -> None:
    """A loader worker's set-up: dies with its parent, leaves stop signals to the main process."""
    try:  # Linux: a worker whose main process is killed (kill -9) is killed too, not orphaned
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the main process decides
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _exit_cleanly)  # how the loader stops a busy worker: clean up first


def _exit_cleanly(signum, frame) -> None:
    raise SystemExit(128 + signum)
