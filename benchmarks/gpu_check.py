"""GPU acceptance run of sharded training and prediction: one command, a JSON and a Markdown row.

Measured (``bash benchmarks/gpu_check.sh``, at most about 8 minutes on one H200):

1. training step of the full-configuration UNet (1.3B) in bf16 under the sharded strategy's
   own sharding (``shard_unet`` with ``ShardingSettings(param_dtype="bfloat16")``, FSDP2 over
   1 rank; autocast as ``precision: bf16-mixed``), 16 frames, 16 global frames, 32x32
   latents, Adam, gradients clipped at global norm 1.0: the largest batch that fits (doubling
   from 1), with step time, samples/s, MFU (the UNet's model FLOPs, counted on the meta
   device, over the dense bf16 peak) and peak memory; then the same with activation
   checkpointing (larger batches) and with ``torch.compile`` per block, as the budget allows;
2. the same sharded step on 2 ranks when 2 GPUs are visible (per-GPU batch of step 1);
3. prediction's full-size UNet at 256 px (32x32 latents, 16 frames, dual guidance, 3
   branches) in fp16 and bf16: seconds per output frame for 50 steps, extrapolated from a
   few timed steps, and peak memory;
4. optionally the released UNet side by side, same weights and inputs (bench_unet.py's
   folder and official_unet_driver.py; its source and environment are brought to the
   machine by you, never committed): ``--official-src`` and ``--official-python``.

``--dry-run`` runs the script on CPU with the tiny configuration in float32 and batch 1, in
seconds, for the test suite: the training steps (eager, activation checkpointing), predict
and (when given) the released side by side; not ``torch.compile`` (tracing every block takes
minutes on a CPU) nor the 2-rank run (tests/test_sharded.py covers 2 sharded ranks).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import math
import os
import socket
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

FULL_WIDTHS = (320, 640, 1280, 1280)
TINY_WIDTHS = (32, 64, 64, 64)
PREDICT_STEPS = 50  # the paper's DDPM steps


@dataclass
class Shape:
    widths: tuple[int, ...]
    frames: int
    global_frames: int
    size: int  # latent height = width


@dataclass
class StepResult:
    name: str
    ranks: int
    batch: int  # per rank
    activation_checkpointing: bool
    compiled: bool
    step_s: float
    samples_per_s: float
    peak_mem_gib: float
    mfu: float | None
    tflops_per_gpu: float


def extrapolated_seconds_per_frame(step_seconds: list[float], frames: int, steps: int = PREDICT_STEPS) -> float:
    """Seconds per output frame of a ``steps``-step sampling of one ``frames``-frame window."""
    return statistics.median(step_seconds) * steps / frames


def mfu(flops_per_sample: float, batch: int, step_s: float, peak_flops: float | None) -> float | None:
    """Model FLOPs utilisation of one rank: achieved model FLOP/s over the peak."""
    if not peak_flops:
        return None
    return flops_per_sample * batch / step_s / peak_flops


def markdown_row(report: dict) -> str:
    """One table row: date, device, best training step, compile, 2 ranks, predict, released."""
    def best(kind):
        rows = [r for r in report["train"] if r["name"] == kind]
        return max(rows, key=lambda r: r["samples_per_s"]) if rows else None

    def cell(r):
        if r is None:
            return "—"
        m = f"{100 * r['mfu']:.1f}% MFU" if r["mfu"] is not None else "MFU n/a"
        return f"b{r['batch']}: {r['step_s']:.3f} s, {r['samples_per_s']:.2f} samples/s, {m}, {r['peak_mem_gib']:.1f} GiB"

    pred = "; ".join(
        f"{p['dtype']}: {p['s_per_frame']:.3f} s/frame, {p['peak_mem_gib']:.1f} GiB" for p in report["predict"]
    )
    official = report.get("official", {})
    released = official.get("summary", official.get("reason", "—"))
    cells = [report["date"], report["device"], cell(best("eager")), cell(best("eager+ac")), cell(best("compile")),
             cell(best("2 ranks")), pred or "—", released]
    return "| " + " | ".join(cells) + " |"


MARKDOWN_HEADER = (
    "| date | device | train eager (largest batch) | + activation ckpt | + torch.compile | 2 ranks | "
    "predict 256 px, 50 steps | released UNet |\n|---|---|---|---|---|---|---|---|"
)


# -- measurement ------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _init_group(rank: int, world: int, port: int, cuda: bool) -> None:
    import torch
    import torch.distributed as dist

    if cuda:
        torch.cuda.set_device(rank)
    dist.init_process_group("nccl" if cuda else "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)


def _inputs(shape: Shape, batch: int, in_channels: int, device):
    import torch

    g = torch.Generator().manual_seed(0)
    b, f, s = batch, shape.frames, shape.size
    lat = in_channels // 2
    return {
        "sample": torch.randn(b, in_channels, f, s, s, generator=g).to(device),
        "timestep": torch.randint(0, 1000, (b,), generator=g).to(device),
        "fps": torch.randint(1, 31, (b,), generator=g).to(device),
        "global_latents": torch.randn(b, shape.global_frames, lat, s, s, generator=g).to(device),
        "target": torch.randn(b, lat, f, s, s, generator=g).to(device),
    }


def train_step_once(shape: Shape, batch: int, *, ac: bool, compiled: bool, dry_run: bool, steps: int, warmup: int,
                    world: int = 1, rank: int = 0) -> dict:
    """Time the sharded training step (process group already set up); raises on OOM."""
    import torch
    import torch.nn.functional as F
    from torch.distributed.device_mesh import init_device_mesh

    from lightning_m3ddm.distributed import ShardingSettings, full, shard_unet
    from lightning_m3ddm.models import M3DDMUNet

    cuda = not dry_run
    device = torch.device("cuda", rank) if cuda else torch.device("cpu")
    settings = ShardingSettings(param_dtype=None if dry_run else "bfloat16", activation_checkpointing=ac,
                                compile_blocks=compiled)
    torch.manual_seed(0)
    with torch.device(device):
        unet = M3DDMUNet(block_out_channels=shape.widths)
    shard_unet(unet, init_device_mesh(device.type, (world,)), settings)
    optimizer = torch.optim.Adam(unet.parameters(), lr=1e-5)
    io = _inputs(shape, batch, unet.config.in_channels, device)
    autocast = torch.autocast("cuda", torch.bfloat16) if cuda else torch.autocast("cpu", enabled=False)

    def step():
        with autocast:
            out = unet(io["sample"], io["timestep"], fps=io["fps"], global_latents=io["global_latents"]).sample
        loss = F.mse_loss(out.float(), io["target"])
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(list(unet.parameters()), 1.0, foreach=True)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return full(norm)

    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        if cuda:
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        norm = step()
        if cuda:
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    if not math.isfinite(float(norm)):
        raise RuntimeError("non-finite gradient norm")
    peak = torch.cuda.max_memory_allocated(device) if cuda else 0
    del unet, optimizer, io
    return {"step_s": statistics.median(times), "peak_mem_bytes": peak}


def _release_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def measure_train(name, shape, batch, *, ac, compiled, args, flops_per_sample, peak, world=1, rank=0) -> StepResult:
    r = train_step_once(shape, batch, ac=ac, compiled=compiled, dry_run=args.dry_run, steps=args.steps,
                        warmup=args.warmup, world=world, rank=rank)
    return StepResult(
        name=name, ranks=world, batch=batch, activation_checkpointing=ac, compiled=compiled, step_s=r["step_s"],
        samples_per_s=batch * world / r["step_s"], peak_mem_gib=r["peak_mem_bytes"] / 2**30,
        mfu=mfu(flops_per_sample, batch, r["step_s"], peak), tflops_per_gpu=flops_per_sample * batch / r["step_s"] / 1e12,
    )


def largest_batch(name, shape, *, ac, compiled, args, flops_per_sample, peak, start, deadline, log) -> list[StepResult]:
    """Double the batch from ``start`` until it no longer fits (or the cap or the deadline)."""
    import torch

    results, batch = [], start
    while batch <= args.max_batch and time.perf_counter() < deadline:
        try:
            results.append(measure_train(name, shape, batch, ac=ac, compiled=compiled, args=args,
                                         flops_per_sample=flops_per_sample, peak=peak))
            log(f"{name} batch {batch}: {asdict(results[-1])}")
        except torch.OutOfMemoryError:
            log(f"{name} batch {batch}: out of memory")
            break
        finally:
            _release_memory()
        batch *= 2
    return results


def _two_rank_worker(rank, port, shape, batch, args, flops_per_sample, peak, queue):
    import torch.distributed as dist

    _init_group(rank, 2, port, cuda=not args.dry_run)
    try:
        r = measure_train("2 ranks", shape, batch, ac=False, compiled=False, args=args,
                          flops_per_sample=flops_per_sample, peak=peak, world=2, rank=rank)
        if rank == 0:
            queue.put(asdict(r))
    finally:
        dist.destroy_process_group()


def measure_two_ranks(shape, batch, args, flops_per_sample, peak) -> dict | None:
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    mp.start_processes(_two_rank_worker, args=(_free_port(), shape, batch, args, flops_per_sample, peak, queue),
                       nprocs=2, start_method="spawn")
    return queue.get() if not queue.empty() else None


def measure_predict(shape: Shape, dtype_name: str, args) -> dict:
    """Guided denoising steps of one window with prediction's sampler; seconds per output frame."""
    import torch

    from lightning_m3ddm.conditioning import Condition
    from lightning_m3ddm.models import M3DDMUNet
    from lightning_m3ddm.sampling import Guidance, guided_noise

    cuda = not args.dry_run
    device = torch.device("cuda" if cuda else "cpu")
    dtype = getattr(torch, dtype_name)
    torch.manual_seed(0)
    with torch.device(device):
        unet = M3DDMUNet(block_out_channels=shape.widths).to(dtype).eval()
    io = _inputs(shape, 1, unet.config.in_channels, device)
    lat = unet.config.out_channels
    latents = io["sample"][:, :lat].to(dtype)
    condition = Condition(io["sample"][:, lat:2 * lat].to(dtype), io["sample"][:, -1:].to(dtype))
    null = Condition(torch.zeros_like(condition.masked_latents), torch.ones_like(condition.mask))
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = []
    with torch.no_grad():
        tokens = unet.encode_global_frames(io["global_latents"])
        null_tokens = unet.encode_global_frames(torch.zeros_like(io["global_latents"]))
        for i in range(args.warmup + args.predict_steps):
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            guided_noise(unet, latents, io["timestep"], condition, null, tokens, null_tokens, io["fps"], Guidance())
            if cuda:
                torch.cuda.synchronize()
            if i >= args.warmup:
                times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() if cuda else 0
    del unet
    _release_memory()
    return {"dtype": dtype_name, "step_s": statistics.median(times), "timed_steps": len(times),
            "s_per_frame": extrapolated_seconds_per_frame(times, shape.frames), "peak_mem_gib": peak / 2**30}


