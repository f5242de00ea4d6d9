"""Streaming LightningDataModule over WebDataset video shards.

Shards are tar files with one ``.mp4`` (or other video extension) per sample,
optionally a ``.json`` (our ``data_prep`` scripts, or video2dataset) and a
``.txt`` caption (video2dataset). Every sample becomes a clip of F frames, its
g global frames and the paper's masks (see :mod:`.augmentation`).

Batch (dict):
    video          (B, F, 3, H, W) float32 in [-1, 1]
    masked_video   (B, F, 3, H, W) masked pixels = -1, guide frames whole
    mask           (B, F, 1, H, W) 1 = to generate
    global_frames  (B, g, 3, H, W) masked like the clip's context frames
    fps            (B,) long, effective sampling rate of each clip
    key, caption   list[str] of length B
    num_skipped    int, samples this worker skipped since its previous batch
                   (removed by :meth:`M3DDMDataModule.on_before_batch_transfer`)
    stream_position  training batches only: (worker role, samples read, batches made) of
                   the worker that made it, for exact resume (removed likewise; see
                   :mod:`.stream_progress`)

Distribution: shards are split by node (rank) and by dataloader worker, or,
with ``resampled=True``, every worker draws shards with replacement, which keeps
all ranks busy for any number of nodes (then ``samples_per_epoch`` sets the
epoch length). Corrupt shards or samples are skipped, counted and logged,
never fatal; a worker that fails ``max_consecutive_failures`` samples in a row
stops with the last error (that is a bug or a wrong dataset, not a bad file), and
a training epoch that gives no batch at all stops training (:class:`NoUsableDataError`).

Exact resume: shard order, shuffling and each sample's random draws are seeded by
(seed, epoch, ...), never by how much was read before, and the datamodule's
``state_dict`` (saved in Lightning checkpoints) records how far every worker of every
rank got; a run resumed from it reads the batches the uninterrupted run would have read.
"""

from __future__ import annotations

import glob
import json
import logging
import math
import os
import random
from collections.abc import Callable, Iterator, Sequence
from urllib.parse import urlparse

import lightning as L
import torch
import webdataset as wds
from braceexpand import braceexpand
from torch.utils.data import DataLoader
from webdataset.tariterators import group_by_keys, tar_file_expander

from lightning_m3ddm.data.augmentation import AugmentationConfig, augment
from lightning_m3ddm.data.clips import ClipConfig, load_clip_example
from lightning_m3ddm.data.stream_progress import EpochPlan, StreamProgress, continuation_plan
from lightning_m3ddm.seeding import stable_seed
from lightning_m3ddm.video.decode import VIDEO_EXTENSIONS

log = logging.getLogger(__name__)

ShardSpec = str | Sequence[str]
_VIDEO_KEYS = tuple(ext.lstrip(".") for ext in VIDEO_EXTENSIONS)


def _is_remote(url: str) -> bool:
    if url.startswith("pipe:"):
        return True
    scheme = urlparse(url).scheme
    return len(scheme) > 1 and scheme != "file"


def resolve_shards(spec: ShardSpec | None, name: str = "shards") -> list[str]:
    """Expand a shard spec into a list of URLs.

    ``spec`` is a string or a list of strings; each may hold several specs joined
    by ``::``, brace ranges (``data-{000000..000099}.tar``) and, for local paths,
    glob patterns. Remote URLs (``pipe:...``, ``s3://...``, ``https://...``) are
    brace-expanded only.

    Raises:
        ValueError: no spec given.
        FileNotFoundError: a local pattern matches no file (names the pattern).
    """
    if spec is None or (not isinstance(spec, str) and len(spec) == 0) or (isinstance(spec, str) and not spec.strip()):
        raise ValueError(f"{name}: no shards given")
    patterns = [spec] if isinstance(spec, str) else list(spec)
    urls: list[str] = []
    for pattern in patterns:
        for part in str(pattern).split("::"):
            found: list[str] = []
            expanded = list(braceexpand(part.strip()))
            for item in expanded:
                if _is_remote(item):
                    found.append(item)
                    continue
                if item.startswith("file://"):
                    item = urlparse(item).path
                item = os.path.expanduser(item)
                if glob.has_magic(item):
                    found.extend(sorted(p for p in glob.glob(item) if os.path.isfile(p)))
                elif os.path.isfile(item):
                    found.append(item)
            if not found:
                raise FileNotFoundError(f"{name}: {part!r} matches no shard file")
            if len(found) < len(expanded) and not any(glob.has_magic(i) for i in expanded):
                log.warning("%s: %d of %d files of %r are missing; using the others", name, len(expanded) - len(found), len(expanded), part)
            urls.extend(found)
    return urls


