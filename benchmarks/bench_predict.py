"""Prediction cost per output frame as videos get longer: dense vs coarse-to-fine, batched vs not.

For videos of N, 2N, 4N and 8N frames (generated, 64x48 at 30 fps, outpainted to 9:16) it runs
``python -m lightning_m3ddm predict`` end to end (probe, prepare, plan, generate, decode,
composite, H.264) with

* schedule ``dense`` (stride 1 only: a chain of windows, each guided by the previous one) or
  ``hybrid`` (paper 3.3 coarse-to-fine, strides (15, 5, 1) as the released script; levels whose
  key-frame grid is shorter than a window are skipped, so level "5" appears from 76 frames and
  level "15" from 226);
* ``max_batch`` 8 (independent windows of a level share one UNet call) or 1 (one window per call),

and reports seconds (wall and CPU) per output frame, UNet calls per output frame (counted by a
forward hook on the UNet), UNet batch items per output frame (windows x guidance branches,
summed over calls), and peak RSS. Each run is a fresh process (peak RSS only ever grows), except
with ``--quick``, where every run shares one process (start-up alone costs ~10 s here).

The model is configs/predict_tiny.yaml: a tiny random-weight UNet (32 channels, 8x8 latents)
with 2 DDPM steps. It measures the pipeline's scaling and overheads (planning, batching, latent
store, decode and write), not the speed of the full model, whose UNet dominates everything:
see bench_unet.py for that. With ``--device cuda`` (needs a GPU) the same runs use a full-size
UNet (the released widths, random weights) on a 256-pixel canvas (32x32 latents) in float16.

    python benchmarks/bench_predict.py                 # full table, CPU (~7 min per repeat on 2 busy cores)
    python benchmarks/bench_predict.py --quick         # smoke test (~30 s)
    python benchmarks/bench_predict.py --device cuda   # full-size UNet on a GPU
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# Pure planning code (no torch): the parent process stays light; only workers import the model.
from lightning_m3ddm.coarse_to_fine import ScheduleConfig, batch_plan  # noqa: E402

TINY_CONFIG = REPO / "configs" / "predict_tiny.yaml"
TARGET = "9:16"
STRIDES = (15, 5, 1)  # configs/predict_tiny.yaml and the released script
GUIDANCE_BRANCHES = 3  # eq. 4 with s1, s2 != 1: three UNet branches per window

# The released widths (M3DDMUNet's defaults): what --device cuda runs.
FULL_UNET = dict(
    block_out_channels=[320, 640, 1280, 1280], layers_per_block=2, norm_num_groups=32, attention_head_dim=8,
    cross_attention_dim=320, temporal_position_embed_dim=320,
)


@dataclass(frozen=True)
class RunSpec:
    """One predict run: one video through one schedule."""

    frames: int
    schedule: str  # "dense" or "hybrid"
    max_batch: int
    steps: int
    device: str = "cpu"
    model: str = "tiny"  # "tiny" (configs/predict_tiny.yaml) or "full" (FULL_UNET, 256 canvas)
    threads: int = 1

    @property
    def dense_threshold(self) -> int:
        # Videos below the threshold are planned densely: forcing it either way makes the
        # schedule the one asked for at every length.
        return self.frames + 1 if self.schedule == "dense" else 0

    @property
    def video_size(self) -> tuple[int, int]:
        return (64, 48) if self.model == "tiny" else (320, 240)

    def plan_stats(self) -> dict:
        """What the planner says about this run (windows, levels, batches, expected UNet calls)."""
        config = ScheduleConfig(strides=STRIDES, dense_threshold=self.dense_threshold, max_batch=self.max_batch)
        plan = config.plan(self.frames)
        batches = sum(len(level) for level in batch_plan(plan, self.max_batch))
        return dict(
            mode=plan.mode,
            level_strides=[level.stride for level in plan.levels],
            windows=len(plan.windows),
            batches=batches,
            expected_unet_calls=batches * self.steps,  # DDPM: one UNet call per step per batch
        )


# ------------------------------------------------------------------------------------------------
# worker side: imports torch / lightning, runs the CLI, measures


def _peak_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _make_probe():
    """A Lightning callback that times predict's stages and counts UNet calls (built lazily: lightning is heavy)."""
    import lightning as L
    import torch

    from lightning_m3ddm.predict.writer import OutpaintingWriter

    class PredictProbe(L.Callback):
        def __init__(self):
            self.stats: dict = dict(unet_calls=0, unet_items=0, prepare_s=0.0, generate_s=0.0, write_s=0.0)

        def _clock(self, device) -> tuple[float, float]:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            return time.perf_counter(), time.process_time()

        def _timed(self, name: str, method, device, after=None):
            def wrapper(*args, **kwargs):
                wall, _ = self._clock(device)
                result = method(*args, **kwargs)
                self.stats[name] += self._clock(device)[0] - wall
                if after is not None:
                    after(*args)
                return result

            return wrapper

        def _count(self, module, args) -> None:
            self.stats["unet_calls"] += 1
            self.stats["unet_items"] += int(args[0].shape[0])  # windows x guidance branches

        def _coverage(self, info, plan, latents, *rest) -> None:
            self.stats["frames_generated"] = int(latents.generated.written.sum())
            self.stats["plan_windows"] = len(plan.windows)

        def on_predict_start(self, trainer, pl_module) -> None:
            device = pl_module.device
            self.device = device
            self.stats["rss_before_predict_mib"] = round(_peak_rss_mib(), 1)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            pipeline = pl_module.pipeline
            self.hook = pl_module.unet.register_forward_pre_hook(self._count)
            # Instance attributes shadow the methods for this run only.
            pipeline.prepare = self._timed("prepare_s", pipeline.prepare, device)
            pipeline.generate = self._timed("generate_s", pipeline.generate, device, after=self._coverage)
            for writer in trainer.callbacks:
                if isinstance(writer, OutpaintingWriter):  # decode + composite + H.264 (+ audio)
                    writer.write = self._timed("write_s", writer.write, device)
            self.start = self._clock(device)

        def on_predict_end(self, trainer, pl_module) -> None:
            wall, cpu = self._clock(self.device)
            self.stats["total_s"] = wall - self.start[0]
            self.stats["total_cpu_s"] = cpu - self.start[1]
            if self.device.type == "cuda":
                self.stats["gpu_peak_mib"] = round(torch.cuda.max_memory_allocated(self.device) / 2**20, 1)
            self.hook.remove()

    return PredictProbe()


