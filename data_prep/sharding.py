"""Write WebDataset video shards from a list of videos (shared by shard_videos and webvid).

Layout: the input list is cut into consecutive groups of ``shard_size`` items;
group j becomes ``{prefix}-{j:06d}.tar``. The mapping from items to shards
depends only on the list, so:

* an array job ``--job-index i --num-jobs n`` writes the shards j with
  j % n == i, and n jobs together write exactly the shards one job would;
* a rerun skips every shard whose ``.tar`` exists and whose recorded item list
  is unchanged (resume after a crash or a time limit);
* a shard is written as ``.tar.tmp`` and renamed when complete, so a ``.tar``
  is never half-written.

Each sample holds ``{key}.mp4`` (the video, re-encoded to H.264 at a given short
side or copied as is), ``{key}.json`` (fps, num_frames, width, height,
duration, codec, source path, caption, manifest metadata) and ``{key}.txt``
(the caption) when there is one. Bad inputs are skipped with a reason; per-shard
statistics go to ``_stats/`` and a summary JSON is written beside the shards.
"""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import os
import re
import shutil
import sys
import tarfile
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm import tqdm

from lightning_m3ddm.video.decode import VideoDecodeError, encode_video, iter_frames, probe_video

SHORT_CLIP_FRAMES = 16  # paper: clips of F = 16 frames; shorter videos are padded at training time


@dataclass(frozen=True)
class VideoItem:
    """One input video: where it is, its sample key, caption and extra metadata."""

    path: str
    key: str
    caption: str | None = None
    meta: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ShardOptions:
    output: Path
    prefix: str = "shard"
    shard_size: int = 100
    workers: int = 1
    resize_short_side: int | None = None
    crf: int = 23
    gop: int | None = None
    min_frames: int = 1
    num_jobs: int = 1
    job_index: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        if self.shard_size < 1:
            raise ValueError(f"--shard-size must be >= 1, got {self.shard_size}")
        if self.num_jobs < 1 or not 0 <= self.job_index < self.num_jobs:
            raise ValueError(f"--job-index must be in [0, --num-jobs), got {self.job_index} of {self.num_jobs}")
        if self.resize_short_side is not None and (self.resize_short_side < 16 or self.resize_short_side % 2):
            raise ValueError(f"--resize-short-side must be an even number >= 16, got {self.resize_short_side}")
        if not re.fullmatch(r"[A-Za-z0-9_-]+", self.prefix):
            raise ValueError(f"--prefix may hold only letters, digits, '_' and '-', got {self.prefix!r}")


_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def sample_key(index: int, name: str = "", max_name: int = 40) -> str:
    """A WebDataset-safe key (no dots or slashes): zero-padded position plus a readable name."""
    stem = _KEY_UNSAFE.sub("_", name).strip("_")[:max_name]
    return f"{index:09d}_{stem}" if stem else f"{index:09d}"


@dataclass
class PreparedVideo:
    """A worker's answer for one item: the sample to write, or why it was skipped."""

    item: VideoItem
    meta: dict | None = None
    data_path: str | None = None  # file holding the bytes to store
    temporary: bool = False  # data_path is a re-encoded file to delete after writing
    reason: str | None = None  # "kind: detail" when skipped


