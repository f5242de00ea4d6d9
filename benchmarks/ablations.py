"""Do the paper's mechanisms work here? Guide frames, global frames, mask modeling and
coarse-to-fine, measured in miniature (paper Table 2, Fig. 6a; issue 16).

Three tiny models (``configs/tiny_cpu.yaml``) are trained on the same generated videos for the
same budget, differing only in what the paper ablates (Table 2):

- ``full``: M3DDM, the paper's mask modeling mix (3.2.1) and global frames (3.2.2, p2 = 0.1);
- ``no_global``: "MSDM w/o prompt": the same mix, global frames always null (p2 = 1);
- ``sdm``: "SDM": first and last frames always given as guides, no other guide case,
  global frames always null.

Training (one variant per process, so that two can share the two cores)::

    python benchmarks/ablations.py train --variant full --out outputs/ablations
    python benchmarks/ablations.py evaluate --out outputs/ablations     # every trained variant
    python benchmarks/ablations.py --quick                              # smoke test (in the suite)
"""

from __future__ import annotations

import argparse
import copy
import json
import math
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
sys.path.insert(0, str(ROOT / "benchmarks"))

import convergence  # noqa: E402

from lightning_m3ddm.data.augmentation import AugmentationConfig, GuideFrameConfig  # noqa: E402
from lightning_m3ddm.data.sampling import global_frame_indices  # noqa: E402
from lightning_m3ddm.data.synthetic import SyntheticVideoSpec, render_frames  # noqa: E402
from lightning_m3ddm.evaluation.baselines import edge_replicate_frame, telea_frame  # noqa: E402
from lightning_m3ddm.sampling import Guidance  # noqa: E402

VARIANTS = ("full", "no_global", "sdm")
ROW_NAMES = {"full": "M3DDM (full)", "no_global": "MSDM w/o prompt (p2 = 1)", "sdm": "SDM-like (first/last guides only, no global frames)"}


