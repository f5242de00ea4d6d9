"""UNet speed and memory: tiny, mid and full configurations, and the released implementation side by side.

Three measurements, each configuration in a process of its own (so peak memory is clean):

1. Scaling (``--configs tiny,mid,full``): forward (no grad, inference) and one training
   forward+backward, without and with gradient checkpointing, at batch 1, 16 frames,
   16 global frames, 32x32 latents. On CPU in float32; with ``--device cuda`` in bfloat16,
   with the model FLOPs utilisation (MFU): the FLOPs of one training step counted with
   ``torch.utils.flop_counter.FlopCounterMode`` on the meta device (attention as its two
   matmuls, no recomputation), over the median step time, over the card's dense bf16 peak.
   A configuration that does not fit the machine is stopped by a memory guard before it
   passes the available memory and reported as skipped, with the reason.
2. Released implementation (``--official-src``/``--official-python``, optional): the same
   weights and inputs in our UNet and in the released ``UNet3DConditionModel`` (imported at
   run time by official_unet_driver.py from the path you give; nothing of it is in this
   repository), widths (64, 128, 128, 128), 8 frames, 8 global frames, 32x32 latents,
   float32, batch 1: one training forward+backward each (ours without checkpointing),
   alternating ours / released for ``--compare-rounds`` rounds in the same run.
3. Guided sampling (same folder): one denoising step with the paper's dual guidance. The
   released pipeline runs the UNet on 4 branches (and its global-frame encoder on every
   branch, every step); ours runs 3 branches on global-frame tokens computed once per window.
   FLOPs per step and seconds per step of both.

    python benchmarks/bench_unet.py --quick                      # smoke test, seconds
    python benchmarks/bench_unet.py                              # CPU tables (long: the full config)
    python benchmarks/bench_unet.py --skip-scaling \\
        --official-src /path/to/M3DDM/src --official-python /path/to/its/venv/bin/python
    python benchmarks/bench_unet.py --device cuda                # bf16 + MFU on a GPU
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

import unet_measure as um  # noqa: E402

# block_out_channels of each named configuration; everything else is M3DDMUNet's default
# (the released config: 2 layers per block, 8 heads, 32 groups, 320-wide global tokens).
CONFIGS = {
    "tiny": (32, 64, 64, 64),
    "mid": (128, 256, 512, 512),
    "full": (320, 640, 1280, 1280),
}
COMPARE_WIDTHS = (64, 128, 128, 128)  # the width issue 7 names for the side-by-side

# Targets of issue 7 for the side-by-side (ours without gradient checkpointing).
TARGET_SPEEDUP = 3.5
TARGET_MEMORY_RATIO = 0.35
TARGET_GUIDED_COST = 0.75


# -- pure helpers -----------------------------------------------------------------------------


def peak_tflops_for(device_name: str) -> float | None:
    """Dense bf16 peak of a known card from its CUDA device name, else None."""
    from lightning_m3ddm.throughput import peak_flops_of

    peak = peak_flops_of(device_name)
    return peak / 1e12 if peak else None


def model_flops_utilisation(flops: float, seconds: float, peak_tflops: float) -> float:
    """Achieved FLOP/s over the peak FLOP/s."""
    if seconds <= 0 or peak_tflops <= 0:
        raise ValueError("seconds and peak_tflops must be positive")
    return flops / seconds / (peak_tflops * 1e12)


def config_kwargs(widths: tuple[int, ...]) -> dict:
    return {"block_out_channels": tuple(widths)}


def official_config(widths: tuple[int, ...]) -> dict:
    """config.json for the released class (its own keys only) with our default architecture."""
    from lightning_m3ddm.models import M3DDMUNet

    keys = (
        "in_channels", "out_channels", "cross_attention_dim", "down_block_types", "up_block_types",
        "block_out_channels", "layers_per_block", "attention_head_dim", "norm_num_groups", "norm_eps",
        "flip_sin_to_cos", "freq_shift",
    )
    with _meta_device():
        config = dict(M3DDMUNet(**config_kwargs(widths)).config)
    out = {"_class_name": "UNet3DConditionModel"}
    out.update({k: list(config[k]) if isinstance(config[k], (list, tuple)) else config[k] for k in keys})
    return out


def _meta_device():
    import torch

    return torch.device("meta")


def fmt_s(x: float | None) -> str:
    return "—" if x is None else (f"{x:.3f}" if x < 10 else f"{x:.1f}")


def fmt_gib(x: float | None) -> str:
    return "—" if x is None else f"{x / um.GIB:.2f} GiB"


# -- the worker: one configuration, one process ------------------------------------------------


@dataclass
class Spec:
    """What one worker process measures."""

    mode: str  # forward | train | guided_step
    widths: tuple[int, ...]
    frames: int
    global_frames: int
    size: int
    batch: int = 1
    checkpointing: bool = False
    device: str = "cpu"
    dtype: str = "float32"
    warmup: int = 1
    repeats: int = 3
    budget_s: float = 0.0  # stop repeating once the timed runs took this long (0: no limit)
    seed: int = 0
    threads: int = 0
    memory_limit_bytes: int = 0
    folder: str = ""  # weights + inputs written for the side-by-side ("" = default init, random inputs)
    save_output: str = ""
    guidance: tuple[float, float] = (2.0, 4.0)
    count_flops: bool = False  # also count the FLOPs of this configuration (meta device, after measuring)


def make_inputs(widths, frames, global_frames, size, batch, seed, device="cpu"):
    """Seeded random inputs of one training example / one guided step (float32)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    shape = (batch, 4, frames, size, size)
    io = {
        "noisy_latents": torch.randn(shape, generator=g),
        "masked_latents": torch.randn(shape, generator=g),
        "mask": (torch.rand((batch, 1, frames, size, size), generator=g) > 0.5).float(),
        "null_masked_latents": torch.randn(shape, generator=g),
        "null_mask": torch.ones((batch, 1, frames, size, size)),
        "timestep": torch.randint(0, 1000, (batch,), generator=g),
        "fps": torch.randint(1, 31, (batch,), generator=g),
        "global_latents": torch.randn((batch, global_frames, 4, size, size), generator=g),
        "target": torch.randn(shape, generator=g),
    }
    return {k: v.to(device) for k, v in io.items()}


