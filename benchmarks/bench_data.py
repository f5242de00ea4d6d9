"""Data-loading throughput: clips per second per worker, next to the decode-only ceiling.

For each source (full-size videos, and the same videos re-encoded by
``data_prep.shard_videos --resize-short-side 256``) it measures, in one process:

* pipeline: shard reading + frame selection + decoding + resize/crop + masks,
  i.e. what one dataloader worker of M3DDMDataModule does per clip;
* decode only: the same frames of the same videos decoded by PyAV without
  RGB conversion, resizing or masking (the ceiling for this decoder);
* loader: M3DDMDataModule's DataLoader with ``--workers`` processes (total clips/s).

Clips are F = 16 frames plus g = 16 global frames at 256x256 (paper 3.2,
3.2.2). The test videos are synthetic (lightning_m3ddm.data.synthetic), H.264
with x264's default keyframe interval unless stated.

    python benchmarks/bench_data.py            # full run (minutes)
    python benchmarks/bench_data.py --quick    # smoke test (seconds)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from data_prep.sharding import ShardOptions, VideoItem, write_shards  # noqa: E402
from lightning_m3ddm.video import decode as video_io  # noqa: E402
from lightning_m3ddm.data.augmentation import AugmentationConfig  # noqa: E402
from lightning_m3ddm.data.clips import ClipConfig, load_clip_example  # noqa: E402
from lightning_m3ddm.data.datamodule import ClipStream, M3DDMDataModule  # noqa: E402
from lightning_m3ddm.seeding import stable_seed  # noqa: E402
from lightning_m3ddm.data.synthetic import SyntheticVideoSpec, write_synthetic_video  # noqa: E402


@dataclass(frozen=True)
class Setting:
    width: int
    height: int
    frames: int
    fps: float
    videos: int
    out: int
    clip_frames: int
    global_frames: int
    passes: int


FULL = Setting(width=1280, height=720, frames=300, fps=30, videos=4, out=256, clip_frames=16, global_frames=16, passes=3)
QUICK = Setting(width=160, height=96, frames=48, fps=24, videos=2, out=64, clip_frames=16, global_frames=16, passes=1)


@contextlib.contextmanager
def no_rgb_conversion():
    """Make decode_frames skip the RGB conversion: what is left is demuxing and decoding."""
    original = video_io._to_rgb
    video_io._to_rgb = lambda frame, plan, interpolation: np.zeros((1, 1, 3), np.uint8)
    try:
        yield
    finally:
        video_io._to_rgb = original


def make_sources(setting: Setting, workdir: Path) -> dict[str, Path]:
    """Synthetic full-size videos (cached) and their shards: as is, 256 short side, 256 short side with GOP 16."""
    videos = []
    for i in range(setting.videos):
        path = workdir / "videos" / f"{setting.width}x{setting.height}_{setting.frames}f_{i}.mp4"
        if not path.exists():
            spec = SyntheticVideoSpec(width=setting.width, height=setting.height, num_frames=setting.frames,
                                      fps=setting.fps, seed=i, num_objects=4, pan_speed=setting.width / 300)
            write_synthetic_video(path.with_suffix(".tmp.mp4"), spec).rename(path)
        videos.append(VideoItem(str(path), f"video{i}"))
    tag = f"{setting.width}x{setting.height}_{setting.frames}f_{setting.videos}"
    out = {}
    for name, resize, gop in (("full-size", None, None), ("short side 256", 256, None), ("short side 256, GOP 16", 256, 16)):
        if resize is not None and resize >= min(setting.width, setting.height):
            resize = max(16, min(setting.width, setting.height) // 2 // 2 * 2)
        folder = workdir / "shards" / f"{tag}_{resize}_{gop}"
        write_shards(videos, ShardOptions(output=folder, shard_size=setting.videos, resize_short_side=resize, gop=gop,
                                          workers=1, progress=False))
        out[name] = folder / "shard-000000.tar"
    return out


def clip_config(setting: Setting) -> ClipConfig:
    return ClipConfig(height=setting.out, width=setting.out, num_frames=setting.clip_frames,
                      num_global_frames=setting.global_frames)


def _shard_videos(shard: Path) -> dict[str, bytes]:
    import tarfile

    with tarfile.open(shard) as tar:
        return {m.name.split(".")[0]: tar.extractfile(m).read() for m in tar.getmembers() if m.name.endswith(".mp4")}


def pipeline_pass(stream: ClipStream, setting: Setting) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, clips) of one pass of one worker's full per-clip work over the shard.

    Validation mode: each key's rate, start and masks are fixed by its seed, so
    every pass and the decode-only pass decode the same frames.
    """
    count, start, cpu = 0, time.perf_counter(), time.process_time()
    for batch in stream:
        count += 1
        assert batch["video"].shape[1] == setting.clip_frames
    return time.perf_counter() - start, time.process_time() - cpu, count


