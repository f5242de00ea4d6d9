"""``make demo``: outpaint two clips with the tiny model this project trained, on a CPU, nothing downloaded.

``make demo`` (``python -m lightning_m3ddm.demo``) loads the exported tiny model of
``examples/tiny_model`` (its model card says how it was trained), outpaints the sample clip
and a generated clip to 9:16 with :class:`~lightning_m3ddm.OutpaintingPipeline`, writes a
side-by-side preview image (source | outpainted) and prints where everything is.

``make demo-train`` (``--train``) first trains the ``configs/tiny_cpu.yaml`` model for a few
minutes on generated videos (``fit``), then outpaints the same clips with that checkpoint
through ``predict``.

    python -m lightning_m3ddm.demo [--out outputs/demo] [--inference-steps 25]
    python -m lightning_m3ddm.demo --train [--steps 300]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from lightning_m3ddm.video.decode import iter_frames

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
SAMPLE_CLIP = EXAMPLES / "carphone_176x144_30fps_120f.mp4"
TINY_MODEL = EXAMPLES / "tiny_model"
# The tiny model's best-scoring kind of output (benchmarks/README.md, "Proof of learning"): its
# one-step estimate from pure noise (DDIM, t = 999), one model call per window instead of 25.
# Its guidance is the one that scored best on the model's validation clips (results.json's
# validation_sweep), unguided when the model has no such record.
DEMO_STEPS = 1
DEMO_GUIDANCE = (1.0, 1.0)


def best_estimate_guidance(model: Path) -> tuple[float, float]:
    """(s1, s2) of the best one-step estimate on ``model``'s validation clips, else unguided."""
    import json

    try:
        sweep = json.loads((model / "results.json").read_text())["validation_sweep"]["estimate_by_guidance"]
    except (OSError, KeyError, ValueError):
        return DEMO_GUIDANCE
    best = max(sweep, key=lambda key: sweep[key]["psnr_region"])
    s1, s2 = (float(x) for x in best.split(","))
    return s1, s2


def _cli(args: list[str], cwd: Path) -> None:
    cmd = [sys.executable, "-m", "lightning_m3ddm", *args]
    print("$ " + " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, cwd=cwd, check=True)


def _middle_frame(path: Path) -> np.ndarray:
    frames = list(iter_frames(path))
    return frames[len(frames) // 2]


def preview(pairs: list[tuple[Path, Path]], out: Path, height: int = 320) -> Path:
    """One row per (source, outpainted) pair, middle frames side by side at the same height."""
    rows = []
    for source, result in pairs:
        tiles = []
        for path in (source, result):
            frame = _middle_frame(path)
            width = round(frame.shape[1] * height / frame.shape[0])
            tiles.append(cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA))
            tiles.append(np.full((height, 8, 3), 255, np.uint8))
        rows.append(np.concatenate(tiles[:-1], axis=1))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 8), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    cv2.imwrite(str(out), cv2.cvtColor(np.concatenate(rows, axis=0), cv2.COLOR_RGB2BGR))
    return out


def fit_args(out: Path, steps: int) -> list[str]:
    """The ``fit`` command line: the tiny CPU model, its data, logs and checkpoints under ``out``."""
    return [
        "fit", "--config", str(ROOT / "configs" / "tiny_cpu.yaml"),
        f"--trainer.max_steps={steps}",
        f"--trainer.default_root_dir={out}",
        f"--trainer.logger.init_args.save_dir={out / 'runs'}",
        f"--data.init_args.root={out / 'data'}",
        # the 32 generated videos make 8-step epochs: restarting the workers each epoch
        # would cost a few seconds 38 times over
        "--data.init_args.persistent_workers=true",
    ]


def predict_args(ckpt: Path, inputs: list[Path], videos_dir: Path, inference_steps: int) -> list[str]:
    """The ``predict`` command line: ``inputs`` to 9:16 with the trained checkpoint's weights."""
    return [
        "predict", "--config", str(ROOT / "configs" / "predict_tiny.yaml"),
        "--model.init_args.weights.source=pretrained", f"--model.init_args.weights.path={ckpt}",
        "--model.init_args.unet=null", "--model.init_args.autoencoder=null",
        "--model.init_args.canvas_size=64", "--model.init_args.sampling.scheduler=ddim",
        # the tiny model was trained on 8-frame clips: 8-frame windows, key frames 7 apart
        "--model.init_args.schedule.window=8", "--model.init_args.schedule.strides=[7, 1]",
        f"--model.init_args.sampling.num_inference_steps={inference_steps}",
        "--input", *map(str, inputs), "--target_ratio", "9:16", "--output_dir", str(videos_dir),
    ]