def measure_official(shape: Shape, args) -> dict:
    """The released UNet beside ours, same weights and inputs (bench_unet.py's folder), one
    training step each in the run's dtype."""
    if not (args.official_src and args.official_python):
        return {"status": "skipped", "reason": "released code not given (--official-src, --official-python)"}
    import bench_unet as bu

    work = Path(tempfile.mkdtemp(prefix="gpu_check_official_"))
    bu.write_compare_folder(work, shape.widths, shape.frames, shape.global_frames, shape.size, 0)
    device, dtype = ("cpu", "float32") if args.dry_run else ("cuda", "bfloat16")
    spec = bu.Spec(mode="train", widths=shape.widths, frames=shape.frames, global_frames=shape.global_frames,
                   size=shape.size, device=device, dtype=dtype, warmup=args.warmup, repeats=args.steps,
                   folder=str(work), save_output=str(work / "ours.safetensors"))
    ours = bu.launch_ours(spec, args.timeout)
    official = bu.launch([args.official_python, str(HERE / "official_unet_driver.py"), "--official-src",
                          args.official_src, "--folder", str(work), "--mode", "train", "--warmup", str(args.warmup),
                          "--repeats", str(args.steps), "--device", device, "--dtype", dtype,
                          "--save-output", str(work / "official.safetensors")], args.timeout, "released UNet")
    out = {"status": "ok", "ours": ours, "official": official,
           "output_max_abs_diff": bu._max_abs_diff(str(work / "ours.safetensors"), str(work / "official.safetensors"))}
    if ours.get("status") == "ok" and "median" in official:
        o, r = ours["median"]["forward_backward_s"], official["median"]["forward_backward_s"]
        out["summary"] = (f"train step {o:.3f} s vs released {r:.3f} s ({r / o:.2f}x), memory "
                          f"{ours['peak_mem_bytes'] / 2**30:.1f} vs {official['peak_mem_bytes'] / 2**30:.1f} GiB")
    return out