def decode_only_pass(videos: dict[str, bytes], setting: Setting) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, clips) decoding exactly the frames the pipeline decodes, without conversion."""
    config = clip_config(setting)
    generator = torch.Generator()
    start, cpu = time.perf_counter(), time.process_time()
    with no_rgb_conversion():
        for key, data in videos.items():
            generator.manual_seed(stable_seed(0, key))  # the pipeline's validation-mode draws
            load_clip_example(data, generator, config)
    return time.perf_counter() - start, time.process_time() - cpu, len(videos)


def bench_single_worker(shard: Path, setting: Setting) -> dict:
    """Medians over passes of clips/s (wall) and clips per CPU-second, pipeline and decode-only.

    Passes are interleaved so both see the same machine load. Everything runs on one thread
    (torch and PyAV set to 1), so clips per CPU-second is what one dedicated core would do,
    whatever else shares the machine.
    """
    stream = ClipStream([str(shard)], clip_config(setting), AugmentationConfig(), batch_size=1, train=False)
    videos = _shard_videos(shard)
    next(iter(stream))  # warm-up: imports, first allocations
    rates: dict[str, list[float]] = {k: [] for k in ("pipeline", "pipeline_cpu", "decode", "decode_cpu")}
    clips = 0
    for _ in range(setting.passes):
        wall, cpu, n = pipeline_pass(stream, setting)
        rates["pipeline"].append(n / wall)
        rates["pipeline_cpu"].append(n / cpu)
        clips += n
        wall, cpu, n = decode_only_pass(videos, setting)
        rates["decode"].append(n / wall)
        rates["decode_cpu"].append(n / cpu)
    out = {k: round(float(np.median(v)), 2) for k, v in rates.items()}
    out["clips"] = clips
    return out


def bench_loader(shard: Path, setting: Setting, workers: int) -> float:
    """Total clips/s of the DataModule's DataLoader with ``workers`` processes."""
    shards = [str(shard)] * max(workers, 1) * setting.passes  # one shard per worker and pass
    dm = M3DDMDataModule(val_shards=shards, batch_size=1, num_workers=workers, resolution=setting.out,
                         num_frames=setting.clip_frames, num_global_frames=setting.global_frames, pin_memory=False)
    loader = dm.val_dataloader()
    count, start = 0, time.perf_counter()
    for batch in loader:
        count += len(batch["key"])
    return count / (time.perf_counter() - start)


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    except OSError:
        return "unknown"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny videos, one pass: a smoke test of a few seconds")
    parser.add_argument("--workdir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "m3ddm_bench_data",
                        help="cache for generated videos and shards")
    parser.add_argument("--workers", type=int, default=2, help="processes for the DataLoader measurement (0: skip it)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    setting = QUICK if args.quick else FULL
    torch.set_num_threads(1)  # a dataloader worker's view: one core each

    sources = make_sources(setting, args.workdir)
    load_before = os.getloadavg()[0]
    rows = []
    for name, shard in sources.items():
        single = bench_single_worker(shard, setting)
        # --quick measures the multi-process loader once only: its start-up dominates tiny runs.
        measure_loader = args.workers > 0 and (not args.quick or name == "short side 256")
        loader = bench_loader(shard, setting, args.workers) if measure_loader else None
        with tarfile_size(shard) as (size_mb, width, height):
            rows.append(dict(
                source=name, stored=f"{width}x{height}", mb_per_video=round(size_mb / setting.videos, 2),
                pipeline_clips_per_s=single["pipeline"], decode_only_clips_per_s=single["decode"],
                pipeline_clips_per_cpu_s=single["pipeline_cpu"], decode_only_clips_per_cpu_s=single["decode_cpu"],
                pipeline_over_ceiling=round(single["pipeline_cpu"] / single["decode_cpu"], 2),
                loader_clips_per_s=None if loader is None else round(loader, 2), clips_measured=single["clips"],
            ))
        print(f"{name}: {rows[-1]}", file=sys.stderr)

    result = dict(
        setting=setting.__dict__,
        machine=f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
                f"PyAV {video_io.av.__version__}",
        command="python benchmarks/bench_data.py" + (" --quick" if args.quick else ""),
        commit=_git_commit(),
        date=time.strftime("%Y-%m-%d"),
        loader_workers=args.workers,
        load_average_1min=dict(before=round(load_before, 2), after=round(os.getloadavg()[0], 2)),
        rows=rows,
    )
    print(f"\nload average (1 min) {result['load_average_1min']} on {os.cpu_count()} cores; "
          f"medians of {setting.passes} interleaved passes over {setting.videos} videos")
    print(f"{setting.clip_frames} frames + {setting.global_frames} global frames at {setting.out}x{setting.out}, "
          f"{setting.videos} videos of {setting.width}x{setting.height}, {setting.frames} frames at {setting.fps:g} fps")
    print("| source | stored as | MB/video | pipeline clips/s/worker (wall) | decode-only (wall) | "
          "pipeline clips per CPU-s | decode-only per CPU-s | pipeline / ceiling (CPU) | "
          f"DataLoader {args.workers} workers clips/s (wall) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['source']} | {r['stored']} | {r['mb_per_video']} | {r['pipeline_clips_per_s']} | "
              f"{r['decode_only_clips_per_s']} | {r['pipeline_clips_per_cpu_s']} | {r['decode_only_clips_per_cpu_s']} | "
              f"{r['pipeline_over_ceiling']} | {r['loader_clips_per_s'] if r['loader_clips_per_s'] is not None else '-'} |")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


@contextlib.contextmanager
def tarfile_size(shard: Path):
    """(MB of video bytes, width, height) of a shard's first sample."""
    import tarfile

    with tarfile.open(shard) as tar:
        members = tar.getmembers()
        size = sum(m.size for m in members if m.name.endswith(".mp4")) / 1e6
        meta = json.loads(tar.extractfile(next(m for m in members if m.name.endswith(".json"))).read())
    yield size, meta["width"], meta["height"]


if __name__ == "__main__":
    main()