def even_size_for_short_side(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(height, width) with the short side = ``short_side``, aspect kept, both even (H.264 needs it)."""
    scale = short_side / min(height, width)
    return max(2, round(height * scale / 2) * 2), max(2, round(width * scale / 2) * 2)


def skip_reason(kind: str, detail: str) -> str:
    """``"kind: detail"``, without repeating a kind the detail already starts with
    (a truncated file's message reads "truncated: container declares ...")."""
    return detail if detail.startswith(f"{kind}:") else f"{kind}: {detail}"


def output_problem(output: Path) -> str | None:
    """Why ``--output`` cannot hold the shards (one line), or None."""
    existing = next((p for p in (output, *output.parents) if p.exists()), None)
    if existing is None:
        return None
    where = f"--output {output}" if existing == output else f"--output {output}: {existing}"
    if not existing.is_dir():
        return f"{where} is a file, not a folder"
    if not os.access(existing, os.W_OK):
        return f"{where} is not writable"
    return None


def prepare_video(item: VideoItem, options: ShardOptions, workdir: str) -> PreparedVideo:
    """Probe (and maybe re-encode) one video; never raises for bad input."""
    path = item.path
    if not os.path.exists(path):
        return PreparedVideo(item, reason="missing: file does not exist")
    if not os.path.isfile(path) or not os.access(path, os.R_OK):
        return PreparedVideo(item, reason="unreadable: not a readable file")
    try:
        info = probe_video(path)
    except VideoDecodeError as exc:
        return PreparedVideo(item, reason=skip_reason(exc.kind, str(exc)))
    except OSError as exc:
        return PreparedVideo(item, reason=f"unreadable: {exc}")
    if info.num_frames < options.min_frames:
        return PreparedVideo(item, reason=f"too_short: {info.num_frames} frames < --min-frames {options.min_frames}")
    meta = dict(
        key=item.key,
        source=path,
        source_width=info.width,
        source_height=info.height,
        reencoded=False,
        **info.to_dict(),
    )
    data_path, temporary = path, False
    if options.resize_short_side and min(info.width, info.height) > options.resize_short_side:
        height, width = even_size_for_short_side(info.height, info.width, options.resize_short_side)
        out = os.path.join(workdir, f"{item.key}.mp4")
        try:
            encode_video(iter_frames(path, (height, width), "AREA"), out, fps=info.fps, crf=options.crf, gop=options.gop)
            new_info = probe_video(out)
        except (VideoDecodeError, ValueError, OSError) as exc:
            if os.path.exists(out):
                os.remove(out)
            return PreparedVideo(item, reason=f"reencode_failed: {exc}")
        except Exception as exc:  # FFmpeg errors surface as many types; the item is skipped, the job goes on
            if os.path.exists(out):
                os.remove(out)
            return PreparedVideo(item, reason=f"reencode_failed: {type(exc).__name__}: {exc}")
        meta.update(reencoded=True, **new_info.to_dict())
        data_path, temporary = out, True
    if item.caption:
        meta["caption"] = item.caption
    for name, value in item.meta.items():
        meta.setdefault(name, value)
    return PreparedVideo(item, meta=meta, data_path=data_path, temporary=temporary)


def _items_digest(items: list[VideoItem]) -> str:
    h = hashlib.sha1()
    for item in items:
        h.update(f"{item.key}\0{item.path}\0{item.caption or ''}\n".encode())
    return h.hexdigest()


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0  # reproducible shards
    info.mode = 0o444
    tar.addfile(info, io.BytesIO(data))


def _write_json_atomic(path: Path, payload: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True))
    os.replace(tmp, path)


def _worker(args) -> PreparedVideo:
    item, options, workdir = args
    return prepare_video(item, options, workdir)


def shard_name(options: ShardOptions, shard: int) -> str:
    return f"{options.prefix}-{shard:06d}"


def write_shards(items: list[VideoItem], options: ShardOptions, source: str = "") -> dict:
    """Write this job's shards of ``items``; return (and save) the summary.

    The summary counts, over this job's shards including those kept from an
    earlier run: items, written samples, skipped items by reason (each listed
    with its path), videos shorter than 16 frames, bytes and seconds of video.
    """
    started = time.time()
    output = Path(options.output)
    output.mkdir(parents=True, exist_ok=True)
    stats_dir = output / "_stats"
    stats_dir.mkdir(exist_ok=True)
    keys = [item.key for item in items]
    if len(set(keys)) != len(keys):
        dup = next(k for k, n in Counter(keys).items() if n > 1)
        raise ValueError(f"duplicate sample key {dup!r}: keys must be unique")

    num_shards = (len(items) + options.shard_size - 1) // options.shard_size
    mine = [j for j in range(num_shards) if j % options.num_jobs == options.job_index]
    groups = {j: items[j * options.shard_size : (j + 1) * options.shard_size] for j in mine}
    pending, resumed = [], []
    for j in mine:
        name = shard_name(options, j)
        stats_path = stats_dir / f"{name}.json"
        if (output / f"{name}.tar").exists() and stats_path.exists():
            try:
                previous = json.loads(stats_path.read_text())
            except json.JSONDecodeError:
                previous = {}
            if previous.get("items_digest") == _items_digest(groups[j]):
                resumed.append(previous)
                continue
            print(f"{name}: input list changed since it was written; rewriting", file=sys.stderr)
        pending.append(j)

    shard_stats: list[dict] = []
    workdir = tempfile.mkdtemp(prefix=".reencode-", dir=output)
    try:
        jobs = ((item, options, workdir) for j in pending for item in groups[j])
        total = sum(len(groups[j]) for j in pending)
        # fork: workers start instantly (no re-import); created before any tqdm thread exists.
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        pool = multiprocessing.get_context(method).Pool(options.workers) if options.workers > 1 else None
        results = pool.imap(_worker, jobs, chunksize=1) if pool else map(_worker, jobs)
        try:
            with tqdm(total=total, desc=f"{options.prefix} job {options.job_index}/{options.num_jobs}", unit="video",
                      disable=not options.progress) as bar:
                for j in pending:
                    shard_stats.append(_write_one_shard(output, stats_dir, options, j, groups[j], results, bar))
        finally:
            if pool:
                pool.terminate()
                pool.join()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    summary = _summarize(options, source, len(items), num_shards, shard_stats, resumed, time.time() - started)
    suffix = "" if options.num_jobs == 1 else f"-job{options.job_index:04d}-of-{options.num_jobs:04d}"
    _write_json_atomic(output / f"{options.prefix}-summary{suffix}.json", summary)
    return summary


def _write_one_shard(output: Path, stats_dir: Path, options: ShardOptions, j: int, group: list[VideoItem], results, bar) -> dict:
    name = shard_name(options, j)
    final = output / f"{name}.tar"
    tmp = output / f"{name}.tar.tmp"
    written, skipped, short, nbytes, seconds = [], [], 0, 0, 0.0
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for _ in group:
            prepared: PreparedVideo = next(results)
            bar.update(1)
            if prepared.reason is not None:
                skipped.append(dict(key=prepared.item.key, path=prepared.item.path, reason=prepared.reason))
                continue
            try:
                data = Path(prepared.data_path).read_bytes()
            except OSError as exc:
                skipped.append(dict(key=prepared.item.key, path=prepared.item.path, reason=f"unreadable: {exc}"))
                continue
            finally:
                if prepared.temporary and os.path.exists(prepared.data_path):
                    os.remove(prepared.data_path)
            meta = prepared.meta
            key = prepared.item.key
            _add_member(tar, f"{key}.mp4", data)
            _add_member(tar, f"{key}.json", json.dumps(meta, sort_keys=True).encode())
            if meta.get("caption"):
                _add_member(tar, f"{key}.txt", str(meta["caption"]).encode())
            written.append(key)
            short += int(meta["num_frames"] < SHORT_CLIP_FRAMES)
            nbytes += len(data)
            seconds += float(meta["duration"])
    if not written:  # nothing usable: no empty shard (the stats keep the reasons)
        tmp.unlink()
    stats = dict(
        shard=f"{name}.tar" if written else None,
        items=len(group),
        items_digest=_items_digest(group),
        written=len(written),
        skipped=skipped,
        short_videos=short,
        bytes=nbytes,
        video_seconds=round(seconds, 3),
    )
    # Stats first: a .tar without stats would be kept on resume without its counts.
    _write_json_atomic(stats_dir / f"{name}.json", stats)
    if written:
        os.replace(tmp, final)
    return stats


def _summarize(options: ShardOptions, source: str, num_items: int, num_shards: int, written: list[dict], resumed: list[dict], elapsed: float) -> dict:
    everything = written + resumed
    skipped = [s for stats in everything for s in stats["skipped"]]
    reasons = Counter(s["reason"].split(":", 1)[0] for s in skipped)
    return dict(
        source=source,
        output=str(options.output),
        prefix=options.prefix,
        shard_size=options.shard_size,
        resize_short_side=options.resize_short_side,
        job=dict(index=options.job_index, count=options.num_jobs),
        input_items=num_items,
        shards_total=num_shards,
        shards_written=sorted(s["shard"] for s in written if s["shard"]),
        shards_kept_from_previous_run=sorted(s["shard"] for s in resumed),
        totals=dict(
            items=sum(s["items"] for s in everything),
            written=sum(s["written"] for s in everything),
            skipped=len(skipped),
            short_videos=sum(s["short_videos"] for s in everything),
            bytes=sum(s["bytes"] for s in everything),
            video_seconds=round(sum(s["video_seconds"] for s in everything), 3),
        ),
        skipped_by_reason=dict(sorted(reasons.items())),
        skipped=skipped,
        elapsed_seconds=round(elapsed, 2),
        options={k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(options).items()},
    )


def add_common_arguments(parser) -> None:
    """Flags shared by the shard_videos and webvid commands."""
    parser.add_argument("--output", required=True, type=Path, help="folder for the shards (created)")
    parser.add_argument("--prefix", default="shard", help="shard file prefix: PREFIX-000000.tar (default: shard)")
    parser.add_argument("--shard-size", type=int, default=100, help="videos per shard (default: 100)")
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1),
                        help="worker processes probing / re-encoding (default: CPUs - 1)")
    parser.add_argument("--resize-short-side", type=int, default=None, metavar="PX",
                        help="re-encode videos whose short side exceeds PX to H.264 with that short side "
                             "(e.g. 256: training-time decoding gets several times cheaper); default: copy as is")
    parser.add_argument("--crf", type=int, default=23, help="x264 quality when re-encoding (default: 23)")
    parser.add_argument("--gop", type=int, default=None,
                        help="keyframe interval when re-encoding, in frames (smaller = faster seeking, larger files)")
    parser.add_argument("--min-frames", type=int, default=1, help="skip videos with fewer frames (default: 1)")
    parser.add_argument("--num-jobs", "--num-shards", dest="num_jobs", type=int, default=1,
                        help="split the work over this many array jobs (deterministic; alias --num-shards)")
    parser.add_argument("--job-index", "--shard-index", dest="job_index", type=int, default=0,
                        help="which of --num-jobs this process is, 0-based (alias --shard-index)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def options_from_args(args) -> ShardOptions:
    return ShardOptions(
        output=args.output,
        prefix=args.prefix,
        shard_size=args.shard_size,
        workers=args.workers,
        resize_short_side=args.resize_short_side,
        crf=args.crf,
        gop=args.gop,
        min_frames=args.min_frames,
        num_jobs=args.num_jobs,
        job_index=args.job_index,
        progress=not args.no_progress,
    )


def print_summary(summary: dict, max_listed: int = 20) -> None:
    """Human-readable summary on stderr; the full JSON is in the summary file."""
    t = summary["totals"]
    print(
        f"shards: {len(summary['shards_written'])} written, {len(summary['shards_kept_from_previous_run'])} kept "
        f"(of {summary['shards_total']}); videos: {t['written']} written, {t['skipped']} skipped, "
        f"{t['short_videos']} shorter than {SHORT_CLIP_FRAMES} frames; {t['bytes'] / 1e6:.1f} MB, "
        f"{t['video_seconds'] / 3600:.2f} h of video",
        file=sys.stderr,
    )
    for reason, count in summary["skipped_by_reason"].items():
        print(f"  skipped {reason}: {count}", file=sys.stderr)
    for s in summary["skipped"][:max_listed]:
        print(f"    {s['path']}: {s['reason']}", file=sys.stderr)
    if len(summary["skipped"]) > max_listed:
        print(f"    ... {len(summary['skipped']) - max_listed} more in the summary file", file=sys.stderr)


def run_job(args, list_items, source: str) -> dict:
    """The body of a sharding command: options and items from ``args`` (``list_items()``),
    a one-line error and exit status 2 for unusable input, then shards and their summary."""
    try:
        options = options_from_args(args)
        items = list_items()
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
    problem = output_problem(Path(options.output))
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        raise SystemExit(2)
    if not items:
        print(f"error: no videos found in {source}", file=sys.stderr)
        raise SystemExit(2)
    summary = write_shards(items, options, source=source)
    print_summary(summary)
    totals = summary["totals"]
    if totals["items"] and not totals["written"]:
        print(f"error: none of the {totals['items']} videos of {source} could be used (reasons above); no shard written",
              file=sys.stderr)
        raise SystemExit(1)
    return summary
