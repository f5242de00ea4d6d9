"""Proof of learning: the tiny CPU model against per-frame OpenCV inpainting (issue: quickstart).

Trains the ``configs/tiny_cpu.yaml`` model on generated videos (textured scenes, camera pans,
objects crossing the border) for a fixed budget (a constant learning rate, then a cosine
annealing to 0 over the last ``--anneal-steps``), then outpaints held-out generated clips with a
fixed mask (both sides, ``--mask-ratio`` of the width, no guide frame) and compares with
per-frame Telea inpainting on:

- PSNR over the generated region (higher is better);
- temporal error: mean |(x[t+1] - x[t]) - (gt[t+1] - gt[t])| over the generated region, i.e.
  how far the frame-to-frame change of the fill is from the ground truth's (lower is better).

The model is scored twice: its samples (``--sampler``, ``--inference-steps``, guided with the
paper's s1 = 2, s2 = 4) and its one-step estimate (DDIM, one step from pure noise at t = 999:
its prediction of the clip from the conditions alone, i.e. of the conditional mean, which is
what PSNR rewards; unguided by default). The estimate's guidance is also swept on validation
clips that the reported result does not use (``--validation-clips``).

    python benchmarks/convergence.py --out outputs/convergence     # 3,300 steps, the last 900 annealed
    python benchmarks/convergence.py --checkpoint outputs/convergence/model.ckpt   # evaluate only
    python benchmarks/convergence.py --quick          # smoke test, seconds
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lightning_m3ddm.autoencoders import from_spec  # noqa: E402
from lightning_m3ddm.data.synthetic import SyntheticVideoSpec, render_frames  # noqa: E402
from lightning_m3ddm.evaluation.baselines import telea_frame  # noqa: E402
from lightning_m3ddm.lit_module import M3DDMLitModule, OptimizerConfig, lr_multiplier  # noqa: E402
from lightning_m3ddm.sampling import Guidance, NoiseSchedule, make_scheduler  # noqa: E402


def eval_clips(num_clips: int, size: int, frames: int, global_frames: int, interval: int, seed: int = 10_000_000):
    """Held-out clips: (N, F, 3, H, W) and global frames (N, G, 3, H, W) in [-1, 1], and fps."""
    clips, globals_ = [], []
    length = frames * interval + 8
    for i in range(num_clips):
        spec = SyntheticVideoSpec(width=96, height=96, num_frames=length, fps=24.0, seed=seed + i)
        video = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in render_frames(spec)])
        video = torch.from_numpy(video).permute(0, 3, 1, 2).float() / 127.5 - 1
        clips.append(video[: frames * interval : interval])
        globals_.append(video[torch.linspace(0, length - 1, global_frames).long()])
    return torch.stack(clips), torch.stack(globals_), 24 // interval


def horizontal_mask(size: int, ratio: float, grid: int = 8) -> torch.Tensor:
    """(H, W) float mask, 1 = generate: both sides, ``ratio`` of the width in total, on the latent grid."""
    side = max(grid, int(round(size * ratio / 2 / grid)) * grid)
    mask = torch.zeros(size, size)
    mask[:, :side] = 1
    mask[:, size - side :] = 1
    return mask


def clip_psnr(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(N,) mean over frames of the PSNR over masked pixels; frames in [-1, 1] -> [0, 1]."""
    p, g = (pred + 1) / 2, (gt + 1) / 2
    m = mask.expand_as(p).bool()
    se = ((p - g) ** 2).masked_fill(~m, 0).flatten(2).sum(-1) / m.flatten(2).sum(-1)  # (N, F)
    return (10 * torch.log10(1 / se.clamp_min(1e-10))).mean(1)


