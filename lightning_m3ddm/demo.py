"""``make demo``: the framework end to end on a CPU, with nothing downloaded.

1. writes shards of generated videos (textured scenes, camera pans, objects crossing the
   border) and trains the ``configs/tiny_cpu.yaml`` model for a few minutes;
2. outpaints the repo's sample clip and a held-out generated clip to 9:16 with the trained
   checkpoint (``configs/predict_tiny.yaml`` with that checkpoint's weights);
3. writes a side-by-side preview image (source | outpainted) and prints where everything is.

    python -m lightning_m3ddm.demo [--steps 300] [--out outputs/demo]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import av
import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_CLIP = ROOT / "tests" / "data" / "carphone_176x144_30fps_120f.mp4"


def _cli(args: list[str], cwd: Path) -> None:
    cmd = [sys.executable, "-m", "lightning_m3ddm", *args]
    print("$ " + " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, cwd=cwd, check=True)


def _middle_frame(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300, help="training steps of the tiny model")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "demo")
    parser.add_argument("--inference-steps", type=int, default=25)
    args = parser.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    print(f"[1/3] training the tiny model for {args.steps} steps (TensorBoard logs in {out / 'runs'})", flush=True)
    _cli(fit_args(out, args.steps), out)
    ckpt = max((out / "runs").rglob("last.ckpt"), key=lambda p: p.stat().st_mtime)

    print("[2/3] outpainting the sample clip and a generated clip to 9:16", flush=True)
    from lightning_m3ddm.data.synthetic import SyntheticVideoSpec, write_synthetic_video

    generated = write_synthetic_video(
        out / "inputs" / "generated_clip.mp4",
        SyntheticVideoSpec(width=128, height=96, num_frames=72, fps=24.0, seed=424242),
    )
    videos_dir = out / "videos"
    _cli(predict_args(ckpt, [SAMPLE_CLIP, generated], videos_dir, args.inference_steps), out)
    results = [(SAMPLE_CLIP, videos_dir / f"{SAMPLE_CLIP.stem}_9-16.mp4"), (generated, videos_dir / "generated_clip_9-16.mp4")]

    print("[3/3] preview", flush=True)
    image = preview(results, out / "preview.png")
    minutes = (time.perf_counter() - started) / 60
    print(f"\nDone in {minutes:.1f} min.")
    print(f"  checkpoint:  {ckpt}")
    for _, video in results:
        print(f"  video:       {video}")
    print(f"  preview:     {image}")
    print(f"  TensorBoard: tensorboard --logdir {out / 'runs'}")


if __name__ == "__main__":
    main()