def generated_clip(out: Path) -> Path:
    """A held-out generated clip (its seed is far from the training videos')."""
    from lightning_m3ddm.data.synthetic import SyntheticVideoSpec, write_synthetic_video

    return write_synthetic_video(
        out / "inputs" / "generated_clip.mp4",
        SyntheticVideoSpec(width=128, height=96, num_frames=72, fps=24.0, seed=424242),
    )


def outpaint_with_pipeline(
    model: Path, inputs: list[Path], videos_dir: Path, inference_steps: int, guidance: tuple[float, float] = DEMO_GUIDANCE
) -> list[Path]:
    """Each input to 9:16 with the exported model, written as ``<stem>_9-16.mp4``."""
    from lightning_m3ddm import OutpaintingPipeline

    pipe = OutpaintingPipeline.from_pretrained(model, progress=True)
    videos_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for source in inputs:
        result = pipe(source, target_ratio="9:16", num_inference_steps=inference_steps, guidance=guidance,
                      output_path=videos_dir / f"{source.stem}_9-16.mp4")
        print(f"  {source.name}: {result.timings['total']:.0f} s", flush=True)
        written.append(result.path)
    return written


def train_then_predict(out: Path, steps: int, inference_steps: int) -> tuple[list[Path], list[Path], dict]:
    """``make demo-train``: fit the tiny model, then outpaint through ``predict`` with its checkpoint."""
    print(f"[1/3] training the tiny model for {steps} steps (TensorBoard logs in {out / 'runs'})", flush=True)
    _cli(fit_args(out, steps), out)
    ckpt = max((out / "runs").rglob("last.ckpt"), key=lambda p: p.stat().st_mtime)
    print("[2/3] outpainting the sample clip and a generated clip to 9:16", flush=True)
    inputs = [SAMPLE_CLIP, generated_clip(out)]
    videos_dir = out / "videos"
    _cli(predict_args(ckpt, inputs, videos_dir, inference_steps), out)
    videos = [videos_dir / f"{path.stem}_9-16.mp4" for path in inputs]
    return inputs, videos, {"checkpoint": ckpt, "TensorBoard": f"tensorboard --logdir {out / 'runs'}"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", action="store_true", help="train the tiny model first (make demo-train)")
    parser.add_argument("--steps", type=int, default=300, help="training steps of the tiny model (--train)")
    parser.add_argument("--model", type=Path, default=TINY_MODEL, help="exported model to outpaint with")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "demo")
    parser.add_argument("--inference-steps", type=int, default=None,
                        help=f"sampling steps (default: {DEMO_STEPS}; --train: 25)")
    parser.add_argument("--guidance", type=float, nargs=2, default=None, metavar=("S1", "S2"),
                        help="guidance scales of eq. 4 (make demo only; default: the best of the model's "
                             "validation sweep in its results.json; the paper's are 2 4)")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    if args.train:
        inputs, videos, extra = train_then_predict(out, args.steps, args.inference_steps or 25)
    else:
        print(f"[1/2] outpainting the sample clip and a generated clip to 9:16 with {args.model}", flush=True)
        inputs = [SAMPLE_CLIP, generated_clip(out)]
        steps = args.inference_steps or DEMO_STEPS
        guidance = tuple(args.guidance) if args.guidance else best_estimate_guidance(args.model)
        print(f"      one-step estimate, guidance s1 = {guidance[0]:g}, s2 = {guidance[1]:g}", flush=True)
        videos = outpaint_with_pipeline(args.model, inputs, out / "videos", steps, guidance)
        extra = {"model card": args.model / "README.md"}

    print("[3/3] preview" if args.train else "[2/2] preview", flush=True)
    image = preview(list(zip(inputs, videos)), out / "preview.png")
    minutes = (time.perf_counter() - started) / 60
    print(f"\nDone in {minutes:.1f} min.")
    for video in videos:
        print(f"  video:       {video}")
    print(f"  preview:     {image}")
    for name, value in extra.items():
        print(f"  {name + ':':<12} {value}")


if __name__ == "__main__":
    main()