def _cli_args(run: RunSpec, video: Path, out_dir: Path) -> list[str]:
    args = [
        "predict", "--config", str(TINY_CONFIG), "--input", str(video), "--target_ratio", TARGET,
        "--output_dir", str(out_dir),
        "--model.init_args.schedule.max_batch", str(run.max_batch),
        "--model.init_args.schedule.dense_threshold", str(run.dense_threshold),
        "--model.init_args.schedule.strides", json.dumps(list(STRIDES)),
        "--model.init_args.sampling.num_inference_steps", str(run.steps),
        # one video, timed stage by stage in one thread: no loader workers, no background writes
        "--data.init_args.num_workers", "0", "--writer.background", "false",
    ]
    if run.model == "full":
        args += ["--model.init_args.unet", json.dumps(FULL_UNET), "--model.init_args.canvas_size", "256"]
    if run.device == "cuda":
        args += ["--trainer.accelerator", "gpu", "--model.init_args.dtype", "float16"]
    return args


def _count_frames(path: Path) -> int:
    from lightning_m3ddm.video.decode import iter_frames

    return sum(1 for _ in iter_frames(path))


def _worker_run(run: RunSpec, workdir: Path, isolated: bool) -> dict:
    from unittest import mock

    from lightning_m3ddm import cli
    from lightning_m3ddm.video.samples import write_sample_video

    width, height = run.video_size
    video = workdir / "videos" / f"clip_{run.frames}f_{width}x{height}.mp4"
    if not video.exists():
        video.parent.mkdir(parents=True, exist_ok=True)
        partial = video.with_name(f".{video.stem}.{os.getpid()}.mp4")
        write_sample_video(partial, run.frames, width, height, fps=30)
        partial.rename(video)
    probe = _make_probe()
    instantiate_trainer = cli.M3DDMCLI.instantiate_trainer

    def trainer_with_probe(self, **kwargs):
        trainer = instantiate_trainer(self, **kwargs)
        trainer.callbacks.append(probe)
        return trainer

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(dir=workdir) as out_dir:
        # exactly `python -m lightning_m3ddm predict ...`, with the probe added to the trainer's callbacks
        with mock.patch.object(cli.M3DDMCLI, "instantiate_trainer", trainer_with_probe):
            try:
                cli.main(_cli_args(run, video, Path(out_dir)))
            except SystemExit as done:
                if done.code:
                    raise RuntimeError(f"predict failed (exit status {done.code}) for {run}") from None
        if "total_s" not in probe.stats:
            raise RuntimeError(f"the probe saw no prediction for {run}")
        outputs = sorted(Path(out_dir).glob("*.mp4"))
        output_frames = _count_frames(outputs[0]) if len(outputs) == 1 else None
    stats = dict(probe.stats)
    stats.update(
        output_frames=output_frames,
        peak_rss_mib=round(_peak_rss_mib(), 1),
        rss_isolated=isolated,
        load_1min=[round(load_before, 2), round(os.getloadavg()[0], 2)],
    )
    return stats


