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

Distribution: shards are split by node (rank) and by dataloader worker, or,
with ``resampled=True``, every worker draws shards with replacement, which keeps
all ranks busy for any number of nodes (then ``samples_per_epoch`` sets the
epoch length). Corrupt shards or samples are skipped, counted and logged,
never fatal; a worker that fails ``max_consecutive_failures`` samples in a row
stops with the last error (that is a bug or a wrong dataset, not a bad file).
"""

from __future__ import annotations

import functools
import glob
import hashlib
import json
import logging
import math
import os
import random
from collections.abc import Iterator, Sequence
from urllib.parse import urlparse

import lightning as L
import torch
import webdataset as wds
from braceexpand import braceexpand
from torch.utils.data import DataLoader
from webdataset.tariterators import group_by_keys, tar_file_expander

from lightning_m3ddm.data.augmentation import AugmentationConfig, augment
from lightning_m3ddm.data.clips import ClipConfig, load_clip_example
from lightning_m3ddm.data.video_io import VIDEO_EXTENSIONS

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


def _stable_seed(*parts) -> int:
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


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
        self.epoch = 0  # advanced in the main process by _EpochDataLoader
        self._local_iterations = 0  # advanced where the iteration runs (persistent workers)
        self.skipped = 0

    # -- stages (generators over the previous stage, run inside each worker) --------------
    def _shard_list(self, epoch_seed: int) -> wds.DataPipeline | torch.utils.data.IterableDataset:
        if self.resampled:
            # Each worker draws its own shards: no split needed, every rank stays busy.
            return wds.ResampledShards(self.urls, seed=epoch_seed, deterministic=True)
        urls = list(self.urls)
        if self.train:
            random.Random(epoch_seed).shuffle(urls)  # same order on every rank and worker, then split
        # A worker left without shards (fewer shards than ranks x workers) yields nothing.
        return wds.DataPipeline(wds.SimpleShardList(urls), wds.split_by_node, wds.split_by_worker)

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

    def _example(self, sample: dict, generator: torch.Generator) -> dict:
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
        if not self.train:
            generator.manual_seed(_stable_seed(self.seed, key))
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

    def _examples(self, samples: Iterator[dict], generator: torch.Generator) -> Iterator[dict]:
        failures = 0
        for sample in samples:
            try:
                example = self._example(sample, generator)
            except Exception as exn:  # corrupt sample: count, warn, go on
                failures += 1
                self.skipped += 1
                log.warning("skipping sample %r from %s: %s", sample.get("__key__"), sample.get("__url__"), exn)
                if failures >= self.max_consecutive_failures:
                    raise RuntimeError(
                        f"{failures} consecutive samples failed to load; last error: {exn!r}"
                    ) from exn
                continue
            failures = 0
            yield example

    def _batches(self, examples: Iterator[dict]) -> Iterator[dict]:
        reported = self.skipped
        buffer: list[dict] = []
        for example in examples:
            buffer.append(example)
            if len(buffer) == self.batch_size:
                yield collate_examples(buffer, self.skipped - reported)
                reported, buffer = self.skipped, []
        if buffer and not self.train:
            yield collate_examples(buffer, self.skipped - reported)

    def __iter__(self) -> Iterator[dict]:
        self._local_iterations += 1
        rank, _, worker, _ = wds.utils.pytorch_worker_info()
        epoch_seed = _stable_seed(self.seed, self.epoch, self._local_iterations) % (1 << 31)
        generator = torch.Generator().manual_seed(_stable_seed(epoch_seed, rank, worker))
        stages = [self._shard_list(epoch_seed), self._samples]
        if self.train and self.shuffle_buffer > 1:
            rng = random.Random(_stable_seed(epoch_seed, rank, worker, "shuffle"))
            stages.append(wds.shuffle(self.shuffle_buffer, initial=min(100, self.shuffle_buffer), rng=rng))
        stages += [functools.partial(self._examples, generator=generator), self._batches]
        pipeline = wds.DataPipeline(*stages)
        if self.batches_per_worker is not None:
            pipeline = pipeline.with_epoch(nbatches=self.batches_per_worker)
        return iter(pipeline)


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


class _EpochDataLoader(DataLoader):
    """Advances the dataset's epoch before workers start, so every epoch reshuffles."""

    def __iter__(self):
        self.dataset.epoch += 1
        return super().__iter__()


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

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit"):
            self.train_urls = resolve_shards(self.train_shards, "train_shards")
        if stage in (None, "fit", "validate") and (self.val_shards or stage == "validate"):
            self.val_urls = resolve_shards(self.val_shards, "val_shards")

    def _world_size(self) -> int:
        trainer = self.trainer
        return trainer.world_size if trainer is not None else 1

    def _loader(self, dataset: ClipStream) -> DataLoader:
        return _EpochDataLoader(
            dataset,
            batch_size=None,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            persistent_workers=self.persistent_workers,
            prefetch_factor=self.prefetch_factor,
        )

    def train_dataset(self) -> ClipStream:
        if not self.train_urls:
            self.setup("fit")
        batches_per_worker = None
        if self.samples_per_epoch is not None:
            streams = self._world_size() * max(1, self.num_workers)
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
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_dataset())

    def val_dataloader(self) -> DataLoader | list:
        if not self.val_shards:
            return []
        return self._loader(self.val_dataset())

    def on_before_batch_transfer(self, batch, dataloader_idx: int):
        """Move the workers' skip counts out of the batch into :attr:`skipped_samples` and the loggers."""
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
        return {"skipped_samples": self.skipped_samples}

    def load_state_dict(self, state_dict: dict) -> None:
        self.skipped_samples = int(state_dict.get("skipped_samples", 0))