def variant_config(config: dict, variant: str) -> dict:
    """``config`` changed as the paper's ablation ``variant`` (see the module docstring)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
    config = copy.deepcopy(config)
    model, data = config["model"]["init_args"], config["data"]["init_args"]
    if variant in ("no_global", "sdm"):
        model["condition_dropout"] = {**(model.get("condition_dropout") or {}), "global_frames": 1.0}
    if variant == "sdm":
        guide = GuideFrameConfig(p_none=0.0, p_first=0.0, p_first_and_last=1.0, p_random_frames=0.0)
        data["augmentation"] = AugmentationConfig(guide=guide)
    return config


def load_config(path: Path, quick: bool) -> dict:
    config = yaml.safe_load(path.read_text())
    if quick:  # smallest clips the model takes: a smoke test of the harness, not a result
        config["model"]["init_args"].setdefault("optimizer", {})["warmup_steps"] = 1
        config["data"]["init_args"].update(
            resolution=32, num_frames=4, num_global_frames=2, video_width=48, video_height=48, video_frames=24
        )
    return config


def train_variant(args: argparse.Namespace, variant: str) -> Path:
    """Train ``variant`` into ``args.out / variant / model.ckpt`` and record its cost."""
    config = convergence.with_anneal(variant_config(load_config(args.config, args.quick), variant), args.steps, args.anneal_steps)
    out = args.out / variant
    out.mkdir(parents=True, exist_ok=True)
    commit = git_commit()  # the code that trains, not whatever is checked out when it ends
    module = convergence.build_module(config, args.seed)
    resume = None
    if args.resume:  # a run stopped part-way continues from its last checkpoint: same budget, same schedule
        resume = out / "checkpoints" / "last.ckpt"
        if not resume.is_file():
            raise SystemExit(f"--resume: {resume} does not exist; train {variant} without --resume")
        resumed_step = torch.load(resume, map_location="cpu", weights_only=False)["global_step"]
    seconds = convergence.train(
        module, config, args.steps, args.out / "data", args.seed, args.train_videos, out,
        num_workers=0 if args.quick else args.num_workers, resume=resume,
    )
    module.trainer.save_checkpoint(out / "model.ckpt")
    budget = {
        "variant": variant, "steps": args.steps, "anneal_steps": args.anneal_steps, "seed": args.seed,
        "train_videos": args.train_videos, "train_seconds": round(seconds, 1), "threads": torch.get_num_threads(),
        "commit": commit,
        "date": time.strftime("%Y-%m-%d"),
    }
    if resume is not None:  # train_seconds covers the steps after the resume only
        budget["resumed_from_step"] = resumed_step
    (out / "budget.json").write_text(json.dumps(budget, indent=2))
    return out / "model.ckpt"


# -- evaluation data: each mechanism has something to find, and the ground truth is known ---------

EVAL_SEED = 30_000_000  # held out: training videos use seeds from 0, convergence.py's from 10,000,000
GUIDE_CASES = {"none": (), "first": (0,), "first_and_last": (0, -1)}


def render(spec: SyntheticVideoSpec, size: int) -> torch.Tensor:
    """(F, 3, size, size) in [-1, 1]: the generated video, resized as the training clips are."""
    frames = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in render_frames(spec)])
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1


def clip_set(
    num: int, size: int, frames: int, num_global: int, interval: int, seed: int,
    video_frames: int = 48, heading: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Clips (N, F, 3, H, W) from the middle of ``video_frames``-frame generated videos, like
    the training videos, with their global frames (N, G, 3, H, W) from the whole video, and fps.

    ``heading``: the camera pan of every video (radians; None: the seed's). With a sideways
    pan, what a side band hides at one time is in the middle of the frame at another.
    """
    clips, globals_ = [], []
    start = max(0, (video_frames - frames * interval) // 2)
    for i in range(num):
        # alternate the pan's direction, so that neither side is always the one coming into view
        pan = None if heading is None else heading + math.pi * (i % 2)
        spec = SyntheticVideoSpec(width=96, height=96, num_frames=video_frames, fps=24.0, seed=seed + i, pan_heading=pan)
        video = render(spec, size)
        clips.append(video[start : start + frames * interval : interval])
        globals_.append(video[list(global_frame_indices(video_frames, num_global))])
    return torch.stack(clips), torch.stack(globals_), 24 // interval


def with_guides(batch: dict, guide_frames: tuple[int, ...]) -> dict:
    """``batch`` with ``guide_frames`` given whole (mask 0, their pixels known), paper 3.2.1."""
    out = {k: v.clone() for k, v in batch.items()}
    for f in guide_frames:
        out["mask"][:, f] = 0
        out["masked_video"][:, f] = out["video"][:, f]
    return out


def scored_frames(num_frames: int) -> list[int]:
    """The frames generated in every guide case (not the first nor the last): what all rows score."""
    return list(range(1, num_frames - 1))


def region_scores(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor, frames: list[int]) -> dict:
    """PSNR per clip over the generated region of ``frames``, and the temporal error."""
    p, g = pred[:, frames], gt[:, frames]
    return {"psnr_per_clip": convergence.clip_psnr(p, g, mask), "temporal_error": convergence.temporal_error(p, g, mask)}


def paired(a: torch.Tensor, b: torch.Tensor) -> dict:
    """Mean and standard error of a - b, clip by clip (dB), and in how many clips a is higher."""
    d = a - b
    stderr = round(float(d.std() / len(d) ** 0.5), 3) if len(d) > 1 else None  # one clip: no standard error
    return {"mean_db": round(float(d.mean()), 3), "stderr_db": stderr, "clips_higher": int((d > 0).sum()), "clips": len(d)}


def summary(scores: dict) -> dict:
    return {"psnr_region": round(float(scores["psnr_per_clip"].mean()), 3), "temporal_error": round(scores["temporal_error"], 4)}


def baseline(name: str, batch: dict) -> torch.Tensor:
    """Per-frame ``telea`` or ``edge`` (replicate the nearest known pixel) of the batch's clips."""
    masks = batch["mask"][:, :, 0].numpy().astype(bool)
    fill = {"telea": lambda f, m: telea_frame(f, m, radius=5.0), "edge": edge_replicate_frame}[name]
    out = batch["masked_video"].clone()
    for n in range(out.shape[0]):
        for f in range(out.shape[1]):
            if masks[n, f].any():
                frame = ((out[n, f].permute(1, 2, 0).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
                out[n, f] = torch.from_numpy(fill(frame, masks[n, f])).permute(2, 0, 1).float() / 127.5 - 1
    return out


def translated(image: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """``image`` (C, H, W) read at (x + dx, y + dy) for each (dx, dy) of ``shifts`` (S, 2),
    bilinear, 0 outside the frame: (S, C, H, W)."""
    _, h, w = image.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    gx = 2 * (xs[None] + shifts[:, 0, None, None]) / (w - 1) - 1
    gy = 2 * (ys[None] + shifts[:, 1, None, None]) / (h - 1) - 1
    grid = torch.stack([gx, gy], dim=-1)  # (S, H, W, 2)
    return torch.nn.functional.grid_sample(
        image.expand(len(shifts), *image.shape), grid, mode="bilinear", padding_mode="zeros", align_corners=True
    )


def _shifted_sources(source: torch.Tensor, source_known: torch.Tensor, shifts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``source`` translated by each shift (S, C, H, W), and where it is known there (S, H, W)."""
    return translated(source, shifts), translated(source_known[None].float(), shifts)[:, 0] >= 0.999


def _best_shift(frame: torch.Tensor, known: torch.Tensor, candidates: torch.Tensor, covered: torch.Tensor,
                min_overlap: int) -> tuple[int, float]:
    """Index of the candidate whose known pixels line up best with ``frame``'s known pixels,
    and its mean squared error over the overlap (inf when no overlap reaches ``min_overlap``)."""
    overlap = covered & known[None]
    count = overlap.flatten(1).sum(1)
    err = ((candidates - frame[None]) ** 2).mean(1)  # (S, H, W)
    mse = (err * overlap).flatten(1).sum(1) / count.clamp_min(1)
    mse[count < min_overlap] = float("inf")
    k = int(mse.argmin())
    return k, float(mse[k])


def registered_global_copy(batch: dict, max_shift: tuple[int, int] = (30, 10), min_overlap: int = 256) -> torch.Tensor:
    """What the global frames carry about the bands, read without a model: each frame's masked
    pixels copied from the global frame that lines up best with it.

    For every clip frame and global frame, the translation (whole pixels up to ``max_shift``
    (dx, dy), then refined to a quarter pixel, bilinear) that best matches the global frame's
    known pixels to the frame's known pixels over at least ``min_overlap`` pixels is found;
    each masked pixel takes the value of the best-matching global frame that covers it there,
    and Telea's where none does. Only the model's inputs are read: the masked clip and the
    global frames, masked like it (3.2.2). Moving objects and the camera's zoom-free wobble
    are what a translation cannot explain.
    """
    masked, mask, global_frames = batch["masked_video"], batch["mask"], batch["global_frames"]
    n, f = masked.shape[:2]
    mx, my = max_shift
    coarse = torch.cartesian_prod(torch.arange(-mx, mx + 1.0), torch.arange(-my, my + 1.0))
    fine = torch.cartesian_prod(torch.arange(-1, 1.01, 0.25), torch.arange(-1, 1.01, 0.25))
    out = baseline("telea", batch)
    for i in range(n):
        known = ~mask[i, :, 0].bool()  # (F, H, W)
        global_known = ~mask[i, 0, 0].bool()  # global frames are masked like the context
        best_err = torch.full(known.shape, float("inf"))
        for g in range(global_frames.shape[1]):
            source = global_frames[i, g]
            candidates, covered = _shifted_sources(source, global_known, coarse)  # once per global frame
            for t in range(f):
                k, mse = _best_shift(masked[i, t], known[t], candidates, covered, min_overlap)
                if mse == float("inf"):
                    continue
                refined, refined_covered = _shifted_sources(source, global_known, coarse[k] + fine)
                k, mse = _best_shift(masked[i, t], known[t], refined, refined_covered, min_overlap)
                fill = refined_covered[k] & ~known[t] & (mse < best_err[t])  # (H, W)
                out[i, t][:, fill] = refined[k][:, fill]
                best_err[t][fill] = mse
    return out


def load_variant(out: Path, variant: str):
    from lightning_m3ddm.lit_module import M3DDMLitModule

    path = out / variant / "model.ckpt"
    if not path.exists():
        return None
    module = M3DDMLitModule.load_from_checkpoint(path, map_location="cpu").eval()
    return module


def uses_global_frames(variant: str) -> bool:
    return variant == "full"


def model_runs(variant: str, args: argparse.Namespace) -> dict[str, tuple[int, str, Guidance]]:
    """How each variant is scored: its one-step estimate (unguided: its conditional mean) and
    its samples (the paper's s1 = 2, s2 = 4). A variant trained without global frames never
    saw real ones: it gets the null global frames it was trained on (s2 = 0: the c2-free branch)."""
    s2_estimate, s2_sample = (1.0, args.guidance_global) if uses_global_frames(variant) else (0.0, 0.0)
    return {
        "estimate": (1, "ddim", Guidance(1.0, s2_estimate)),
        "sample": (args.inference_steps, "ddim", Guidance(args.guidance_context, s2_sample)),
    }


def guide_table(models: dict, args: argparse.Namespace, geometry: dict, previous: dict | None = None) -> dict:
    """Table 2 in miniature: every model and reference on the three guide cases (3.2.1).

    ``previous``: this section of an earlier run on the same clips; its rows are kept and the
    models given here are (re)scored, so that a model trained later joins the same table."""
    size, frames, n_global = geometry["resolution"], geometry["num_frames"], geometry["num_global_frames"]
    mask = convergence.horizontal_mask(size, args.mask_ratio)
    base = convergence.masked_batch(*clip_set(args.clips, size, frames, n_global, args.interval, EVAL_SEED), mask)
    score_on = scored_frames(frames)
    rows: dict = {}
    per_clip: dict = {}
    if previous and previous.get("clips") == args.clips and previous.get("scored_frames") == score_on:
        rows = {row: dict(by_case) for row, by_case in previous["rows"].items() if row.partition("/")[0] not in models}
        per_clip = {
            tuple(key.split("|")): torch.tensor(values) for key, values in previous.get("psnr_per_clip", {}).items()
            if key.split("|")[0].partition("/")[0] not in models
        }
    for case, guides in GUIDE_CASES.items():
        batch = with_guides(base, guides)
        for ref in ("telea", "edge"):
            s = region_scores(baseline(ref, batch), batch["video"], mask, score_on)
            rows.setdefault(ref, {})[case] = summary(s)
            per_clip[(ref, case)] = s["psnr_per_clip"]
        for variant, module in models.items():
            for kind, (steps, sampler, guidance) in model_runs(variant, args).items():
                if kind == "sample" and case not in args.sample_cases:
                    continue
                pred = convergence.outpaint(module, batch, steps, sampler, "trailing", guidance, args.seed)
                s = region_scores(pred, batch["video"], mask, score_on)
                rows.setdefault(f"{variant}/{kind}", {})[case] = summary(s)
                per_clip[(f"{variant}/{kind}", case)] = s["psnr_per_clip"]
    # each mechanism's effect, paired clip by clip: (name, row a, row b, guide cases)
    comparisons = [
        ("guide frames ({case} vs none), full", "full", "full", ("first", "first_and_last"), "none"),
        ("mask modeling (MSDM w/o prompt vs SDM-like), {case}", "no_global", "sdm", tuple(GUIDE_CASES), None),
        ("global frames (full vs w/o prompt), {case}", "full", "no_global", tuple(GUIDE_CASES), None),
        ("full vs Telea, {case}", "full", "telea", tuple(GUIDE_CASES), None),
    ]
    effects: dict = {}
    for name, a, b, cases, b_case in comparisons:
        for kind in ("estimate", "sample"):
            for case in cases:
                row_a, row_b = (f"{a}/{kind}", case), (b if b == "telea" else f"{b}/{kind}", b_case or case)
                if row_a in per_clip and row_b in per_clip:
                    effects[f"{name.format(case=case)}, {kind}"] = paired(per_clip[row_a], per_clip[row_b])
    return {
        "clips": args.clips, "seed": EVAL_SEED, "scored_frames": score_on, "mask_ratio": float(mask.mean()), "rows": rows,
        "effects": effects, "psnr_per_clip": {f"{row}|{case}": [round(float(x), 4) for x in v] for (row, case), v in per_clip.items()},
    }


def global_frames_sweep(models: dict, args: argparse.Namespace, geometry: dict) -> dict:
    """Global frames (3.2.2, 3.2.3) on sideways pans, where the hidden band is in the middle of
    the frame elsewhere in the video: the full model's estimate for s2 in ``--s2-sweep`` (s2 = 0:
    null global frames), its samples with and without them, and the model trained without them."""
    size, frames, n_global = geometry["resolution"], geometry["num_frames"], geometry["num_global_frames"]
    mask = convergence.horizontal_mask(size, args.mask_ratio)
    batch = convergence.masked_batch(*clip_set(args.clips, size, frames, n_global, 1, EVAL_SEED + 500_000, heading=0.0), mask)
    score_on = list(range(frames))
    out: dict = {"clips": args.clips, "seed": EVAL_SEED + 500_000, "interval": 1, "pan": "sideways, alternating direction", "rows": {}}
    per_clip: dict = {}
    telea = region_scores(baseline("telea", batch), batch["video"], mask, score_on)
    out["rows"]["telea"] = summary(telea)
    # how much the global frames carry, read without a model: what a model that reads them
    # could gain over Telea by copying alone
    copy = region_scores(registered_global_copy(batch), batch["video"], mask, score_on)
    out["rows"]["global-frame copy (registered)"] = summary(copy)
    out["effects"] = {"global-frame copy vs telea": paired(copy["psnr_per_clip"], telea["psnr_per_clip"])}
    if "full" in models:
        module = models["full"]
        sweep = sorted({0.0, 1.0, *args.s2_sweep})  # null global frames, and the unguided estimate
        for s2 in sweep:
            s = region_scores(convergence.outpaint(module, batch, 1, "ddim", "trailing", Guidance(1.0, s2), args.seed), batch["video"], mask, score_on)
            out["rows"][f"full/estimate s2={s2:g}"] = summary(s)
            per_clip[("estimate", s2)] = s["psnr_per_clip"]
        for s2 in (0.0, args.guidance_global) if args.global_samples else ():
            guidance = Guidance(args.guidance_context, s2)
            s = region_scores(convergence.outpaint(module, batch, args.inference_steps, "ddim", "trailing", guidance, args.seed), batch["video"], mask, score_on)
            out["rows"][f"full/sample s1={args.guidance_context:g} s2={s2:g}"] = summary(s)
            per_clip[("sample", s2)] = s["psnr_per_clip"]
        out["effects"].update({
            f"estimate s2={s2:g} vs s2=0": paired(per_clip[("estimate", s2)], per_clip[("estimate", 0.0)]) for s2 in sweep if s2 != 0.0
        })
        out["effects"]["global-frame copy vs full estimate (s2=1)"] = paired(copy["psnr_per_clip"], per_clip[("estimate", 1.0)])
        if args.global_samples:
            out["effects"][f"sample s2={args.guidance_global:g} vs s2=0"] = paired(per_clip[("sample", args.guidance_global)], per_clip[("sample", 0.0)])
        out["sensitivity"] = global_sensitivity(module, batch)
    if "no_global" in models:
        for kind, (steps, sampler, guidance) in model_runs("no_global", args).items():
            if kind == "sample" and not args.global_samples:
                continue
            s = region_scores(convergence.outpaint(models["no_global"], batch, steps, sampler, "trailing", guidance, args.seed), batch["video"], mask, score_on)
            out["rows"][f"no_global/{kind}"] = summary(s)
            per_clip[("no_global", kind)] = s["psnr_per_clip"]
        if "full" in models:
            out["effects"]["full estimate (s2=1) vs w/o prompt estimate"] = paired(per_clip[("estimate", 1.0)], per_clip[("no_global", "estimate")])
    return out


def global_sensitivity(module, batch: dict) -> dict:
    """How much the full model's prediction depends on its global frames: the relative change
    of its output at a few noise levels when real global frames are replaced by the null ones,
    and by the global frames of another clip. A pathway that does not reach the UNet gives 0."""
    unet = module.denoiser()
    latents, condition, global_latents, _ = module.encode_batch(batch)
    tokens = unet.encode_global_frames(global_latents)
    null_tokens = unet.encode_global_frames(torch.zeros_like(global_latents))
    other_tokens = unet.encode_global_frames(global_latents.roll(1, dims=0))
    out = {}
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for t in (999, 500, 100):
            noise = torch.randn(latents.shape, generator=generator)
            timestep = torch.full((latents.shape[0],), t)
            x = condition.unet_input(noise)
            real, null, other = (
                unet(x, timestep, fps=batch["fps"], global_tokens=g).sample for g in (tokens, null_tokens, other_tokens)
            )
            scale = real.norm()
            out[f"t={t}"] = {"null_vs_real": round(float((null - real).norm() / scale), 4), "other_clip_vs_real": round(float((other - real).norm() / scale), 4)}
    return out


PLANS = {"dense": (1,), "15,5,1": (15, 5, 1), "30,15,1": (30, 15, 1)}  # released script / paper 4.3.1


def coarse_to_fine(checkpoint: Path, args: argparse.Namespace, geometry: dict) -> dict:
    """Coarse-to-fine (3.3, Fig. 6a) on long generated videos through the library pipeline: every
    plan outpaints the same videos with the same model and seeds; region PSNR by segment of the
    video (drift: does the error grow with the frame index?) and the temporal error."""
    from lightning_m3ddm import OutpaintingPipeline
    from lightning_m3ddm.coarse_to_fine import ScheduleConfig

    size = geometry["resolution"]
    side = int(size * args.mask_ratio / 2)
    mask = torch.zeros(size, size)
    mask[:, :side], mask[:, size - side :] = 1, 1
    videos = [
        render(SyntheticVideoSpec(width=96, height=96, num_frames=args.long_frames, seed=EVAL_SEED + 900_000 + i), size)
        for i in range(args.long_videos)
    ]
    truth = torch.stack(videos)  # (N, F, 3, H, W)
    base = OutpaintingPipeline.from_pretrained(checkpoint, progress=False)
    window = base.schedule.window
    rows, per_video, per_segment, seconds = {}, {}, {}, {}
    segments = torch.linspace(0, args.long_frames, args.segments + 1).long().tolist()

    def score(name: str, pred: torch.Tensor) -> None:
        psnr = torch.stack([convergence.clip_psnr(pred[:, a:b], truth[:, a:b], mask) for a, b in zip(segments, segments[1:])], 1)
        per_video[name] = convergence.clip_psnr(pred, truth, mask)
        per_segment[name] = [round(float(x), 3) for x in psnr.mean(0)]
        rows[name] = {
            "psnr_region": round(float(per_video[name].mean()), 3),
            "temporal_error": round(convergence.temporal_error(pred, truth, mask), 4),
            "psnr_by_segment": per_segment[name],
        }

    masked = torch.where(mask.bool(), -1.0, truth)
    score("telea", torch.stack([convergence.telea(v[None], mask)[0] for v in masked]))
    for name, strides in PLANS.items():
        schedule = ScheduleConfig(window=window, strides=strides, dense_threshold=1 if len(strides) > 1 else 10**9, compat="framework")
        pipe = OutpaintingPipeline.from_pretrained(checkpoint, progress=False, schedule=schedule)
        outputs = []
        start = time.perf_counter()
        for video in videos:
            frames = ((video[:, :, :, side : size - side].permute(0, 2, 3, 1) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
            result = pipe(
                frames, fps=24, padding=(side, side, 0, 0), num_inference_steps=args.c2f_steps,
                guidance=tuple(args.c2f_guidance), seed=args.seed, progress=False,
            )
            outputs.append(torch.from_numpy(np.asarray(result.frames)).permute(0, 3, 1, 2).float() / 127.5 - 1)
        seconds[name] = round(time.perf_counter() - start, 1)
        score(name, torch.stack(outputs))
        rows[name]["unet_calls_per_video"] = pipe.unet_calls // len(videos) if hasattr(pipe, "unet_calls") else None
        rows[name]["plan"] = [level.stride for level in schedule.plan(args.long_frames).levels]
    effects = {f"{name} vs dense": paired(per_video[name], per_video["dense"]) for name in PLANS if name != "dense"}
    effects.update({f"{name} vs telea": paired(per_video[name], per_video["telea"]) for name in PLANS})
    drift = {name: round(per_segment[name][-1] - per_segment[name][0], 3) for name in per_segment}
    return {
        "videos": args.long_videos, "frames": args.long_frames, "window": window, "seed": EVAL_SEED + 900_000,
        "inference_steps": args.c2f_steps, "guidance": list(args.c2f_guidance), "segments": segments,
        "rows": rows, "effects": effects, "last_minus_first_segment_db": drift, "seconds": seconds,
    }


SECTIONS = ("guide", "global", "c2f")


def evaluate(args: argparse.Namespace) -> dict:
    """Run ``args.sections`` and merge them into ``out/results.json`` (each section records its
    own command, commit and date, so that one can be re-run alone, e.g. once a model is trained)."""
    geometry = load_config(args.config, args.quick)["data"]["init_args"]
    models = {v: m for v in (args.variant or VARIANTS) if (m := load_variant(args.out, v)) is not None}
    if not models:
        raise SystemExit(f"no trained variant under {args.out}: run `python benchmarks/ablations.py train --variant full` first")
    path = args.out / "results.json"
    results: dict = json.loads(path.read_text()) if path.exists() and not args.quick else {}
    results["budgets"] = {
        **results.get("budgets", {}),
        **{v: json.loads((args.out / v / "budget.json").read_text()) for v in models if (args.out / v / "budget.json").exists()},
    }
    header = {
        "command": "python benchmarks/ablations.py " + " ".join(sys.argv[1:] if args.argv is None else args.argv),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "commit": git_commit(), "date": time.strftime("%Y-%m-%d"), "models": sorted(models),
        "sampling": {
            "estimate": "DDIM, 1 step from t = 999 (trailing), s1 = 1, s2 = 1 (0 for variants without global frames)",
            "sample": f"DDIM {args.inference_steps} steps, trailing, s1 = {args.guidance_context:g}, s2 = {args.guidance_global:g} (0 for variants without global frames)",
        },
    }
    runs = {
        "guide": ("guide_and_mask_modeling", lambda: guide_table(models, args, geometry, results.get("guide_and_mask_modeling"))),
        "global": ("global_frames", lambda: global_frames_sweep(models, args, geometry)),
        "c2f": ("coarse_to_fine", lambda: coarse_to_fine(args.out / "full" / "model.ckpt", args, geometry)),
    }
    for section in args.sections:
        if section == "c2f" and ("full" not in models or not args.long_videos):
            continue
        key, run = runs[section]
        start = time.perf_counter()
        section = run()
        history = [*(results.get(key) or {}).get("runs", []), {k: header[k] for k in ("command", "commit", "date", "models")}]
        results[key] = {**header, **section, "eval_seconds": round(time.perf_counter() - start, 1), "runs": history}
    path.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    return results


def _effect(e: dict) -> str:
    se = "" if e["stderr_db"] is None else f" ± {e['stderr_db']:.2f}"
    return f"{e['mean_db']:+.2f}{se} dB ({e['clips_higher']}/{e['clips']})"


def report(results: dict) -> str:
    """Markdown tables of ``results.json``: what benchmarks/README.md quotes."""
    lines = []
    if guide := results.get("guide_and_mask_modeling"):
        cases = list(GUIDE_CASES)
        lines += [
            f"Region PSNR (dB) / temporal error on frames {guide['scored_frames']} of {guide['clips']} held-out clips "
            f"(seed {guide['seed']}), {guide['mask_ratio']:.0%} of the width generated; commit {guide['commit']}, {guide['date']}:",
            "",
            "| row | " + " | ".join(f"guides: {c}" for c in cases) + " |",
            "|---|" + "---|" * len(cases),
        ]
        names = {"telea": "Telea (per frame)", "edge": "edge replication"}
        for row, by_case in guide["rows"].items():
            variant, _, kind = row.partition("/")
            name = names.get(row) or f"{ROW_NAMES[variant]}, {kind}"
            cells = (f"{by_case[c]['psnr_region']:.2f} / {by_case[c]['temporal_error']:.3f}" if c in by_case else "not run" for c in cases)
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines += ["", "| effect (paired, clip by clip: mean ± standard error, clips higher) | |", "|---|---|"]
        lines += [f"| {name} | {_effect(e)} |" for name, e in guide["effects"].items()]
        lines.append("")
    if sweep := results.get("global_frames"):
        lines += [
            f"Global frames: {sweep['clips']} sideways pans (seed {sweep['seed']}, every frame scored); commit {sweep['commit']}, {sweep['date']}:",
            "",
            "| row | region PSNR (dB) | temporal error |",
            "|---|---|---|",
        ]
        lines += [f"| {row} | {r['psnr_region']:.2f} | {r['temporal_error']:.3f} |" for row, r in sweep["rows"].items()]
        lines += ["", "| effect | |", "|---|---|"]
        lines += [f"| {name} | {_effect(e)} |" for name, e in sweep.get("effects", {}).items()]
        if "sensitivity" in sweep:
            lines += ["", "| relative change of the full model's output | " + " | ".join(sweep["sensitivity"]) + " |", "|---|" + "---|" * len(sweep["sensitivity"])]
            for key in ("null_vs_real", "other_clip_vs_real"):
                lines.append(f"| {key} | " + " | ".join(f"{v[key]:.4f}" for v in sweep["sensitivity"].values()) + " |")
        lines.append("")
    if c2f := results.get("coarse_to_fine"):
        lines += [
            f"Coarse-to-fine: {c2f['videos']} videos of {c2f['frames']} frames (seed {c2f['seed']}), window {c2f['window']}, "
            f"DDIM {c2f['inference_steps']} steps, guidance {c2f['guidance']}; commit {c2f['commit']}, {c2f['date']}:",
            "",
            "| plan | levels | region PSNR (dB) | temporal error | PSNR by segment (first → last) | last − first segment (dB) | seconds |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, r in c2f["rows"].items():
            segs = " ".join(f"{x:.1f}" for x in r["psnr_by_segment"])
            lines.append(
                f"| {name} | {r.get('plan', '')} | {r['psnr_region']:.2f} | {r['temporal_error']:.3f} | {segs} | "
                f"{c2f['last_minus_first_segment_db'][name]:+.2f} | {c2f['seconds'].get(name, '')} |"
            )
        lines += ["", "| effect | |", "|---|---|"]
        lines += [f"| {name} | {_effect(e)} |" for name, e in c2f["effects"].items()]
    return "\n".join(lines)


def git_commit() -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()


def main(argv: list[str] | None = None) -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", nargs="?", choices=["train", "evaluate", "report"], default="evaluate")
    parser.add_argument("--variant", choices=VARIANTS, action="append", help="train or evaluate these (default: all)")
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "tiny_cpu.yaml")
    parser.add_argument("--steps", type=int, default=1000, help="training steps of every variant (the budget)")
    parser.add_argument("--anneal-steps", type=int, default=350)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--resume", action="store_true",
        help="train: continue each variant from its checkpoints/last.ckpt (a run that was stopped)",
    )
    parser.add_argument("--train-videos", type=int, default=512)
    parser.add_argument("--num-workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "ablations")
    parser.add_argument("--clips", type=int, default=16, help="held-out clips per measurement")
    parser.add_argument("--mask-ratio", type=float, default=0.5, help="fraction of the width generated (both sides)")
    parser.add_argument("--interval", type=int, default=2, help="source frames between clip frames (guide table)")
    parser.add_argument("--inference-steps", type=int, default=10, help="DDIM steps of the samples")
    parser.add_argument(
        "--sample-cases", nargs="+", choices=list(GUIDE_CASES), default=list(GUIDE_CASES),
        help="guide cases scored with samples too (estimates: all); samples cost --inference-steps x 3 model calls",
    )
    parser.add_argument("--guidance-context", type=float, default=2.0, help="s1 of the samples (paper 4.4.1)")
    parser.add_argument("--guidance-global", type=float, default=4.0, help="s2 of the samples (paper 4.4.1)")
    parser.add_argument("--s2-sweep", type=float, nargs="+", default=[0.0, 1.0, 2.0, 4.0], help="s2 of the global-frame sweep (estimates, s1 = 1)")
    parser.add_argument(
        "--global-samples", type=int, choices=(0, 1), default=1,
        help="1: the global-frame section also samples (s2 = 0 and s2 = --guidance-global); 0: estimates only",
    )
    parser.add_argument("--long-videos", type=int, default=4, help="videos of the coarse-to-fine measurement; 0: skip it")
    parser.add_argument("--long-frames", type=int, default=320)
    parser.add_argument("--segments", type=int, default=8, help="segments of a long video, for the drift")
    parser.add_argument("--c2f-steps", type=int, default=1, help="DDIM steps of the coarse-to-fine runs (1: the one-step estimate)")
    parser.add_argument("--c2f-guidance", type=float, nargs=2, default=(1.0, 1.0), metavar=("S1", "S2"), help="guidance of the coarse-to-fine runs")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS), help="what to measure (merged into results.json)")
    parser.add_argument("--quick", action="store_true", help="tiny models and few clips: a smoke test of the harness")
    args = parser.parse_args(argv)
    args.argv = argv
    torch.set_num_threads(args.threads)
    variants = args.variant or list(VARIANTS)
    if args.quick:
        args.steps, args.anneal_steps, args.train_videos = 3, 1, 4
        args.clips, args.inference_steps, args.long_videos, args.long_frames, args.c2f_steps, args.segments = 2, 2, 1, 32, 2, 2
        args.s2_sweep = [4.0]
    if args.command == "train" or args.quick:
        for variant in variants:
            train_variant(args, variant)
    if args.command == "train":
        return None
    if args.command == "report":
        print(report(json.loads((args.out / "results.json").read_text())))
        return None
    return evaluate(args)


if __name__ == "__main__":
    main()