def worker_main(spec_path: Path) -> None:
    """Run every run of a spec file in this process; write the results next to it."""
    spec = json.loads(spec_path.read_text())
    runs = [RunSpec(**r) for r in spec["runs"]]
    import torch

    torch.set_num_threads(runs[0].threads)
    results = [_worker_run(run, Path(spec["workdir"]), isolated=len(runs) == 1) for run in runs]
    partial = spec_path.with_suffix(".partial")
    partial.write_text(json.dumps(results))
    partial.rename(spec_path.with_suffix(".result.json"))


# ------------------------------------------------------------------------------------------------
# parent side: plans the runs, one process each, builds the table


@dataclass
class Row:
    frames: int
    schedule: str
    max_batch: int
    steps: int
    mode: str
    level_strides: list[int]
    windows: int
    batches: int
    expected_unet_calls: int
    unet_calls: int
    unet_items: int
    frames_generated: int
    output_frames: int | None
    total_s: float
    total_cpu_s: float
    prepare_s: float
    generate_s: float
    write_s: float
    s_per_frame: float
    cpu_s_per_frame: float
    generate_s_per_frame: float
    unet_calls_per_frame: float
    unet_items_per_frame: float
    windows_per_frame: float
    peak_rss_mib: float
    rss_before_predict_mib: float
    predict_rss_mib: float
    rss_isolated: bool
    load_1min: list[float]
    repeats: int
    gpu_peak_mib: float | None = None


def make_row(run: RunSpec, measured: dict) -> Row:
    plan = run.plan_stats()
    n = run.frames
    return Row(
        frames=n, schedule=run.schedule, max_batch=run.max_batch, steps=run.steps, **plan,
        unet_calls=measured["unet_calls"], unet_items=measured["unet_items"],
        frames_generated=measured["frames_generated"], output_frames=measured["output_frames"],
        total_s=round(measured["total_s"], 3), total_cpu_s=round(measured["total_cpu_s"], 3),
        prepare_s=round(measured["prepare_s"], 3), generate_s=round(measured["generate_s"], 3),
        write_s=round(measured["write_s"], 3),
        s_per_frame=round(measured["total_s"] / n, 4), cpu_s_per_frame=round(measured["total_cpu_s"] / n, 4),
        generate_s_per_frame=round(measured["generate_s"] / n, 4),
        unet_calls_per_frame=round(measured["unet_calls"] / n, 3),
        unet_items_per_frame=round(measured["unet_items"] / n, 3),
        windows_per_frame=round(plan["windows"] / n, 3),
        peak_rss_mib=measured["peak_rss_mib"], rss_before_predict_mib=measured["rss_before_predict_mib"],
        # what predict itself adds to the peak of start-up (imports, model); meaningful in a fresh process only
        predict_rss_mib=round(measured["peak_rss_mib"] - measured["rss_before_predict_mib"], 1),
        rss_isolated=measured["rss_isolated"], load_1min=measured["load_1min"], repeats=measured["repeats"],
        gpu_peak_mib=measured.get("gpu_peak_mib"),
    )