def region_psnr(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean over clips and frames of the PSNR over masked pixels."""
    return float(clip_psnr(pred, gt, mask).mean())


def paired_gain(pred: torch.Tensor, reference: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor) -> dict:
    """PSNR gain of ``pred`` over ``reference`` clip by clip: mean, standard error, clips won."""
    gain = clip_psnr(pred, gt, mask) - clip_psnr(reference, gt, mask)
    stderr = float(gain.std() / len(gain) ** 0.5) if len(gain) > 1 else float("nan")
    return {"mean_db": float(gain.mean()), "stderr_db": stderr, "clips_better": int((gain > 0).sum()), "clips": len(gain)}


def temporal_error(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean |Δpred − Δgt| over the generated region, frames in [0, 1]."""
    p, g = (pred + 1) / 2, (gt + 1) / 2
    dp, dg = p[:, 1:] - p[:, :-1], g[:, 1:] - g[:, :-1]
    m = mask.expand_as(dp).bool()
    return float((dp - dg).abs().masked_select(m).mean())


def scores(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor) -> dict:
    return {"psnr_region": region_psnr(pred, gt, mask), "temporal_error": temporal_error(pred, gt, mask)}


def masked_batch(clips: torch.Tensor, global_frames: torch.Tensor, fps: int, mask: torch.Tensor) -> dict:
    """The model's batch for clips (N, F, 3, H, W) outpainted where the (H, W) ``mask`` is 1."""
    n, frames, _, h, w = clips.shape
    pixel_mask = mask.expand(n, frames, 1, h, w)
    return dict(
        video=clips, masked_video=torch.where(pixel_mask.bool(), -1.0, clips), mask=pixel_mask.clone(),
        global_frames=torch.where(mask.bool(), -1.0, global_frames), fps=torch.full((n,), fps),
    )


def validation_sweep(module, batch: dict, mask: torch.Tensor, grid, seed: int) -> dict:
    """One-step-estimate PSNR gain over Telea for each (s1, s2) of ``grid`` on ``batch``: how
    the guidance of the estimate is checked on clips that the reported result does not use."""
    clips = batch["video"]
    baseline = telea(batch["masked_video"], mask)
    out = {}
    for s1, s2 in grid:
        estimate = outpaint(module, batch, 1, "ddim", "trailing", Guidance(s1, s2), seed)
        out[f"{s1:g},{s2:g}"] = {**scores(estimate, clips, mask), "gain": paired_gain(estimate, baseline, clips, mask)}
    return out


VALIDATION_SEED = 20_000_000  # held-out clips apart from the training videos and the eval clips
VALIDATION_GRID = ((1.0, 1.0), (1.5, 1.0), (1.5, 3.0), (2.0, 1.0), (2.0, 4.0))


def outpaint(module, batch: dict, steps: int, sampler: str, spacing: str | None, guidance: Guidance, seed: int):
    """The module's outpainting of every clip of ``batch``, four at a time, known pixels pasted back."""
    n = batch["video"].shape[0]
    with torch.no_grad():
        return torch.cat(
            [
                module.outpaint_clip(
                    {k: v[i : i + 4] for k, v in batch.items()}, num_inference_steps=steps, scheduler=sampler,
                    guidance=guidance, seed=seed + i, timestep_spacing=spacing,
                )
                for i in range(0, n, 4)
            ]
        )


def telea(video: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-frame Telea (radius 5) of (N, F, 3, H, W) in [-1, 1]."""
    m = mask.numpy().astype(bool)
    out = torch.empty_like(video)
    for n in range(video.shape[0]):
        for f in range(video.shape[1]):
            frame = ((video[n, f].permute(1, 2, 0).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
            filled = telea_frame(frame, m, radius=5.0)
            out[n, f] = torch.from_numpy(filled).permute(2, 0, 1).float() / 127.5 - 1
    return out


def with_anneal(config: dict, steps: int, anneal_steps: int) -> dict:
    """``config`` whose learning rate holds until ``steps - anneal_steps``, then decays to 0 at
    ``steps`` (cosine): the annealing that turns the noisy constant-rate weights into a fit."""
    if not anneal_steps:
        return config
    optimizer = dict(config["model"]["init_args"].get("optimizer") or {})
    optimizer.update(decay="cosine", decay_start=steps - anneal_steps, decay_steps=steps)
    # checked here, with the training's own defaults and rule, before anything is written
    cfg = OptimizerConfig(**optimizer)
    try:
        lr_multiplier(0, cfg.warmup_steps, cfg.decay, cfg.decay_steps, cfg.min_lr_ratio, cfg.decay_start)
    except ValueError as err:
        raise SystemExit(f"--anneal-steps {anneal_steps} does not fit --steps {steps}: {err}") from None
    model = {**config["model"], "init_args": {**config["model"]["init_args"], "optimizer": optimizer}}
    return {**config, "model": model}


def annealed_steps(optimizer: dict, steps: int) -> int:
    """How many of a run's ``steps`` had a decaying learning rate, from its optimizer settings."""
    cfg = OptimizerConfig(**optimizer)
    if cfg.decay == "constant":
        return 0
    start = max(cfg.warmup_steps, 1) if cfg.decay_start is None else cfg.decay_start  # as lr_multiplier
    return max(0, min(steps, cfg.decay_steps or steps) - start)


def build_module(config: dict, seed: int) -> M3DDMLitModule:
    """The config's model, every ``init_args`` field as the CLI would pass it, seeded."""
    args = dict(config["model"]["init_args"])
    torch.manual_seed(seed)
    return M3DDMLitModule(**{**args, "autoencoder": from_spec(args.get("autoencoder")), "seed": seed})


def train(
    module, config: dict, steps: int, data_root: Path, seed: int, num_train_videos: int, out: Path,
    num_workers: int | None, resume: Path | None = None,
) -> float:
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    from lightning_m3ddm.synthetic_shards import SyntheticShardsDataModule

    data_args = dict(config["data"]["init_args"])
    data_args.update(root=str(data_root), num_val_videos=0, num_train_videos=num_train_videos, seed=seed)
    if num_workers is not None:
        data_args["num_workers"] = num_workers
    # every loader worker must get whole batches (partial batches are dropped)
    workers = max(data_args.get("num_workers", 0), 1)
    if num_train_videos < workers * data_args["batch_size"]:
        raise SystemExit(f"--train-videos must be at least {workers * data_args['batch_size']} (workers x batch size)")
    data = SyntheticShardsDataModule(**data_args)

    class StepLog(L.Callback):
        """One line every 50 steps: a long CPU run shows that it moves, and how fast."""

        def on_train_batch_end(self, trainer, *args) -> None:
            if trainer.global_step % 50 == 0:
                elapsed = time.perf_counter() - start
                print(f"step {trainer.global_step}/{steps}, {elapsed:.0f} s", flush=True)

    trainer = L.Trainer(
        max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0, default_root_dir=out,
        callbacks=[
            ModelCheckpoint(dirpath=out / "checkpoints", every_n_train_steps=300, save_top_k=-1, save_last=True), StepLog(),
        ],
    )
    start = time.perf_counter()
    trainer.fit(module, datamodule=data, ckpt_path=resume)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "tiny_cpu.yaml")
    parser.add_argument("--steps", type=int, default=3300, help="training steps (the budget)")
    parser.add_argument(
        "--anneal-steps", type=int, default=900,
        help="the last steps of --steps, over which the learning rate decays to 0 (cosine); 0: constant rate",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-videos", type=int, default=512, help="generated training videos")
    parser.add_argument("--eval-clips", type=int, default=16)
    parser.add_argument("--mask-ratio", type=float, default=0.5, help="fraction of the width generated (both sides)")
    parser.add_argument("--interval", type=int, default=2, help="source frames between clip frames")
    parser.add_argument("--sampler", default="ddim")
    parser.add_argument("--inference-steps", type=int, default=25)
    parser.add_argument(
        "--timestep-spacing", choices=["leading", "trailing", "linspace"],
        help="default: the scheduler's (leading; trailing for a zero-terminal-SNR schedule)",
    )
    parser.add_argument("--guidance-context", type=float, default=2.0)
    parser.add_argument("--guidance-global", type=float, default=4.0)
    parser.add_argument(
        "--estimate-guidance", type=float, nargs=2, default=(1.0, 1.0), metavar=("S1", "S2"),
        help="guidance of the one-step estimate (default none: the model's own conditional mean)",
    )
    parser.add_argument(
        "--validation-clips", type=int, default=16,
        help="clips (seeds apart from the eval clips) on which the estimate's guidance is swept; 0: none",
    )
    parser.add_argument("--checkpoint", type=Path, help="skip training: evaluate this .ckpt")
    parser.add_argument(
        "--resume", type=Path,
        help="continue the run that wrote this checkpoint (same --out, seed and data) up to --steps in all",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "convergence")
    parser.add_argument("--quick", action="store_true", help="tiny budget, for a smoke test")
    args = parser.parse_args(argv)
    if args.eval_clips < 1 or args.validation_clips < 0:
        parser.error(f"--eval-clips must be >= 1 and --validation-clips >= 0, got {args.eval_clips} and {args.validation_clips}")
    if args.quick:
        args.steps, args.anneal_steps, args.train_videos, args.eval_clips, args.inference_steps = 3, 1, 4, 2, 2
        args.validation_clips = min(args.validation_clips, 2)
    torch.set_num_threads(2)
    config = yaml.safe_load(args.config.read_text())
    data_args = config["data"]["init_args"]
    if args.quick:  # smallest clips the model takes: a smoke test of the harness, not a result
        config["model"]["init_args"].setdefault("optimizer", {})["warmup_steps"] = 1
        data_args.update(resolution=32, num_frames=4, num_global_frames=2, video_width=48, video_height=48, video_frames=24)
    config = with_anneal(config, args.steps, args.anneal_steps)
    size, frames, n_global = data_args["resolution"], data_args["num_frames"], data_args["num_global_frames"]
    args.out.mkdir(parents=True, exist_ok=True)

    if args.checkpoint:
        module = M3DDMLitModule.load_from_checkpoint(args.checkpoint, map_location="cpu")
        train_seconds = None
        # the budget is the checkpoint's, not this command's defaults
        args.steps = torch.load(args.checkpoint, map_location="cpu", mmap=True, weights_only=False)["global_step"]
        args.anneal_steps = annealed_steps(module.hparams.get("optimizer") or {}, args.steps)
    else:
        module = build_module(config, args.seed)
        train_seconds = train(
            module, config, args.steps, args.out / "data", args.seed, args.train_videos, args.out,
            num_workers=0 if args.quick else None, resume=args.resume,
        )
        module.trainer.save_checkpoint(args.out / "model.ckpt")
    module.eval()

    mask = horizontal_mask(size, args.mask_ratio)
    batch = masked_batch(*eval_clips(args.eval_clips, size, frames, n_global, args.interval), mask)
    clips, masked = batch["video"], batch["masked_video"]
    guidance = Guidance(args.guidance_context, args.guidance_global)
    start = time.perf_counter()
    generated = outpaint(module, batch, args.inference_steps, args.sampler, args.timestep_spacing, guidance, args.seed)
    sample_seconds = time.perf_counter() - start
    # the clip predicted from pure noise in one step: the model's estimate of the conditional
    # mean, which is what PSNR rewards (a sample adds its own guess of what no frame shows).
    # Unguided by default: the conditional branch is the model's mean; guidance extrapolates past it.
    estimate_guidance = Guidance(*args.estimate_guidance)
    estimate = outpaint(module, batch, 1, "ddim", "trailing", estimate_guidance, args.seed)
    baseline = telea(masked, mask)

    results = {
        "model": scores(generated, clips, mask),
        "model_estimate": scores(estimate, clips, mask),
        "telea": scores(baseline, clips, mask),
        "budget": {
            "steps": args.steps, "anneal_steps": args.anneal_steps, "train_seconds": train_seconds, "seed": args.seed, "train_videos": args.train_videos,
            "resumed_from": str(args.resume) if args.resume else None,
            "checkpoint": str(args.checkpoint) if args.checkpoint else None,
        },
        "eval": {
            "clips": args.eval_clips, "frames": frames, "size": size, "mask_ratio": float(mask.mean()),
            "interval": args.interval, "sampler": args.sampler, "inference_steps": args.inference_steps,
            "timestep_spacing": make_scheduler(
                args.sampler, NoiseSchedule(**module.hparams.noise_schedule), timestep_spacing=args.timestep_spacing
            ).config.timestep_spacing,
            "guidance": [args.guidance_context, args.guidance_global], "estimate_guidance": list(args.estimate_guidance),
            "sample_seconds": sample_seconds,
        },
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip(),
        "date": time.strftime("%Y-%m-%d"),
    }
    telea_scores = results["telea"]
    results["model_beats_telea"] = {
        key: {
            "psnr_region": results[key]["psnr_region"] > telea_scores["psnr_region"],
            "temporal_error": results[key]["temporal_error"] < telea_scores["temporal_error"],
        }
        for key in ("model", "model_estimate")
    }
    results["psnr_gain_over_telea"] = {
        "model": paired_gain(generated, baseline, clips, mask),
        "model_estimate": paired_gain(estimate, baseline, clips, mask),
    }
    if args.validation_clips:
        validation = masked_batch(*eval_clips(args.validation_clips, size, frames, n_global, args.interval, VALIDATION_SEED), mask)
        results["validation_sweep"] = {
            "clips": args.validation_clips, "seed": VALIDATION_SEED,
            "estimate_by_guidance": validation_sweep(module, validation, mask, VALIDATION_GRID, args.seed),
        }
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    # rows: masked input | sample | one-step estimate | Telea | ground truth
    strip = torch.cat([masked[0], generated[0], estimate[0], baseline[0], clips[0]], dim=-2)  # F x 3 x 5H x W
    image = ((torch.cat(list(strip), dim=-1).permute(1, 2, 0).numpy() + 1) * 127.5).clip(0, 255).astype(np.uint8)
    cv2.imwrite(str(args.out / "preview.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