# -- driver -----------------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny configuration, float32, seconds")
    p.add_argument("--output", default="gpu_check.json")
    p.add_argument("--budget-s", type=float, default=360.0, help="stop starting new measurements after this")
    p.add_argument("--steps", type=int, default=3, help="timed training steps per measurement")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--predict-steps", type=int, default=4, help="timed denoising steps (extrapolated to 50)")
    p.add_argument("--max-batch", type=int, default=64)
    p.add_argument("--peak-tflops", type=float, default=0.0, help="device peak (default: preset by device name)")
    p.add_argument("--official-src", default="", help="src folder of the released M3DDM code (optional)")
    p.add_argument("--official-python", default="", help="python of an environment that runs the released code")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per side-by-side worker")
    args = p.parse_args(argv)
    if args.dry_run:
        args.steps, args.warmup, args.predict_steps, args.max_batch = 1, 1, 1, 1
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    import torch
    import torch.distributed as dist

    from lightning_m3ddm.throughput import peak_flops_of, unet_flops_per_sample

    t0 = time.perf_counter()
    deadline = t0 + args.budget_s
    cuda = not args.dry_run
    if cuda and not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device visible (use --dry-run to check the script on CPU)")
    shape = Shape(TINY_WIDTHS, 4, 2, 8) if args.dry_run else Shape(FULL_WIDTHS, 16, 16, 32)
    device_name = torch.cuda.get_device_name() if cuda else "cpu (dry run)"
    peak = args.peak_tflops * 1e12 if args.peak_tflops else (peak_flops_of(device_name) if cuda else None)

    def log(msg):
        print(f"[{time.perf_counter() - t0:6.1f} s] {msg}", file=sys.stderr, flush=True)

    config = {"block_out_channels": shape.widths}
    flops_per_sample = unet_flops_per_sample(config, shape.frames, (shape.size, shape.size), shape.global_frames)
    log(f"{device_name}: {flops_per_sample / 1e12:.3f} TFLOP per training sample, peak {peak}")

    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
        "device": device_name, "gpus": torch.cuda.device_count() if cuda else 0, "dry_run": args.dry_run,
        "torch": torch.__version__, "shape": asdict(shape), "flops_per_sample": flops_per_sample,
        "peak_flops": peak, "train": [], "predict": [],
    }
    _init_group(0, 1, _free_port(), cuda)
    try:
        eager = largest_batch("eager", shape, ac=False, compiled=False, args=args, flops_per_sample=flops_per_sample,
                              peak=peak, start=1, deadline=deadline, log=log)
        report["train"] += [asdict(r) for r in eager]
        best = max((r.batch for r in eager), default=1)
        report["train"] += [asdict(r) for r in largest_batch(
            "eager+ac", shape, ac=True, compiled=False, args=args, flops_per_sample=flops_per_sample, peak=peak,
            start=best, deadline=deadline, log=log)]
        if args.dry_run:
            report["compile_error"] = "skipped in the dry run"
        elif time.perf_counter() < deadline:
            try:
                report["train"].append(asdict(measure_train("compile", shape, best, ac=False, compiled=True, args=args,
                                                            flops_per_sample=flops_per_sample, peak=peak)))
                log(f"compile: {report['train'][-1]}")
            except Exception as err:  # a compiler failure is a result, not the end of the run
                report["compile_error"] = f"{type(err).__name__}: {err}"[:2000]
                log(f"compile failed: {report['compile_error']}")
            _release_memory()
    finally:
        dist.destroy_process_group()
    if cuda and torch.cuda.device_count() >= 2 and time.perf_counter() < deadline:
        two = measure_two_ranks(shape, best, args, flops_per_sample, peak)
        if two:
            report["train"].append(two)
            log(f"2 ranks: {two}")
    else:
        report["two_ranks"] = "skipped: " + ("the dry run" if not cuda else "fewer than 2 GPUs visible or out of time")
    for dtype in ("float32",) if args.dry_run else ("float16", "bfloat16"):
        report["predict"].append(measure_predict(shape, dtype, args))
        log(f"predict: {report['predict'][-1]}")
    report["official"] = measure_official(shape, args)
    report["wall_s"] = time.perf_counter() - t0
    Path(args.output).write_text(json.dumps(report, indent=2))
    print(MARKDOWN_HEADER)
    print(markdown_row(report))
    return report


if __name__ == "__main__":
    main()