def run_workers(groups: list[list[RunSpec]], workdir: Path, threads: int) -> list[list[dict]]:
    """Each group of runs in its own fresh interpreter; the measurements of each group."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONWARNINGS": "ignore"}
    results = []
    for i, group in enumerate(groups):
        spec = workdir / f"spec_{os.getpid()}_{i}.json"
        spec.write_text(json.dumps(dict(workdir=str(workdir), runs=[asdict(r) for r in group])))
        done = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--worker", str(spec)],
            cwd=REPO, env=env, capture_output=True, text=True,
        )
        spec.unlink()
        if done.returncode != 0:
            raise RuntimeError(f"worker for {group} failed:\n{done.stderr[-4000:]}")
        result = spec.with_suffix(".result.json")
        results.append(json.loads(result.read_text()))
        result.unlink()
        for run, measured in zip(group, results[-1]):
            print(f"{run.frames:5d} frames {run.schedule:6s} max_batch {run.max_batch}: "
                  f"{measured['total_s']:.2f} s, {measured['unet_calls']} UNet calls, "
                  f"load {measured['load_1min']}", file=sys.stderr, flush=True)
    return results


TIMES = ("total_s", "total_cpu_s", "prepare_s", "generate_s", "write_s")


def combine_repeats(runs: list[dict]) -> dict:
    """Median times over repeats of one run; counts must agree; the largest peak RSS."""
    import statistics

    first = runs[0]
    for other in runs[1:]:
        for key in ("unet_calls", "unet_items", "frames_generated", "output_frames"):
            if other[key] != first[key]:
                raise RuntimeError(f"repeats disagree on {key}: {first[key]} vs {other[key]}")
    out = dict(first)
    for key in TIMES:
        out[key] = statistics.median(r[key] for r in runs)
    worst = max(runs, key=lambda r: r["peak_rss_mib"])
    out["peak_rss_mib"], out["rss_before_predict_mib"] = worst["peak_rss_mib"], worst["rss_before_predict_mib"]
    out["load_1min"] = [min(r["load_1min"][0] for r in runs), max(r["load_1min"][1] for r in runs)]
    out["repeats"] = len(runs)
    return out


def _git_commit() -> str:
    try:
        done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "benchmarks/bench_predict.py", "lightning_m3ddm"],
                               cwd=REPO, capture_output=True, text=True).stdout.strip()
        return done.stdout.strip() + (" (+ uncommitted changes)" if dirty else "")
    except OSError:
        return "unknown"


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} CPU cores, Python {platform.python_version()}"


def print_table(rows: list[Row]) -> None:
    print("| frames | schedule | max_batch | levels (strides) | windows | UNet calls | calls / frame | "
          "batch items / frame | s / frame (wall) | CPU s / frame | generate s / frame | peak RSS MiB | "
          "predict's share of it MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r.frames} | {r.schedule} | {r.max_batch} | {','.join(map(str, r.level_strides))} | {r.windows} | "
              f"{r.unet_calls} | {r.unet_calls_per_frame:.3f} | {r.unet_items_per_frame:.3f} | {r.s_per_frame:.4f} | "
              f"{r.cpu_s_per_frame:.4f} | {r.generate_s_per_frame:.4f} | {r.peak_rss_mib:.0f} | "
              f"{r.predict_rss_mib:.0f}{'' if r.rss_isolated else ' (shared process)'} |")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="20 and 80 frames, 1 step, one process: a ~30 s smoke test")
    parser.add_argument("--base-frames", type=int, default=None, help="N: videos of N, 2N, 4N, 8N frames (default 60)")
    parser.add_argument("--multiples", type=int, nargs="+", default=None, help="lengths as multiples of N (1 2 4 8)")
    parser.add_argument("--max-batch", type=int, default=8, help="windows per UNet call of the batched runs")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (tiny: 2 as the config; cuda: 10)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--model", choices=("tiny", "full"), default=None,
                        help="tiny: configs/predict_tiny.yaml (default on cpu); full: released widths (default on cuda)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch / OpenMP threads per run (1: stable on a shared machine)")
    parser.add_argument("--workdir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "m3ddm_bench_predict",
                        help="cache for the generated videos; outputs are deleted after each run")
    parser.add_argument("--repeats", type=int, default=1,
                        help="run each configuration this many times (interleaved, fresh processes); median times")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--worker", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        worker_main(args.worker)
        return {}

    model = args.model or ("full" if args.device == "cuda" else "tiny")
    # --quick: 1 step, and 80 frames as the longer video: the shortest with a coarse level (stride 5)
    steps = args.steps or (1 if args.quick else 2 if model == "tiny" else 10)
    base = args.base_frames or (20 if args.quick else 60)
    multiples = args.multiples or ([1, 4] if args.quick else [1, 2, 4, 8])
    schedules = [("dense", 1), ("dense", args.max_batch), ("hybrid", 1), ("hybrid", args.max_batch)]
    if args.quick:
        # dense chains never batch (each window waits for the previous); one dense run per length is enough
        schedules = [("dense", args.max_batch), ("hybrid", 1), ("hybrid", args.max_batch)]
    runs = [RunSpec(base * m, sched, mb, steps, args.device, model, args.threads)
            for m in multiples for sched, mb in schedules]
    args.workdir.mkdir(parents=True, exist_ok=True)
    # --quick: one process for all runs (start-up costs ~10 s); otherwise one each, for peak RSS.
    # Repeats are interleaved (every configuration once, then again) so that load drifts hit all alike.
    groups = [runs] * args.repeats if args.quick else [[r] for _ in range(args.repeats) for r in runs]
    commit = _git_commit()  # before the runs: others may commit while they go
    load_before = os.getloadavg()
    started = time.perf_counter()
    measured = [m for group in run_workers(groups, args.workdir, args.threads) for m in group]
    per_run = [combine_repeats(measured[i :: len(runs)]) for i in range(len(runs))]
    rows = [make_row(run, m) for run, m in zip(runs, per_run)]

    command = " ".join(["python benchmarks/bench_predict.py", *(sys.argv[1:] if argv is None else argv)])
    result = dict(
        command=command,
        model=("configs/predict_tiny.yaml: random-weight UNet, 32 channels, 8x8 latents (64-px canvas)"
               if model == "tiny" else "released UNet widths, random weights, 32x32 latents (256-px canvas)"),
        device=args.device,
        video=f"generated, {runs[0].video_size[0]}x{runs[0].video_size[1]}, 30 fps, outpainted to {TARGET}",
        steps=steps, threads=args.threads, repeats=args.repeats, strides=list(STRIDES), guidance_branches=GUIDANCE_BRANCHES,
        machine=_machine(), date=time.strftime("%Y-%m-%d"), commit=commit,
        load_1min_before=round(load_before[0], 2), load_1min_after=round(os.getloadavg()[0], 2),
        wall_s=round(time.perf_counter() - started, 1),
        rows=[asdict(r) for r in rows],
    )
    print(f"\n{result['model']}; {steps} DDPM steps, {GUIDANCE_BRANCHES} guidance branches per window; "
          f"{args.threads} thread(s); {result['video']}; medians of {args.repeats} run(s)")
    print(f"load average (1 min) {result['load_1min_before']} -> {result['load_1min_after']} on {os.cpu_count()} cores; "
          f"commit {result['commit']}; {result['wall_s']} s in all")
    print_table(rows)
    if args.json:
        tmp = args.json.with_name(f".{args.json.name}.partial")
        tmp.write_text(json.dumps(result, indent=2))
        tmp.rename(args.json)
    return result


if __name__ == "__main__":
    main()