def _open_url(url: str):
    scheme = urlparse(url).scheme
    if url.startswith("pipe:") or scheme in ("", "file") or scheme in wds.gopen.gopen_schemes or len(scheme) <= 1:
        return wds.gopen(url, "rb")
    import fsspec  # object stores (s3://, gs://, ...) through fsspec

    return fsspec.open(url, "rb").open()


class NoUsableDataError(RuntimeError):
    """A training epoch gave no batch: every sample failed to load, or the shards hold too few."""


def _text(value) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, (bytes, bytearray)) else str(value)


class ClipStream(torch.utils.data.IterableDataset):
    """Shards -> samples -> decoded, masked examples -> batches (one pipeline per worker).

    Args:
        urls: shard URLs (see :func:`resolve_shards`).
        train: shuffle shards and samples, draw fresh augmentations each epoch;
            otherwise in order with augmentations seeded by each sample's key.
        batches_per_worker: stop each worker's epoch after this many batches
            (required with ``resampled``); None = one pass over the shards.
        num_workers: DataLoader workers that will read this stream (0: the main process);
            sizes the epoch plan shared with them.
    """

    def __init__(
        self,
        urls: list[str],
        clip: ClipConfig,
        augmentation: AugmentationConfig,
        batch_size: int,
        train: bool,
        resampled: bool = False,
        shuffle_buffer: int = 1000,
        batches_per_worker: int | None = None,
        seed: int = 0,
        max_consecutive_failures: int = 100,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if resampled and batches_per_worker is None:
            raise ValueError("resampled shards need an epoch length (samples_per_epoch)")
        self.urls = list(urls)
        self.clip = clip
        self.augmentation = augmentation
        self.batch_size = batch_size
        self.train = train
        self.resampled = resampled
        self.shuffle_buffer = shuffle_buffer
        self.batches_per_worker = batches_per_worker
        self.seed = seed
        self.max_consecutive_failures = max_consecutive_failures
        self.num_streams = max(1, num_workers)
        # The epoch plan lives in shared memory: persistent workers keep their copy of this
        # object across epochs and would otherwise never see a new epoch or a resume.
        self._plan = torch.zeros(2 + 2 * self.num_streams, dtype=torch.long).share_memory_()
        self.skipped = 0

    # -- the epoch plan (written in the main process, read in the workers) -----------------
    def set_plan(self, plan: EpochPlan) -> None:
        n = self.num_streams
        self._plan[0], self._plan[1] = plan.epoch, plan.first_worker
        self._plan[2 : 2 + n] = torch.tensor([plan.samples_to_skip(r) for r in range(n)])
        self._plan[2 + n :] = torch.tensor([plan.batches_done(r) for r in range(n)])

    def plan(self) -> EpochPlan:
        n = self.num_streams
        values = self._plan.tolist()
        return EpochPlan(values[0], values[1], tuple(values[2 : 2 + n]), tuple(values[2 + n :]))

    def rank_shards(self, epoch: int, rank: int, world_size: int) -> list[str]:
        """The shards rank ``rank`` reads in ``epoch`` (all of them when resampled, and for validation).

        Validation is not split by rank: sharded (and DDP) collectives need every rank to run
        the same number of batches, which a split of a few validation shards over many ranks
        cannot promise (10 shards for the paper's 24 ranks would leave 14 ranks waiting).
        Every rank scores the same clips, so ``val/loss`` does not depend on the rank count.
        """
        urls = list(self.urls)
        if not self.train:
            return urls
        random.Random(stable_seed(self.seed, epoch)).shuffle(urls)  # same order on every rank, then split
        return urls if self.resampled else urls[rank::world_size]

    # -- stages (generators over the previous stage, run inside each worker) --------------
    def _shards(self, epoch: int, rank: int, world_size: int, role: int, num_workers: int) -> Iterator[dict]:
        if self.resampled:
            # Each worker draws its own shards: no split needed, every rank stays busy.
            rng = random.Random(stable_seed(self.seed, epoch, rank, role, "resample"))
            while True:
                yield dict(url=rng.choice(self.urls))
        # A worker left without shards (fewer shards than ranks x workers) yields nothing.
        for url in self.rank_shards(epoch, rank, world_size)[role::num_workers]:
            yield dict(url=url)

    def _samples(self, shards: Iterator[dict]) -> Iterator[dict]:
        for shard in shards:
            url = shard["url"]
            errors: list[Exception] = []

            def damaged(exn: Exception, url: str = url, errors: list = errors) -> bool:
                # One count per damaged shard: tar errors surface at several levels of the reader.
                if not errors:
                    self.skipped += 1
                    log.warning("skipping the rest of damaged shard %s: %s", url, exn)
                errors.append(exn)
                return True

            try:
                stream = _open_url(url)
            except Exception as exn:  # a missing or unreachable shard is skipped, not fatal
                damaged(exn)
                continue
            # Grouped per shard: a sample never merges with a same-key sample of the next shard.
            files = tar_file_expander([dict(url=url, stream=stream)], handler=damaged)
            yield from group_by_keys(files, handler=damaged)

    def _sample_seed(self, sample: dict, epoch: int) -> int:
        # Per sample, not per worker: a resumed worker skips samples without decoding them,
        # and the draws of the samples after them stay those of the uninterrupted run.
        key = sample.get("__key__", "?")
        if not self.train:
            return stable_seed(self.seed, key)
        return stable_seed(self.seed, epoch, sample.get("__url__", ""), key)

    def _example(self, sample: dict, epoch: int = 0) -> dict:
        key = sample.get("__key__", "?")
        video_key = next((k for k in _VIDEO_KEYS if k in sample), None)
        if video_key is None:
            raise ValueError(f"sample {key!r} holds no video (keys: {sorted(k for k in sample if not k.startswith('__'))})")
        meta = {}
        if "json" in sample:
            try:
                meta = json.loads(_text(sample["json"]))
            except json.JSONDecodeError:
                meta = {}
        caption = meta.get("caption") if isinstance(meta, dict) else None
        if not caption and "txt" in sample:
            caption = _text(sample["txt"]).strip()
        fallback_fps = meta.get("fps") if isinstance(meta, dict) and isinstance(meta.get("fps"), (int, float)) else None
        generator = torch.Generator().manual_seed(self._sample_seed(sample, epoch))
        example = load_clip_example(sample[video_key], generator, self.clip, fallback_fps=fallback_fps)
        masked = augment(example.video, generator, self.augmentation, global_frames=example.global_frames)
        return dict(
            video=example.video,
            masked_video=masked.masked_video,
            mask=masked.mask,
            global_frames=masked.global_frames,
            fps=example.fps,
            key=str(key),
            caption=caption or "",
        )

    def _examples(self, samples: Iterator[dict], epoch: int, skip: int = 0) -> Iterator[tuple[dict, int]]:
        """(example, samples read so far) for every sample that loads, after the first ``skip``
        samples, which are read but not decoded."""
        failures = 0
        for read, sample in enumerate(samples, start=1):
            if read <= skip:
                continue
            try:
                example = self._example(sample, epoch)
            except Exception as exn:  # corrupt sample: count, warn, go on
                failures += 1
                self.skipped += 1
                log.warning("skipping sample %r from %s: %s", sample.get("__key__"), sample.get("__url__"), exn)
                if failures >= self.max_consecutive_failures:
                    raise RuntimeError(
                        f"{failures} consecutive samples failed to load (last: {sample.get('__key__')!r} "
                        f"from {sample.get('__url__')}); last error: {exn!r}"
                    ) from exn
                continue
            failures = 0
            yield example, read

    def _batches(self, examples: Iterator[tuple[dict, int]], role: int = 0, made: int = 0) -> Iterator[dict]:
        limit = self.batches_per_worker
        if limit is not None and made >= limit:
            return
        reported = self.skipped
        buffer: list[dict] = []
        for example, read in examples:
            buffer.append(example)
            if len(buffer) == self.batch_size:
                batch = collate_examples(buffer, self.skipped - reported)
                made += 1
                if self.train:
                    batch["stream_position"] = (role, read, made)
                yield batch
                reported, buffer = self.skipped, []
                if limit is not None and made >= limit:
                    return
        if buffer and not self.train:
            yield collate_examples(buffer, self.skipped - reported)

    def __iter__(self) -> Iterator[dict]:
        rank, world_size, worker, num_workers = wds.utils.pytorch_worker_info()
        if self.train and num_workers != self.num_streams:
            raise RuntimeError(
                f"this training stream was built for {self.num_streams} reader(s) but is read by {num_workers}: "
                "pass the DataLoader's num_workers to ClipStream"
            )
        plan = self.plan() if self.train else EpochPlan(0)
        role = plan.role(worker, num_workers)
        samples = self._samples(self._shards(plan.epoch, rank, world_size, role, num_workers))
        if self.train and self.shuffle_buffer > 1:
            rng = random.Random(stable_seed(self.seed, plan.epoch, rank, role, "shuffle"))
            samples = wds.shuffle(self.shuffle_buffer, initial=min(100, self.shuffle_buffer), rng=rng)(samples)
        examples = self._examples(samples, plan.epoch, skip=plan.samples_to_skip(role))
        return self._batches(examples, role, made=plan.batches_done(role))

    def empty_epoch_message(self, epoch: int) -> str:
        """Why training stops when an epoch of this stream gave no batch (see :class:`NoUsableDataError`)."""
        rank, world_size, _, _ = wds.utils.pytorch_worker_info()
        shards = self.rank_shards(epoch, rank, world_size)
        names = ", ".join(shards[:5]) + (f" and {len(shards) - 5} more" if len(shards) > 5 else "")
        where = f" on rank {rank} of {world_size}" if world_size > 1 else ""
        return (
            f"no usable training data{where}: epoch {epoch} gave no batch of {self.batch_size} clip(s) from "
            f"{len(shards)} shard(s): {names}. Every sample failed to load (see the warnings above), "
            "or the shards hold fewer clips than one batch per data worker."
        )


def collate_examples(examples: list[dict], num_skipped: int = 0) -> dict:
    """Stack examples into the batch layout documented in the module docstring."""
    return dict(
        video=torch.stack([e["video"] for e in examples]),
        masked_video=torch.stack([e["masked_video"] for e in examples]),
        mask=torch.stack([e["mask"] for e in examples]),
        global_frames=torch.stack([e["global_frames"] for e in examples]),
        fps=torch.tensor([e["fps"] for e in examples], dtype=torch.long),
        key=[e["key"] for e in examples],
        caption=[e["caption"] for e in examples],
        num_skipped=int(num_skipped),
    )


class TrainStreamLoader(DataLoader):
    """DataLoader of a training :class:`ClipStream`: hands each epoch's plan to the stream before
    its workers start, and stops training on an epoch that gives no batch at all.

    ``plan_epoch`` (set by :class:`M3DDMDataModule`) returns the plan of the epoch about to
    start; without it, epochs are counted from 0 and always start from their beginning.
    """

    plan_epoch: Callable[[], EpochPlan] | None = None
    _epochs_started = 0

    def __iter__(self):
        if self.plan_epoch is not None:
            plan = self.plan_epoch()
        else:
            plan, self._epochs_started = EpochPlan(self._epochs_started), self._epochs_started + 1
        self.dataset.set_plan(plan)
        delivered = 0
        for batch in super().__iter__():
            delivered += 1
            yield batch
        if delivered == 0 and not plan.resumed:
            # without this, an all-corrupt dataset cycles through empty epochs forever
            raise NoUsableDataError(self.dataset.empty_epoch_message(plan.epoch))


class M3DDMDataModule(L.LightningDataModule):
    """WebDataset video shards -> M3DDM training batches (see module docstring for the batch layout).

    Args:
        train_shards / val_shards: shard spec(s): brace patterns, globs, lists, ``::``-joined,
            ``pipe:`` or object-store URLs.
        batch_size: clips per batch (per device).
        num_workers: dataloader worker processes per device.
        resolution: output (H, W), or one int for square frames (paper: 256).
        num_frames: F, frames per clip (paper: 16).
        num_global_frames: g, frames spread over the whole video (paper: 16).
        min_fps / max_fps: range of the uniformly drawn sampling rate (paper 3.2: 1..30).
        shuffle_buffer: samples held for shuffling in each worker.
        resampled: draw shards with replacement (multi-node training); needs ``samples_per_epoch``.
        samples_per_epoch: epoch length in clips over all devices; None = one pass over the shards.
        augmentation: mask and guide-frame probabilities (paper defaults).
        short_video: "pad" (repeat the last frame) or "loop" for videos shorter than F frames.
        random_crop: random instead of centre crop (same window for clip and global frames).
        seed: base seed of shard order, shuffling and augmentation.
    """

    def __init__(
        self,
        train_shards: str | list[str] | None = None,
        val_shards: str | list[str] | None = None,
        batch_size: int = 1,
        val_batch_size: int | None = None,
        num_workers: int = 4,
        resolution: int | tuple[int, int] = 256,
        num_frames: int = 16,
        num_global_frames: int = 16,
        min_fps: int = 1,
        max_fps: int = 30,
        shuffle_buffer: int = 1000,
        resampled: bool = False,
        samples_per_epoch: int | None = None,
        augmentation: AugmentationConfig | None = None,
        short_video: str = "pad",
        random_crop: bool = False,
        seek: bool = True,
        decode_threads: int = 1,
        pin_memory: bool = True,
        persistent_workers: bool = False,
        prefetch_factor: int | None = 2,
        seed: int = 0,
        max_consecutive_failures: int = 100,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["augmentation"])
        height, width = (resolution, resolution) if isinstance(resolution, int) else tuple(resolution)
        self.clip_config = ClipConfig(
            height=height,
            width=width,
            num_frames=num_frames,
            num_global_frames=num_global_frames,
            min_rate=min_fps,
            max_rate=max_fps,
            short_video=short_video,
            random_crop=random_crop,
            seek=seek,
            decode_threads=decode_threads,
        )
        self.augmentation = augmentation or AugmentationConfig()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if resampled and samples_per_epoch is None:
            raise ValueError("resampled=True needs samples_per_epoch (the stream has no end otherwise)")
        self.train_shards = train_shards
        self.val_shards = val_shards
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.num_workers = num_workers
        self.shuffle_buffer = shuffle_buffer
        self.resampled = resampled
        self.samples_per_epoch = samples_per_epoch
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers and num_workers > 0
        self.prefetch_factor = prefetch_factor if num_workers > 0 else None
        self.seed = seed
        self.max_consecutive_failures = max_consecutive_failures
        self.train_urls: list[str] = []
        self.val_urls: list[str] = []
        self.skipped_samples = 0  # corrupt samples skipped so far (all workers of this process)
        self._progress: StreamProgress | None = None  # this rank's position in the current training epoch
        self._saved_stream: dict | None = None  # a checkpoint's positions, until the next epoch starts
        self._epochs_started = 0  # epoch count without a trainer

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit"):
            self.train_urls = resolve_shards(self.train_shards, "train_shards")
        if stage in (None, "fit", "validate") and (self.val_shards or stage == "validate"):
            self.val_urls = resolve_shards(self.val_shards, "val_shards")

    def _rank_and_world_size(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _loader_arguments(self) -> dict:
        return dict(
            batch_size=None,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            persistent_workers=self.persistent_workers,
            prefetch_factor=self.prefetch_factor,
        )

    def _check_shard_split(self) -> None:
        """Every rank needs shards of its own; idle workers only waste memory."""
        if self.resampled:
            return
        _, world_size = self._rank_and_world_size()
        shards, workers = len(self.train_urls), max(1, self.num_workers)
        if shards < world_size:
            raise ValueError(
                f"train_shards: {shards} shard(s) for {world_size} ranks leave rank {shards} and above without data; "
                f"give at least {world_size} shards (ideally a multiple of {world_size * workers}: ranks x num_workers), "
                "or resampled=True with samples_per_epoch"
            )
        if shards // world_size < workers:
            log.warning(
                "train_shards: %d shard(s) over %d rank(s) x %d worker(s): some workers get no shard and stay idle",
                shards, world_size, workers,
            )

    def train_dataset(self) -> ClipStream:
        if not self.train_urls:
            self.setup("fit")
        self._check_shard_split()
        batches_per_worker = None
        if self.samples_per_epoch is not None:
            streams = self._rank_and_world_size()[1] * max(1, self.num_workers)
            batches_per_worker = max(1, math.ceil(self.samples_per_epoch / (streams * self.batch_size)))
        return ClipStream(
            self.train_urls,
            self.clip_config,
            self.augmentation,
            self.batch_size,
            train=True,
            resampled=self.resampled,
            shuffle_buffer=self.shuffle_buffer,
            batches_per_worker=batches_per_worker,
            seed=self.seed,
            max_consecutive_failures=self.max_consecutive_failures,
            num_workers=self.num_workers,
        )

    def val_dataset(self) -> ClipStream:
        if not self.val_urls:
            self.setup("validate")
        return ClipStream(
            self.val_urls,
            self.clip_config,
            self.augmentation,
            self.val_batch_size,
            train=False,
            seed=self.seed,
            max_consecutive_failures=self.max_consecutive_failures,
            num_workers=self.num_workers,
        )

    def train_dataloader(self) -> DataLoader:
        loader = TrainStreamLoader(self.train_dataset(), **self._loader_arguments())
        loader.plan_epoch = self._plan_train_epoch
        return loader

    def val_dataloader(self) -> DataLoader | list:
        if not self.val_shards:
            return []
        return DataLoader(self.val_dataset(), **self._loader_arguments())

    def _plan_train_epoch(self) -> EpochPlan:
        """The plan of the training epoch about to start: from its beginning, or where a
        loaded checkpoint stopped (see :mod:`.stream_progress`)."""
        trainer = self.trainer
        rank, world_size = self._rank_and_world_size()
        if trainer is not None:
            epoch = trainer.current_epoch
            progress = trainer.fit_loop.epoch_loop.batch_progress
            batches_done = progress.current.ready
            if trainer.fit_loop.is_resuming and progress.is_last_batch:
                # resumed from the last batch of an epoch: Lightning closes that epoch without
                # fetching and runs the next one on the iterator made now
                epoch, batches_done = epoch + 1, 0
        else:
            epoch, batches_done = self._epochs_started, None
        self._epochs_started = epoch + 1
        saved, self._saved_stream = self._saved_stream, None
        streams = max(1, self.num_workers)
        plan, problem = continuation_plan(
            saved, epoch=epoch, rank=rank, world_size=world_size, num_streams=streams, batches_done=batches_done
        )
        if problem:
            log.warning("not an exact resume: %s", problem)
        self._progress = StreamProgress.start(plan, streams)
        return plan

    def on_before_batch_transfer(self, batch, dataloader_idx: int):
        """Move the workers' skip counts out of the batch into :attr:`skipped_samples` and the loggers,
        and training batches' stream positions into this rank's progress."""
        if isinstance(batch, dict) and "stream_position" in batch:
            position = batch.pop("stream_position")
            if self._progress is not None:
                self._progress.record(*(int(v) for v in position))
        if isinstance(batch, dict) and "num_skipped" in batch:
            skipped = int(batch.pop("num_skipped"))
            if skipped:
                self.skipped_samples += skipped
                log.warning("%d corrupt sample(s) skipped so far", self.skipped_samples)
                trainer = self.trainer
                if trainer is not None:
                    for logger in trainer.loggers:
                        logger.log_metrics({"data/skipped_samples": float(self.skipped_samples)}, step=trainer.global_step)
        return batch

    def state_dict(self) -> dict:
        """Skip count and every rank's position in the current training epoch.

        With several ranks this gathers the positions from all of them, so it must be called
        on every rank at once, as ``Trainer.save_checkpoint`` does.
        """
        local = self._progress.state_dict() if self._progress is not None else None
        ranks = [local]
        trainer = self.trainer
        if trainer is not None and trainer.world_size > 1 and torch.distributed.is_initialized():
            ranks = [None] * trainer.world_size
            torch.distributed.all_gather_object(ranks, local)
        return {"skipped_samples": self.skipped_samples, "train_stream": {"ranks": ranks}}

    def load_state_dict(self, state_dict: dict) -> None:
        self.skipped_samples = int(state_dict.get("skipped_samples", 0))
        self._saved_stream = state_dict.get("train_stream")
        saved = [entry for entry in (self._saved_stream or {}).get("ranks", []) if entry]
        if saved:  # without a trainer, the next epoch is the saved one
            self._epochs_started = saved[0]["epoch"]
