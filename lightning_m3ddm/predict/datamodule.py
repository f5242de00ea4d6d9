"""The videos of a predict run: inputs (paths, globs, folders, list files) -> one job per video.

Each batch item is a :class:`VideoJob` (path, output stem, targets), or, in a predict
run with the :class:`~lightning_m3ddm.predict.writer.OutpaintingWriter`, a job a loader
worker has already probed and painted (:mod:`.preparation`): the loader holds no
frames, only paths. With several processes (GPUs, nodes) each takes the next video no
one has claimed, longest first (``assignment: balanced``), or a fixed share of the list
(``static``, as Lightning's distributed sampler); ``num_jobs``/``job_index`` split the
list between SLURM array tasks first (:mod:`.assignment`).

Inputs: paths, globs, folders and list files, expanded as evaluate expands its own
(:mod:`lightning_m3ddm.video.inputs`). An input that names no video (a missing path, a
glob matching nothing, an empty folder) still becomes a job, which fails with a clear
message while the other videos go on. A list-file line may give that video's own
targets after a TAB (``clip.mp4<TAB>9:16,1:1``).

Targets: ``target_ratio`` ("9:16", or several "9:16,1:1") and/or explicit ``padding``
("LEFT,RIGHT,TOP,BOTTOM" pixels) for every video without its own.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import lightning as L
from torch.utils.data import DataLoader

from lightning_m3ddm.geometry import Target, parse_padding, parse_ratios
from lightning_m3ddm.predict.assignment import array_share
from lightning_m3ddm.predict.errors import PredictConfigError
from lightning_m3ddm.video.inputs import expand_inputs
from lightning_m3ddm.video.names import unique_name

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoJob:
    """One input video and what to make of it.

    Attributes:
        path: the input file as given (resolved against a list file's folder).
        stem: output name stem, unique within the run (``clip`` -> ``clip_9-16.mp4``).
        targets: ratios / paddings to write, in order.
        error: set when the job is known to fail before decoding (e.g. a bad ratio in a
            list file, a glob that matched nothing): the message to report.
    """

    path: str
    stem: str
    targets: tuple[Target, ...] = ()
    error: str | None = None


def parse_targets(target_ratio: str | Sequence[str] | None, padding: str | None) -> tuple[Target, ...]:
    """Targets from ``--target_ratio`` and ``--padding``.

    Raises:
        PredictConfigError: neither given, or one is unparsable (the message names it).
    """
    targets: list[Target] = []
    try:
        if target_ratio:
            targets.extend(parse_ratios(target_ratio))
        if padding:
            targets.append(parse_padding(padding))
    except ValueError as err:
        raise PredictConfigError(str(err)) from None
    if not targets:
        raise PredictConfigError("no target: give --target_ratio (e.g. 9:16 or 9:16,1:1) or --padding L,R,T,B")
    return tuple(targets)


def _own_targets(spec: str) -> tuple[Target, ...]:
    """A list file's per-video targets: ratios ("9:16,1:1") or one padding ("0,0,8,8")."""
    try:
        return parse_targets(spec, None)
    except PredictConfigError as err:
        try:
            return (parse_padding(spec),)
        except ValueError:
            raise err from None


def resolve_jobs(
    inputs: str | Sequence[str], target_ratio: str | Sequence[str] | None = None, padding: str | None = None
) -> list[VideoJob]:
    """Jobs for every input video, in input order, with unique output stems.

    Raises:
        PredictConfigError: the run-wide targets are missing or unparsable.
    """
    default_targets: tuple[Target, ...] | None = None
    default_error: PredictConfigError | None = None
    try:
        default_targets = parse_targets(target_ratio, padding)
    except PredictConfigError as err:
        default_error = err
    jobs: list[VideoJob] = []
    stems: dict[str, int] = {}
    for item in expand_inputs(inputs):
        path, spec = str(item.path), item.spec
        error = None if item.error is None else f"{path}: {item.error}"
        stem = unique_name(item.name, stems)
        if stem != item.name:
            log.warning("%s: another input is also named %r; writing it as %r", path, item.name, stem)
        if spec is None and default_error is not None:
            # checked before the input's own error: missing targets stop the run before any work
            raise default_error
        targets: tuple[Target, ...] = ()
        if error is None and spec is not None:
            try:
                targets = _own_targets(spec)
            except PredictConfigError as err:
                error = f"{path}: {err}"
        elif error is None:
            targets = default_targets
        jobs.append(VideoJob(path, stem, targets, error))
    if not jobs:
        raise PredictConfigError("no input video given (--input PATHS)")
    return jobs


class VideoPredictDataModule(L.LightningDataModule):
    """Input videos for ``predict``; linked from the CLI's ``--input`` and ``--target_ratio``.

    Args:
        inputs: paths, globs, folders or list files (see the module docstring).
        target_ratio: e.g. "9:16" or "9:16,1:1".
        padding: explicit border "LEFT,RIGHT,TOP,BOTTOM" in source pixels.
        batch_size: videos per predict step (each is outpainted on its own).
        num_workers: loader processes that decode and paint the next videos while the model
            samples (0: painted in the sampling process, nothing ahead).
        prefetch_factor: videos each worker prepares ahead; at most ``num_workers x
            prefetch_factor`` prepared videos wait (on disk, in the work folder).
        assignment: ``balanced`` (claim the next free video, longest first) or ``static``
            (every ``world_size``-th video, in input order).
        num_jobs, job_index: this SLURM array task's share of the inputs (every
            ``num_jobs``-th video, from ``job_index``).
    """

    def __init__(
        self,
        inputs: str | list[str] | None = None,
        target_ratio: str | None = None,
        padding: str | None = None,
        batch_size: int = 1,
        num_workers: int = 2,
        prefetch_factor: int = 1,
        assignment: Literal["balanced", "static"] = "balanced",
        num_jobs: int = 1,
        job_index: int = 0,
    ):
        super().__init__()
        self.inputs = inputs
        self.target_ratio = target_ratio
        self.padding = padding
        self.batch_size = batch_size
        if num_workers < 0 or prefetch_factor < 1:
            raise PredictConfigError(f"num_workers must be >= 0 and prefetch_factor >= 1, got {num_workers}, {prefetch_factor}")
        if assignment not in ("balanced", "static"):
            raise PredictConfigError(f"assignment must be 'balanced' or 'static', got {assignment!r}")
        if num_jobs < 1 or not 0 <= job_index < num_jobs:
            raise PredictConfigError(f"--job_index must be in [0, --num_jobs), got {job_index} of {num_jobs}")
        self.num_workers = num_workers
        self.prefetch_factor = prefetch_factor
        self.assignment = assignment
        self.num_jobs = num_jobs
        self.job_index = job_index
        if target_ratio or padding:
            parse_targets(target_ratio, padding)  # a bad ratio fails now, before any model work
        self.jobs: list[VideoJob] | None = None

    def setup(self, stage: str) -> None:
        if self.inputs is None:
            raise PredictConfigError("no input video given (--input PATHS)")
        self.jobs = resolve_jobs(self.inputs, self.target_ratio, self.padding)

    def transfer_batch_to_device(self, batch: list[VideoJob], device, dataloader_idx: int) -> list[VideoJob]:
        return batch  # paths and targets only: frames are decoded by the predictor, on the spot

    def predict_dataloader(self) -> DataLoader:
        if self.jobs is None:
            self.setup("predict")
        from lightning_m3ddm.predict.batch_job import job_stream_loader  # imports the model side

        jobs = array_share(self.jobs, self.num_jobs, self.job_index)
        trainer = self.trainer
        batch_job = next((cb.batch_job for cb in getattr(trainer, "callbacks", []) if getattr(cb, "batch_job", None)), None)
        if batch_job is None:
            # no writer to claim and record (a plain Trainer.predict): a map-style list of jobs
            return DataLoader(jobs, batch_size=self.batch_size, shuffle=False, collate_fn=list)
        return job_stream_loader(jobs, batch_job, trainer.lightning_module, self.batch_size, self.num_workers,
                                 self.prefetch_factor, self.assignment)