def run_worker(spec: Spec) -> dict:
    import torch
    import torch.nn.functional as F

    if spec.threads:
        torch.set_num_threads(spec.threads)
    from lightning_m3ddm.models import M3DDMUNet

    cuda = spec.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        raise SystemExit(f"--device {spec.device}: no CUDA device is available")
    baseline = um.rss_bytes()
    guard = um.MemoryGuard(spec.memory_limit_bytes) if spec.memory_limit_bytes and not cuda else None
    if guard:
        guard.__enter__()

    dtype = getattr(torch, spec.dtype)
    if spec.folder:
        from safetensors.torch import load_file

        from lightning_m3ddm.checkpoints import load_official_unet

        model = load_official_unet(spec.folder)
        io = load_file(os.path.join(spec.folder, "inputs.safetensors"))
    else:
        torch.manual_seed(spec.seed)
        model = M3DDMUNet(**config_kwargs(spec.widths))
        io = make_inputs(spec.widths, spec.frames, spec.global_frames, spec.size, spec.batch, spec.seed)
    model = model.to(device=spec.device, dtype=dtype)
    io = {k: (v.to(spec.device, dtype) if v.is_floating_point() else v.to(spec.device)) for k, v in io.items()}
    if cuda:
        torch.cuda.reset_peak_memory_stats()

    def unet_input(ctx_latents, mask):
        return torch.cat([io["noisy_latents"], ctx_latents, mask], 1)

    def forward_step() -> dict[str, float]:
        clock = um.PhaseClock(cuda)
        with torch.no_grad():
            forward_step.out = model(
                unet_input(io["masked_latents"], io["mask"]), io["timestep"], fps=io["fps"],
                global_latents=io["global_latents"],
            ).sample
        clock.lap("forward_s")
        return clock.times

    def train_step() -> dict[str, float]:
        model.zero_grad(set_to_none=True)
        clock = um.PhaseClock(cuda)
        out = model(
            unet_input(io["masked_latents"], io["mask"]), io["timestep"], fps=io["fps"],
            global_latents=io["global_latents"],
        ).sample
        loss = F.mse_loss(out.float(), io["target"].float())
        clock.lap("forward_s")
        loss.backward()
        clock.lap("backward_s")
        train_step.out = out.detach()
        return clock.total("forward_backward_s")

    if spec.mode == "guided_step":
        # imported here: the conditioning and sampling modules pull in more of diffusers
        from lightning_m3ddm.conditioning import Condition
        from lightning_m3ddm.sampling import Guidance, guided_noise

        model.eval()
        condition = Condition(io["masked_latents"], io["mask"])
        null = Condition(io["null_masked_latents"], io["null_mask"])
        with torch.no_grad():  # once per window in our sampler, not per step
            tokens = model.encode_global_frames(io["global_latents"])
            null_tokens = model.encode_global_frames(torch.zeros_like(io["global_latents"]))
        guidance = Guidance(*spec.guidance)

        def guided_step() -> dict[str, float]:
            clock = um.PhaseClock(cuda)
            with torch.no_grad():
                guided_step.out = guided_noise(
                    model, io["noisy_latents"], io["timestep"], condition, null, tokens, null_tokens, io["fps"],
                    guidance,
                )
            clock.lap("step_s")
            return clock.times

        step = guided_step
    elif spec.mode == "train":
        model.train()
        if spec.checkpointing:
            model.enable_gradient_checkpointing()
        step = train_step
    elif spec.mode == "forward":
        model.eval()
        step = forward_step
    elif spec.mode == "profile":
        model.train()
        for _ in range(max(spec.warmup, 1)):
            train_step()
        result = profile_step(train_step, cuda)
        if not cuda:
            result["attention_kernels"] = attention_kernel_times(model, spec.frames, spec.global_frames, spec.size)
        return result
    else:
        raise ValueError(f"unknown mode {spec.mode!r}")

    load_before = um.load_average()
    start = time.perf_counter()
    for _ in range(spec.warmup):
        step()
    runs = []
    timed_start = time.perf_counter()
    while len(runs) < max(spec.repeats, 1):
        runs.append(step())
        if spec.budget_s and time.perf_counter() - timed_start > spec.budget_s:
            break
    result = {
        "implementation": "ours",
        "status": "ok",
        "runs": runs,
        "median": um.medians(runs),
        "parameters": sum(p.numel() for p in model.parameters()),
        "wall_s": time.perf_counter() - start,
        "load_before": load_before,
        "load_after": um.load_average(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    if cuda:
        result["peak_mem_bytes"] = torch.cuda.max_memory_allocated()
        result["device_name"] = torch.cuda.get_device_name()
    else:
        result["peak_mem_bytes"] = um.peak_rss_bytes() - baseline
    if spec.save_output:
        from safetensors.torch import save_file

        save_file({"output": step.out.float().cpu().contiguous()}, spec.save_output)
    if guard:
        guard.__exit__()
    if spec.count_flops:
        # after the measurement: meta tensors take no memory, and the peak is already read
        result["flops"] = count_flops(spec.widths, spec.frames, spec.global_frames, spec.size, spec.batch)
    return result


def profile_step(step, cuda: bool) -> dict:
    """One training step under torch.profiler: self time per op, and the attention kernels' share."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        step()
    events = prof.key_averages()
    attr = "self_device_time_total" if cuda else "self_cpu_time_total"
    total = sum(getattr(e, attr) for e in events)
    ops = sorted(((e.key, getattr(e, attr), e.count) for e in events), key=lambda x: -x[1])
    attention = sum(t for name, t, _ in ops if "scaled_dot_product" in name)
    return {
        "implementation": "ours",
        "status": "ok",
        "self_time_s": total / 1e6,
        "attention_share": attention / total if total else 0.0,
        "top_ops": [{"op": name, "self_s": t / 1e6, "calls": n} for name, t, n in ops[:12]],
    }


def attention_shapes(model, frames: int, global_frames: int, size: int) -> list[dict]:
    """Every attention call of one forward, as (batch, heads, queries, keys, head dim) with its count.

    Spatial self-attention runs per frame over its h*w tokens, cross-attention per clip over
    the F*h*w tokens against the global-frame tokens, and the temporal transformer's two
    self-attentions per pixel over the F frames.
    """
    from lightning_m3ddm.models.attention import SpatialTemporalTransformer
    from lightning_m3ddm.models.global_encoder import GlobalFrameEncoder

    heads = model.config.attention_head_dim
    context = GlobalFrameEncoder.num_tokens(global_frames, size, size)
    found: dict[tuple, int] = {}
    side = size
    levels = [side]
    for _ in range(len(model.config.block_out_channels) - 1):
        side = (side + 1) // 2
        levels.append(side)

    def add(key):
        found[key] = found.get(key, 0) + 1

    blocks = [(b.attentions, levels[i]) for i, b in enumerate(model.down_blocks)]
    blocks.append((model.mid_block.attentions, levels[-1]))
    blocks += [(b.attentions, levels[len(levels) - 1 - i]) for i, b in enumerate(model.up_blocks)]
    for attentions, side in blocks:
        for t in attentions or ():
            assert isinstance(t, SpatialTemporalTransformer)
            d = t.proj_in.out_channels // heads
            tokens = side * side
            add(("spatial self", frames, tokens, tokens, d))
            add(("cross", 1, frames * tokens, context, d))
            add(("temporal self", tokens, frames, frames, d))
            add(("temporal self", tokens, frames, frames, d))
    return [{"kind": k[0], "batch": k[1], "heads": heads, "queries": k[2], "keys": k[3], "head_dim": k[4], "count": n}
            for k, n in found.items()]


def attention_kernel_times(model, frames: int, global_frames: int, size: int) -> dict:
    """Forward+backward CPU seconds of each attention shape, fused (SDPA) and as explicit softmax.

    The explicit form is the released code's: matmul, softmax, matmul, with the scores kept
    for the backward. Each is timed once after a warm-up call, in this process.
    """
    import torch
    import torch.nn.functional as F

    def explicit(q, k, v):
        scores = torch.matmul(q, k.transpose(-1, -2)) * q.shape[-1] ** -0.5
        return torch.matmul(scores.softmax(dim=-1), v)

    def cpu_seconds(fn, shape_q, shape_kv):
        q, k, v = (torch.randn(s, requires_grad=True) for s in (shape_q, shape_kv, shape_kv))
        fn(q, k, v).sum().backward()
        start = time.process_time()
        fn(q, k, v).sum().backward()
        return time.process_time() - start

    rows, fused_total, explicit_total = [], 0.0, 0.0
    for s in attention_shapes(model, frames, global_frames, size):
        shape_q = (s["batch"], s["heads"], s["queries"], s["head_dim"])
        shape_kv = (s["batch"], s["heads"], s["keys"], s["head_dim"])
        fused = cpu_seconds(F.scaled_dot_product_attention, shape_q, shape_kv)
        expl = cpu_seconds(explicit, shape_q, shape_kv)
        rows.append({**s, "fused_s": fused, "explicit_s": expl})
        fused_total += s["count"] * fused
        explicit_total += s["count"] * expl
    return {"rows": rows, "fused_total_s": fused_total, "explicit_total_s": explicit_total}


def count_flops(widths, frames, global_frames, size, batch, guided: bool = False, guidance=(2.0, 4.0)) -> dict:
    """FLOPs of one training step and one inference forward on the meta device (no memory, no time).

    With ``guided``: also one guided denoising step (3 branches) and the once-per-window
    global-frame encoding (conditional + null tokens).
    """
    import torch
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    from lightning_m3ddm.models import M3DDMUNet

    with torch.device("meta"):
        model = M3DDMUNet(**config_kwargs(widths))
        io = make_inputs(widths, frames, global_frames, size, batch, 0, device="meta")
    sample = torch.cat([io["noisy_latents"], io["masked_latents"], io["mask"]], 1)
    out = {}
    model.train()
    with FlopCounterMode(display=False) as counter:
        pred = model(sample, io["timestep"], fps=io["fps"], global_latents=io["global_latents"]).sample
        F.mse_loss(pred, io["target"]).backward()
    out["train_step_flops"] = counter.get_total_flops()
    model.eval()
    with torch.no_grad():
        with FlopCounterMode(display=False) as counter:
            model(sample, io["timestep"], fps=io["fps"], global_latents=io["global_latents"])
        out["forward_flops"] = counter.get_total_flops()
        if guided:
            from lightning_m3ddm.conditioning import Condition
            from lightning_m3ddm.sampling import Guidance, guided_noise

            with FlopCounterMode(display=False) as counter:
                tokens = model.encode_global_frames(io["global_latents"])
                null_tokens = model.encode_global_frames(torch.zeros_like(io["global_latents"]))
            out["global_tokens_flops"] = counter.get_total_flops()
            condition = Condition(io["masked_latents"], io["mask"])
            null = Condition(io["null_masked_latents"], io["null_mask"])
            with FlopCounterMode(display=False) as counter:
                guided_noise(model, io["noisy_latents"], io["timestep"], condition, null, tokens, null_tokens,
                             io["fps"], Guidance(*guidance))
            out["guided_step_flops"] = counter.get_total_flops()
            out["guided_branches"] = len(Guidance(*guidance).branches())
    return out


# -- the parent: launching workers ---------------------------------------------------------------


def _memory_limit(headroom_gib: float, cap_gib: float) -> int:
    limit = um.mem_available_bytes() - int(headroom_gib * um.GIB)
    if cap_gib:
        limit = min(limit, int(cap_gib * um.GIB))
    return max(limit, um.GIB)


def launch(cmd: list[str], timeout: float, what: str) -> dict:
    """Run one worker; a memory-guard stop or a failure becomes a row with the reason."""
    start_load = um.load_average()
    try:
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": "skipped", "reason": f"{what}: did not finish within {timeout:.0f} s", "load_before": start_load}
    result = um.parse_result(proc.stdout)
    if proc.returncode == um.MemoryGuard.EXIT_CODE and "MEMORY_GUARD" in proc.stderr:
        line = next(ln for ln in proc.stderr.splitlines() if "MEMORY_GUARD" in ln)
        return {"status": "skipped", "reason": "does not fit in memory: " + line.split("MEMORY_GUARD: ", 1)[1],
                "load_before": start_load}
    if proc.returncode != 0 or result is None:
        return {"status": "error", "reason": f"{what} failed (exit {proc.returncode}): {proc.stderr.strip()[-1500:]}",
                "load_before": start_load}
    return result


def launch_ours(spec: Spec, timeout: float) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(asdict(spec))]
    what = f"ours {spec.mode} widths {spec.widths} ckpt={spec.checkpointing}"
    return launch(cmd, timeout, what)


def launch_official(args, folder: str, mode: str, memory_limit: int, save_output: str = "") -> dict:
    cmd = [args.official_python, str(HERE / "official_unet_driver.py"), "--official-src", args.official_src,
           "--folder", folder, "--mode", mode, "--warmup", str(args.warmup_compare), "--repeats", "1",
           "--threads", str(args.threads), "--memory-limit-gib", f"{memory_limit / um.GIB:.3f}",
           "--guidance", *map(str, args.guidance)]
    if save_output:
        cmd += ["--save-output", save_output]
    result = launch(cmd, args.timeout, f"released implementation {mode}")
    result.setdefault("implementation", "official")
    return result


# -- 1. scaling ---------------------------------------------------------------------------------


def run_scaling(args) -> dict:
    rows = []
    for name in args.configs:
        widths = CONFIGS[name]
        base = dict(widths=widths, frames=args.frames, global_frames=args.global_frames, size=args.size,
                    batch=args.batch, device=args.device, dtype=args.dtype, warmup=args.warmup,
                    repeats=args.repeats, budget_s=args.budget_s, threads=args.threads)
        limit = _memory_limit(args.memory_headroom_gib, args.max_memory_gib)
        forward = launch_ours(Spec(mode="forward", memory_limit_bytes=limit, count_flops=True, **base), args.timeout)
        if "flops" in forward:
            flops = forward["flops"]
        else:
            flops = count_flops(widths, args.frames, args.global_frames, args.size, args.batch)
        for ckpt in args.checkpointing:
            limit = _memory_limit(args.memory_headroom_gib, args.max_memory_gib)
            train = launch_ours(Spec(mode="train", checkpointing=ckpt, memory_limit_bytes=limit, **base), args.timeout)
            row = {"config": name, "widths": list(widths), "checkpointing": ckpt, "flops": flops,
                   "forward": forward, "train": train}
            if train.get("status") == "ok":
                seconds = train["median"]["forward_backward_s"]
                row["achieved_tflops"] = flops["train_step_flops"] / seconds / 1e12
                if args.device.startswith("cuda"):
                    peak = args.peak_tflops or peak_tflops_for(train.get("device_name", ""))
                    row["peak_tflops"] = peak
                    row["mfu"] = model_flops_utilisation(flops["train_step_flops"], seconds, peak) if peak else None
            rows.append(row)
            _progress(row_summary(row))
    return {"rows": rows}


def row_summary(row: dict) -> str:
    t = row["train"]
    ok = t.get("status") == "ok"
    return (f"{row['config']} ckpt={row['checkpointing']}: "
            + (f"fwd+bwd {t['median']['forward_backward_s']:.3f} s, peak {fmt_gib(t['peak_mem_bytes'])}"
               if ok else t.get("reason", "?")))


# -- 2 + 3. the released implementation ------------------------------------------------------------


def randomize_weights_(model, seed: int) -> None:
    """Random weights everywhere (zero-initialised layers too), so equal outputs mean equal networks."""
    import torch

    g = torch.Generator().manual_seed(seed)
    norms = (torch.nn.GroupNorm, torch.nn.LayerNorm, torch.nn.BatchNorm2d)
    with torch.no_grad():
        for module in model.modules():
            for name, tensor in module.named_parameters(recurse=False):
                if isinstance(module, norms):
                    base = 1.0 if name == "weight" else 0.0
                    tensor.copy_(base + 0.1 * torch.randn(tensor.shape, generator=g))
                elif tensor.ndim >= 2:
                    tensor.copy_(torch.randn(tensor.shape, generator=g) / math.sqrt(tensor[0].numel()))
                else:
                    tensor.copy_(0.1 * torch.randn(tensor.shape, generator=g))
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.copy_(0.1 * torch.randn(module.running_mean.shape, generator=g))
                module.running_var.copy_(0.5 + torch.rand(module.running_var.shape, generator=g))


def write_compare_folder(folder: Path, widths, frames, global_frames, size, seed: int) -> None:
    """config.json + weights (the released layout, keys identical in both) + inputs.safetensors."""
    import torch
    from safetensors.torch import save_file

    from lightning_m3ddm.models import M3DDMUNet

    torch.manual_seed(seed)
    model = M3DDMUNet(**config_kwargs(widths))
    randomize_weights_(model, seed)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(official_config(widths), indent=2))
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "diffusion_pytorch_model.safetensors"))
    io = make_inputs(widths, frames, global_frames, size, 1, seed)
    save_file({k: v.contiguous() for k, v in io.items()}, str(folder / "inputs.safetensors"))


def _max_abs_diff(a: str, b: str) -> float | None:
    from safetensors.torch import load_file

    if not (os.path.exists(a) and os.path.exists(b)):
        return None
    return float((load_file(a)["output"] - load_file(b)["output"]).abs().max())


def _pooled(results: list[dict], key: str) -> dict:
    ok = [r for r in results if r.get("status", "ok") == "ok" and "runs" in r]
    if not ok:
        return {"status": "skipped", "reason": "; ".join(r.get("reason", "?") for r in results)}
    runs = [run for r in ok for run in r["runs"]]
    return {
        "status": "ok",
        "runs": runs,
        "median": um.medians(runs),
        "peak_mem_bytes": statistics.median(r["peak_mem_bytes"] for r in ok),
        "peak_mem_bytes_all": [r["peak_mem_bytes"] for r in ok],
        "load": [r["load_before"][0] for r in ok],
        "threads": ok[0].get("threads"),
        "torch": ok[0].get("torch"),
        "parameters": ok[0].get("parameters"),
        "key": key,
    }


def run_compare(args) -> dict:
    if not (args.official_src and args.official_python):
        return {"status": "skipped",
                "reason": "no released implementation given (pass --official-src and --official-python)"}
    work = Path(tempfile.mkdtemp(prefix="bench_unet_official_"))
    try:
        write_compare_folder(work, args.compare_widths, args.compare_frames, args.compare_global_frames,
                             args.size, args.seed)
        base = dict(widths=tuple(args.compare_widths), frames=args.compare_frames,
                    global_frames=args.compare_global_frames, size=args.size, batch=1, warmup=args.warmup_compare,
                    repeats=1, threads=args.threads, folder=str(work), guidance=tuple(args.guidance))
        out: dict = {"status": "ok", "warmup": args.warmup_compare, "widths": list(args.compare_widths),
                     "frames": args.compare_frames,
                     "global_frames": args.compare_global_frames, "size": args.size}
        modes = {"train": "forward_backward_s", "guided_step": "step_s"}
        for mode, key in ((m, modes[m]) for m in args.compare_modes):
            ours, official = [], []
            for r in range(args.compare_rounds):
                save = r == 0
                limit = _memory_limit(args.memory_headroom_gib, args.max_memory_gib)
                ours.append(launch_ours(Spec(mode=mode, memory_limit_bytes=limit,
                                             save_output=str(work / f"ours_{mode}.safetensors") if save else "",
                                             **base), args.timeout))
                limit = _memory_limit(args.memory_headroom_gib, args.max_memory_gib)
                official.append(launch_official(args, str(work), mode, limit,
                                                str(work / f"official_{mode}.safetensors") if save else ""))
                _progress(f"{mode} round {r + 1}: ours {_brief(ours[-1], key)}, released {_brief(official[-1], key)}")
            entry = {"ours": _pooled(ours, key), "official": _pooled(official, key),
                     "output_max_abs_diff": _max_abs_diff(str(work / f"ours_{mode}.safetensors"),
                                                          str(work / f"official_{mode}.safetensors"))}
            if entry["ours"]["status"] == entry["official"]["status"] == "ok":
                entry["speedup"] = entry["official"]["median"][key] / entry["ours"]["median"][key]
                cpu_key = key.replace("_s", "_cpu_s")
                entry["cpu_speedup"] = entry["official"]["median"][cpu_key] / entry["ours"]["median"][cpu_key]
                entry["memory_ratio"] = entry["ours"]["peak_mem_bytes"] / entry["official"]["peak_mem_bytes"]
            out[mode] = entry
        if "guided_step" not in args.compare_modes:
            return out
        flops_ours = count_flops(tuple(args.compare_widths), args.compare_frames, args.compare_global_frames,
                                 args.size, 1, guided=True, guidance=tuple(args.guidance))
        flops_official = launch_official(args, str(work), "flops", _memory_limit(args.memory_headroom_gib, 0))
        out["flops"] = {"ours": flops_ours, "official": flops_official}
        if flops_official.get("status", "ok") == "ok" and "guided_step_flops" in flops_official:
            out["flops"]["guided_step_ratio"] = flops_ours["guided_step_flops"] / flops_official["guided_step_flops"]
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _brief(result: dict, key: str) -> str:
    if result.get("status", "ok") != "ok" or "median" not in result:
        return result.get("reason", "?")[:200]
    return f"{result['median'][key]:.3f} s, {fmt_gib(result['peak_mem_bytes'])}"


def _progress(msg: str) -> None:
    print(f"[bench_unet {datetime.datetime.now():%H:%M:%S} load {um.load_average()[0]:.2f}] {msg}",
          file=sys.stderr, flush=True)


# -- report -------------------------------------------------------------------------------------


def machine_description() -> dict:
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), cpu)
    except OSError:
        pass
    mem = None
    try:
        with open("/proc/meminfo") as fh:
            mem = int(next(ln for ln in fh if ln.startswith("MemTotal:")).split()[1]) * 1024
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_bytes": mem, "gpu": None}


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def render_markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        f"Command: `{report['command']}`  ",
        f"Machine: {m['cores']} CPU cores ({m['cpu']}), {fmt_gib(m['memory_bytes'])} RAM, "
        f"GPU: {m['gpu'] or 'none'}; date {report['date']}; commit {report['commit']}; "
        f"load average at start {report['load_start']}, at end {report['load_end']}.",
        "",
    ]
    scaling = report.get("scaling")
    if scaling:
        s = report["settings"]
        cuda = s["device"].startswith("cuda")
        lines += [
            f"Batch {s['batch']}, {s['frames']} frames, {s['global_frames']} global frames, {s['size']}x{s['size']} "
            f"latents, {s['device']} {s['dtype']}, torch threads per worker: "
            f"{next((r['train'].get('threads') for r in scaling['rows'] if r['train'].get('threads')), '?')}; "
            f"median of the timed runs after {s['warmup']} warm-up "
            f"(runs in brackets). Peak memory: "
            + ("torch.cuda.max_memory_allocated." if cuda else "peak RSS growth over the process's post-import size "
               "(weights, gradients and activations).")
            + " GFLOP: one training step, counted on the meta device.",
            "",
            "| config | params | grad ckpt | forward, no grad | peak | fwd+bwd (fwd / bwd) | fwd+bwd CPU-s | peak | "
            "GFLOP/step | " + ("achieved TFLOP/s | MFU |" if cuda else "achieved GFLOP/s |") + " load (1 min) |",
            "|---|---|---|---|---|---|---|---|---|---|" + ("---|" if cuda else "") + "---|",
        ]
        for row in scaling["rows"]:
            fwd, tr = row["forward"], row["train"]
            params = (tr.get("parameters") or fwd.get("parameters"))
            fwd_cells = ("—", "—")
            if not row["checkpointing"] or len(report["settings"]["checkpointing"]) == 1:
                fwd_cells = ((f"{fmt_s(fwd['median']['forward_s'])} s [{len(fwd['runs'])}]", fmt_gib(fwd["peak_mem_bytes"]))
                             if fwd.get("status") == "ok" else (f"skipped: {fwd.get('reason')}", "—"))
            elif fwd.get("status") == "ok":
                fwd_cells = ("same as without", "")
            if tr.get("status") == "ok":
                md = tr["median"]
                train_cells = (f"{fmt_s(md['forward_backward_s'])} s ({fmt_s(md['forward_s'])} / "
                               f"{fmt_s(md['backward_s'])}) [{len(tr['runs'])}]",
                               fmt_s(md.get("forward_backward_cpu_s")), fmt_gib(tr["peak_mem_bytes"]))
                perf = (f"{row['achieved_tflops']:.1f} | "
                        + (f"{100 * row['mfu']:.1f}% of {row['peak_tflops']:.0f} |" if row.get("mfu") is not None
                           else "— (pass --peak-tflops) |")) if cuda else f"{1000 * row['achieved_tflops']:.1f} |"
            else:
                train_cells = (f"skipped: {tr.get('reason')}", "—", "—")
                perf = "— | — |" if cuda else "— |"
            loads = "/".join(f"{r['load_before'][0]:.1f}" for r in (fwd, tr) if "load_before" in r)
            params_cell = f"{params / 1e6:.1f} M" if params else "—"
            lines.append(
                f"| {row['config']} {tuple(row['widths'])} | {params_cell} | "
                f"{'on' if row['checkpointing'] else 'off'} | {fwd_cells[0]} | {fwd_cells[1]} | {train_cells[0]} | "
                f"{train_cells[1]} | {train_cells[2]} | {row['flops']['train_step_flops'] / 1e9:.1f} | {perf} {loads} |"
            )
        lines.append("")
    prof = report.get("profile")
    if prof and prof.get("status") == "ok":
        lines += [
            f"Profile of one training step of ours (widths {tuple(prof['widths'])}, torch.profiler, self time "
            f"{prof['self_time_s']:.1f} s): the fused attention kernels (forward and backward) take "
            f"**{100 * prof['attention_share']:.0f}%**.",
            "",
            "| op | self time | calls |",
            "|---|---|---|",
            *(f"| {o['op']} | {o['self_s']:.3f} s | {o['calls']} |" for o in prof["top_ops"]),
            "",
        ]
        kernels = prof.get("attention_kernels")
        if kernels:
            lines += [
                "Every attention call of one step, forward+backward CPU seconds per call, fused "
                "(F.scaled_dot_product_attention, ours) and explicit softmax (matmul, softmax, matmul: the released "
                "code's form), each timed alone:",
                "",
                "| attention | batch x heads | queries x keys | head dim | calls per step | fused | explicit | explicit / fused |",
                "|---|---|---|---|---|---|---|---|",
                *(f"| {r['kind']} | {r['batch']} x {r['heads']} | {r['queries']} x {r['keys']} | {r['head_dim']} | "
                  f"{r['count']} | {r['fused_s']:.3f} s | {r['explicit_s']:.3f} s | "
                  f"{r['explicit_s'] / max(r['fused_s'], 1e-9):.1f}x |" for r in kernels["rows"]),
                f"| **all calls of a step** | | | | | **{kernels['fused_total_s']:.2f} s** | "
                f"**{kernels['explicit_total_s']:.2f} s** | "
                f"**{kernels['explicit_total_s'] / max(kernels['fused_total_s'], 1e-9):.1f}x** |",
                "",
            ]
    cmp_ = report.get("compare")
    if cmp_:
        if cmp_.get("status") != "ok":
            lines += [f"Released implementation: skipped ({cmp_.get('reason')}).", ""]
        else:
            lines += _render_compare(cmp_)
    return "\n".join(lines) + "\n"


def _render_compare(c: dict) -> list[str]:
    first = c.get("train") or c.get("guided_step")
    lines = [
        f"Same weights and inputs in both, widths {tuple(c['widths'])}, {c['frames']} frames, {c['global_frames']} "
        f"global frames, {c['size']}x{c['size']} latents, float32, CPU, batch 1; ours without gradient "
        f"checkpointing; torch threads: ours {first['ours'].get('threads')}, released "
        f"{first['official'].get('threads')} (torch {first['ours'].get('torch')} / "
        f"{first['official'].get('torch')}). Each run in its own process after {c.get('warmup', 1)} warm-up "
        "step(s), ours and the released code alternating; time: median over the runs, peak memory: median of the "
        "per-process peak RSS growth over the post-import size.",
        "",
    ]
    if "train" in c:
        lines += _render_compare_train(c)
    if "guided_step" in c:
        lines += _render_compare_guided(c)
    return lines


def _render_compare_train(c: dict) -> list[str]:
    tr = c["train"]
    at_issue_setting = (tuple(c["widths"]), c["frames"], c["global_frames"], c["size"]) == (COMPARE_WIDTHS, 8, 8, 32)

    def verdict(ok: bool) -> str:
        return ("met" if ok else "missed") if at_issue_setting else "the target is for the issue's setting, not this one"

    lines = [
        "| one training forward+backward | fwd+bwd (wall) | fwd+bwd (CPU-s) | forward | backward | peak memory | runs "
        "| load (1 min) per run |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for who, label in (("official", "released (explicit softmax attention)"), ("ours", "ours")):
        r = tr[who]
        if r["status"] != "ok":
            lines.append(f"| {label} | skipped: {r['reason']} | | | | | | |")
            continue
        md = r["median"]
        lines.append(f"| {label} | {fmt_s(md['forward_backward_s'])} s | {fmt_s(md['forward_backward_cpu_s'])} s | "
                     f"{fmt_s(md['forward_s'])} s | {fmt_s(md['backward_s'])} s | {fmt_gib(r['peak_mem_bytes'])} | "
                     f"{len(r['runs'])} | {', '.join(f'{x:.1f}' for x in r['load'])} |")
    if "speedup" in tr:
        lines += ["", f"Ours is **{tr['speedup']:.2f}x faster** (target >= {TARGET_SPEEDUP}x: "
                      f"{verdict(tr['speedup'] >= TARGET_SPEEDUP)}) and uses **{tr['memory_ratio']:.2f}x "
                      f"the peak memory** (target <= {TARGET_MEMORY_RATIO}x: "
                      f"{verdict(tr['memory_ratio'] <= TARGET_MEMORY_RATIO)}); in CPU-seconds ours is "
                      f"{tr['cpu_speedup']:.2f}x faster. Outputs agree to max |diff| = {tr['output_max_abs_diff']:.2e}."]
    lines.append("")
    return lines


def _render_compare_guided(c: dict) -> list[str]:
    gs = c["guided_step"]
    fl = c.get("flops", {})
    fo = fl.get("official", {})
    lines = [
        "| one guided denoising step (s1=2, s2=4) | UNet branches | GFLOP per step | s per step (wall) | CPU-s per step "
        "| peak memory | runs |",
        "|---|---|---|---|---|---|---|",
    ]
    for who, label, branches, gflop in (
        ("official", "released pipeline (global encoder re-run every step)", 4, fo.get("guided_step_flops")),
        ("ours", "ours (global tokens once per window)", fl.get("ours", {}).get("guided_branches", 3),
         fl.get("ours", {}).get("guided_step_flops")),
    ):
        r = gs[who]
        t = (f"{fmt_s(r['median']['step_s'])} s | {fmt_s(r['median']['step_cpu_s'])} s" if r["status"] == "ok"
             else f"skipped: {r['reason']} | —")
        mem = fmt_gib(r.get("peak_mem_bytes")) if r["status"] == "ok" else "—"
        g = f"{gflop / 1e9:.1f}" if gflop else "—"
        lines.append(f"| {label} | {branches} | {g} | {t} | {mem} | {len(r.get('runs', []))} |")
    if "guided_step_ratio" in fl:
        enc = fl["ours"]["global_tokens_flops"] / 1e9
        lines += ["", f"Per step ours costs **{fl['guided_step_ratio']:.3f}x the released FLOPs** "
                      + (f"and **{1 / gs['speedup']:.3f}x its time** ({1 / gs['cpu_speedup']:.3f}x its CPU time) "
                         if "speedup" in gs else "")
                      + f"(target <= {TARGET_GUIDED_COST}: "
                      f"{'met' if fl['guided_step_ratio'] <= TARGET_GUIDED_COST else 'missed'}); ours adds "
                      f"{enc:.2f} GFLOP once per window for the conditional and null global-frame tokens. "
                      f"Guided outputs agree to max |diff| = {gs['output_max_abs_diff']:.2e}."]
    lines.append("")
    return lines


# -- command line -------------------------------------------------------------------------------


def parse_args(argv=None):
    from lightning_m3ddm.throughput import PEAK_FLOPS

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n", 2)[2])
    p.add_argument("--configs", default="tiny,mid,full", help=f"comma list of {', '.join(CONFIGS)}")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--global-frames", type=int, default=16)
    p.add_argument("--size", type=int, default=32, help="latent height = width")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--dtype", default="", help="float32 (default on CPU) or bfloat16 (default on CUDA)")
    p.add_argument("--checkpointing", default="off,on", help="gradient checkpointing settings to measure: off,on")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--budget-s", type=float, default=300.0,
                   help="a worker stops repeating once its timed runs took this long (at least one run)")
    p.add_argument("--threads", type=int, default=0, help="torch threads per worker (0: torch's default)")
    p.add_argument("--peak-tflops", type=float, default=0.0,
                   help="the GPU's dense bf16 peak (default by name: "
                        + ", ".join(f"{k} {v / 1e12:.0f}" for k, v in PEAK_FLOPS.items()) + ")")
    p.add_argument("--memory-headroom-gib", type=float, default=3.0,
                   help="a worker is stopped when it would leave less than this much of the available memory")
    p.add_argument("--max-memory-gib", type=float, default=0.0, help="also stop a worker past this resident size")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds per worker")
    p.add_argument("--skip-scaling", action="store_true")
    p.add_argument("--official-src", default="", help="src folder of the released M3DDM code (optional)")
    p.add_argument("--official-python", default="", help="python of an environment that runs the released code")
    p.add_argument("--compare-widths", default=",".join(map(str, COMPARE_WIDTHS)))
    p.add_argument("--compare-frames", type=int, default=8)
    p.add_argument("--compare-global-frames", type=int, default=8)
    p.add_argument("--compare-rounds", type=int, default=3, help="ours / released alternations")
    p.add_argument("--warmup-compare", type=int, default=1)
    p.add_argument("--compare-modes", default="train,guided_step",
                   help="what to run side by side: train (one forward+backward), guided_step (one denoising step)")
    p.add_argument("--guidance", type=float, nargs=2, default=(2.0, 4.0), metavar=("CONTEXT", "GLOBAL"),
                   help="s1, s2 of eq. 4 (paper 4.4.1)")
    p.add_argument("--profile", action="store_true",
                   help="also profile one training step of ours at the side-by-side setting (torch.profiler)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="smoke test: tiny config, 4 frames, 16x16, one run each")
    p.add_argument("--json", default="", help="write the full report here")
    p.add_argument("--markdown", default="", help="write the markdown tables here (also printed)")
    p.add_argument("--worker", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.configs, args.frames, args.global_frames, args.size = "tiny", 4, 2, 16
        args.repeats, args.warmup, args.warmup_compare = 1, 0, 0
        args.compare_frames, args.compare_global_frames, args.compare_rounds = 2, 2, 1
        args.compare_widths = "32,64,64,64"
    args.configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in args.configs if c not in CONFIGS]
    if unknown:
        p.error(f"unknown config(s) {unknown}; choose from {', '.join(CONFIGS)}")
    args.compare_widths = tuple(int(x) for x in args.compare_widths.split(","))
    args.compare_modes = [m.strip() for m in args.compare_modes.split(",") if m.strip()]
    if not args.compare_modes or set(args.compare_modes) - {"train", "guided_step"}:
        p.error("--compare-modes takes train, guided_step or both")
    flags = {"off": False, "on": True}
    try:
        args.checkpointing = [flags[x.strip()] for x in args.checkpointing.split(",")]
    except KeyError:
        p.error("--checkpointing takes off, on or off,on")
    if not args.dtype:
        args.dtype = "bfloat16" if args.device.startswith("cuda") else "float32"
    if bool(args.official_src) != bool(args.official_python):
        p.error("--official-src and --official-python go together")
    if args.device.startswith("cuda") and args.official_src:
        p.error("the side-by-side with the released code is a CPU float32 measurement; run it without --device cuda")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:
        spec = json.loads(args.worker)
        spec["widths"] = tuple(spec["widths"])
        spec["guidance"] = tuple(spec["guidance"])
        um.emit(run_worker(Spec(**spec)))
        return
    report = {
        "command": "python benchmarks/bench_unet.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": datetime.date.today().isoformat(),
        "commit": git_commit(),
        "machine": machine_description(),
        "load_start": um.load_average(),
        "settings": {"configs": args.configs, "frames": args.frames, "global_frames": args.global_frames,
                     "size": args.size, "batch": args.batch, "device": args.device, "dtype": args.dtype,
                     "warmup": args.warmup, "repeats": args.repeats, "checkpointing": args.checkpointing,
                     "threads": args.threads},
    }
    if not args.skip_scaling:
        report["scaling"] = run_scaling(args)
        names = [r[k].get("device_name") for r in report["scaling"]["rows"] for k in ("forward", "train")]
        report["machine"]["gpu"] = next((n for n in names if n), None)
    report["compare"] = run_compare(args)
    if args.profile:
        spec = Spec(mode="profile", widths=tuple(args.compare_widths), frames=args.compare_frames,
                    global_frames=args.compare_global_frames, size=args.size, threads=args.threads,
                    device=args.device, dtype=args.dtype,
                    memory_limit_bytes=_memory_limit(args.memory_headroom_gib, args.max_memory_gib))
        report["profile"] = launch_ours(spec, args.timeout)
        report["profile"]["widths"] = list(args.compare_widths)
    report["load_end"] = um.load_average()
    text = render_markdown(report)
    print(text)
    if args.json:
        _write_atomic(args.json, json.dumps(report, indent=2, default=list) + "\n")
    if args.markdown:
        _write_atomic(args.markdown, text)


def _write_atomic(path: str, text: str) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, target)


if __name__ == "__main__":
    main()
