"""Runs the released M3DDM UNet (imported at run time from a path you give) for bench_unet.py.

This file holds none of the released code: it imports ``UNet3DConditionModel`` from
``--official-src`` (the ``src`` folder of the released repository) and calls it the
way the released outpainting pipeline does. It runs in the released code's own Python
environment (diffusers 0.18-era), so it imports only torch, safetensors, einops and
benchmarks/unet_measure.py, never lightning_m3ddm.

bench_unet.py writes the work folder: ``config.json`` + ``diffusion_pytorch_model.safetensors``
(the same weights our model runs with, keys identical) and ``inputs.safetensors``.

Modes (one per process, so the peak resident size is clean):
    train        one forward+backward of the UNet (do_classfier=1), MSE to a fixed target
    guided_step  one denoising step as the released pipeline runs it: the UNet on 4 branches
                 (do_classfier=4, global encoder re-run on every branch), combined with the
                 context and global-frame guidance scales
    flops        FLOPs (torch.utils.flop_counter) of one train step and of one guided step

    /path/to/official/venv/bin/python benchmarks/official_unet_driver.py \
        --official-src /path/to/M3DDM/src --folder WORK --mode train --warmup 1 --repeats 2
"""

from __future__ import annotations

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import unet_measure as um  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--official-src", required=True, help="the released repository's src folder")
    p.add_argument("--folder", required=True, help="work folder written by bench_unet.py")
    p.add_argument("--mode", choices=("train", "guided_step", "flops"), required=True)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--memory-limit-gib", type=float, default=0.0, help="stop if the resident size passes this")
    p.add_argument("--guidance", type=float, nargs=2, default=(2.0, 4.0), metavar=("CONTEXT", "GLOBAL"))
    p.add_argument("--save-output", default="", help="write the (last) output tensor here (safetensors)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (cuda: peak memory is torch.cuda's)")
    p.add_argument("--dtype", default="float32", help="float32, bfloat16 or float16")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if not os.path.isfile(os.path.join(args.official_src, "model", "unet_3d_condition_video.py")):
        raise SystemExit(f"--official-src {args.official_src}: no model/unet_3d_condition_video.py there")
    sys.path.insert(0, os.path.abspath(args.official_src))
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

    import torch
    from einops import rearrange
    from safetensors.torch import load_file, save_file
    from torch.utils.flop_counter import FlopCounterMode

    from model.unet_3d_condition_video import UNet3DConditionModel

    if args.threads:
        torch.set_num_threads(args.threads)
    baseline = um.rss_bytes()
    guard = um.MemoryGuard(int(args.memory_limit_gib * um.GIB)) if args.memory_limit_gib else None
    if guard:
        guard.__enter__()

    cuda = args.device.startswith("cuda")
    dtype = getattr(torch, args.dtype)
    model = UNet3DConditionModel.from_pretrained(args.folder).to(args.device, dtype)
    io = load_file(os.path.join(args.folder, "inputs.safetensors"))
    io = {k: (v.to(args.device, dtype) if v.is_floating_point() else v.to(args.device)) for k, v in io.items()}
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    b, g = io["global_latents"].shape[:2]
    f = io["noisy_latents"].shape[2]
    global_frames = rearrange(io["global_latents"], "b g c h w -> (b g) c h w")

    def unet_train_forward():
        sample = torch.cat([io["noisy_latents"], io["masked_latents"], io["mask"]], 1)
        return model(sample, io["timestep"], b=b, g=g, f=f, is_empty_img=False, do_classfier=1,
                     encoder_hidden_states=global_frames, fps=io["fps"]).sample

    def train_step() -> dict[str, float]:
        model.zero_grad(set_to_none=True)
        clock = um.PhaseClock(cuda=cuda)
        out = unet_train_forward()
        loss = torch.nn.functional.mse_loss(out.float(), io["target"].float())
        clock.lap("forward_s")
        loss.backward()
        clock.lap("backward_s")
        train_step.out = out.detach()
        return clock.total("forward_backward_s")

    def guided_eps() -> torch.Tensor:
        # the released pipeline's batch order: [uncond ctx, cond ctx] x [uncond global, cond global]
        latents = torch.cat([io["noisy_latents"]] * 4)
        ctx = torch.cat([io["null_masked_latents"], io["masked_latents"]] * 2)
        mask = torch.cat([io["null_mask"], io["mask"]] * 2)
        sample = torch.cat([latents, ctx, mask], 1)
        eps = model(sample, io["timestep"], fps=io["fps"], encoder_hidden_states=global_frames, b=b, f=f, g=g,
                    is_empty_img=False, do_classfier=4).sample
        e00, e10, _, e11 = eps.chunk(4)
        s_ctx, s_glob = args.guidance
        return e00 + s_ctx * (e10 - e00) + s_glob * (e11 - e10)

    def guided_step() -> dict[str, float]:
        clock = um.PhaseClock(cuda=cuda)
        with torch.no_grad():
            guided_step.out = guided_eps()
        clock.lap("step_s")
        return clock.times

    result = {"implementation": "official", "mode": args.mode, "torch": torch.__version__,
              "threads": torch.get_num_threads(),
              "parameters": sum(p.numel() for p in model.parameters())}
    if args.mode == "flops":
        model.train()
        with FlopCounterMode(display=False) as counter:
            unet_train_forward().square().mean().backward()
        result["train_step_flops"] = counter.get_total_flops()
        model.eval()
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            guided_eps()
        result["guided_step_flops"] = counter.get_total_flops()
    else:
        if args.mode == "train":
            model.train()
            step = train_step
        else:
            model.eval()
            step = guided_step
        load_before = um.load_average()
        start = time.perf_counter()
        runs = um.timed_runs(step, args.warmup, args.repeats)
        result.update(
            runs=runs,
            median=um.medians(runs),
            peak_mem_bytes=torch.cuda.max_memory_allocated() if cuda else um.peak_rss_bytes() - baseline,
            wall_s=time.perf_counter() - start,
            load_before=load_before,
            load_after=um.load_average(),
        )
        if args.save_output:
            save_file({"output": step.out.float().cpu().contiguous()}, args.save_output)
    if guard:
        guard.__exit__()
    um.emit(result)


if __name__ == "__main__":
    main()
