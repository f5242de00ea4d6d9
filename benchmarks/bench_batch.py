"""Videos per hour of a catalogue run: 1 vs 2 processes, static vs balanced assignment, overlap on/off.

A batch of 12 generated videos of mixed lengths (20 to 600 frames, 64x48, 30 fps) is
outpainted to 9:16 by ``python -m lightning_m3ddm predict`` with configs/predict_tiny.yaml,
each configuration in a fresh output folder:

* processes: 1, or 2 (Lightning DDP on CPU, ``--trainer.devices 2``);
* assignment: ``static`` (every 2nd video of the input list per rank, as Lightning's
  distributed sampler) or ``balanced`` (claims, longest first);
* loader workers: 0 (writes in the sampling thread too: predict as it was), or 1 or 2 (they
  decode and paint the next videos ahead; writes go to a background thread).

Reported: wall seconds of the whole command (start-up included) and videos per hour from it;
CPU seconds of the launched process and the processes it waited for (its loader workers; a
second rank is launched by Lightning and not waited for, so with 2 processes this is rank 0's);
each rank's busy time (from its start to its last report line) and the spread between the
ranks (how long one rank idles while the other finishes). The tiny model samples in
milliseconds, so this measures the scheduling and the CPU side (decode, canvas, Telea,
encode), not the full model.

    python benchmarks/bench_batch.py --json batch.json     # the table (~10-20 min on 2 busy cores)
    python benchmarks/bench_batch.py --quick               # smoke test: 2 short videos, 1 process
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_predict import TINY_CONFIG, _git_commit, _machine  # noqa: E402

LENGTHS = (20, 600, 30, 45, 400, 60, 80, 250, 100, 25, 150, 40)  # mixed, as a catalogue comes
QUICK_LENGTHS = (20, 30)


@dataclass(frozen=True)
class Config:
    processes: int
    assignment: str  # "static" or "balanced"
    workers: int  # loader workers per process; > 0 also writes on a background thread

    @property
    def overlap(self) -> bool:
        return self.workers > 0

    @property
    def label(self) -> str:
        return f"{self.processes}p-{self.assignment}-{self.workers}w"


CONFIGS = (
    Config(1, "static", 0),
    Config(1, "static", 2),
    Config(2, "static", 0),
    Config(2, "static", 2),
    Config(2, "balanced", 0),
    Config(2, "balanced", 1),
    Config(2, "balanced", 2),
)
QUICK_CONFIGS = (Config(1, "balanced", 2),)


def make_videos(folder: Path, lengths) -> list[Path]:
    from lightning_m3ddm.video.samples import write_sample_video

    folder.mkdir(parents=True, exist_ok=True)
    videos = []
    for i, n in enumerate(lengths):
        path = folder / f"v{i:02d}_{n}f.mp4"
        if not path.exists():
            tmp = path.with_name(f".{path.name}.{os.getpid()}.mp4")
            write_sample_video(tmp, n, 64, 48, fps=30)
            tmp.rename(path)
        videos.append(path)
    return videos


def command(config: Config, videos: list[Path], out: Path, steps: int) -> list[str]:
    args = [
        sys.executable, "-m", "lightning_m3ddm", "predict", "--config", str(TINY_CONFIG),
        "--input", *map(str, videos), "--target_ratio", "9:16", "--output_dir", str(out),
        "--model.init_args.sampling.num_inference_steps", str(steps),
        "--data.init_args.assignment", config.assignment,
        "--data.init_args.num_workers", str(config.workers),
        "--writer.background", "true" if config.overlap else "false",
    ]
    if config.processes > 1:
        args += ["--trainer.devices", str(config.processes), "--trainer.strategy", "ddp"]
    return args


def measure(config: Config, videos: list[Path], workdir: Path, steps: int) -> dict:
    out = workdir / f"out-{config.label}"
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    load_before = os.getloadavg()[0]
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command(config, videos, out, steps), cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)  # rank 0 and its loader workers
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    if done.returncode != 0:
        raise RuntimeError(f"{config.label} failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    lines = [json.loads(raw) for raw in (out / "predict_report.jsonl").read_text().splitlines()]
    statuses = [line["status"] for line in lines if line["event"] == "video"]
    busy = {line["rank"]: line["elapsed_s"] for line in lines if line["event"] == "end"}
    outputs = len(list(out.glob("*.mp4")))
    shutil.rmtree(out, ignore_errors=True)
    return dict(
        config=asdict(config), label=config.label, wall_s=round(wall, 1), cpu_s=round(cpu, 1),
        videos_per_hour=round(len(videos) / wall * 3600, 1),
        videos_done=statuses.count("done"), outputs=outputs,
        rank_busy_s=[round(busy[r], 1) for r in sorted(busy)],
        rank_spread_s=round(max(busy.values()) - min(busy.values()), 1),
        load_1min=[round(load_before, 2), round(os.getloadavg()[0], 2)],
    )


def print_table(rows: list[dict]) -> None:
    print("| processes | assignment | loader workers (+ background writes) | wall s | videos / hour | CPU s (rank 0) | "
          "rank busy s | rank spread s | load (1 min) before → after |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        c = r["config"]
        print(f"| {c['processes']} | {c['assignment']} | {c['workers']} | {r['wall_s']} | "
              f"{r['videos_per_hour']} | {r['cpu_s']} | {', '.join(map(str, r['rank_busy_s']))} | "
              f"{r['rank_spread_s']} | {r['load_1min'][0]} → {r['load_1min'][1]} |")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 short videos, 1 process, balanced with overlap")
    parser.add_argument("--steps", type=int, default=1, help="denoising steps (1: the CPU side dominates)")
    parser.add_argument("--workdir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "m3ddm_bench_batch")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--only", nargs="+", default=None, help="run only these configurations (e.g. 2p-balanced-1w)")
    args = parser.parse_args(argv)
    lengths, configs = (QUICK_LENGTHS, QUICK_CONFIGS) if args.quick else (LENGTHS, CONFIGS)
    if args.only:
        configs = tuple(c for c in CONFIGS if c.label in args.only)
        if not configs:
            parser.error(f"--only: none of {args.only} is one of {[c.label for c in CONFIGS]}")
    videos = make_videos(args.workdir / "videos", lengths)
    commit = _git_commit()
    rows = []
    for config in configs:
        rows.append(measure(config, videos, args.workdir, args.steps))
        print(f"{config.label}: {rows[-1]['wall_s']} s, load {rows[-1]['load_1min']}", file=sys.stderr, flush=True)
    result = dict(
        command=" ".join(["python benchmarks/bench_batch.py", *(sys.argv[1:] if argv is None else argv)]),
        videos=len(videos), frames=list(lengths), steps=args.steps, machine=_machine(),
        date=time.strftime("%Y-%m-%d"), commit=commit, rows=rows,
    )
    print(f"\n{len(videos)} videos ({min(lengths)}-{max(lengths)} frames, {sum(lengths)} in all), "
          f"configs/predict_tiny.yaml, {args.steps} step(s); {result['machine']}; commit {commit}")
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
