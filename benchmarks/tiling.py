"""Beyond the model's canvas: generating the border upscaled from the model's canvas, or tiled.

Held-out generated clips (the textured scenes of the training data, seeds apart from it) are
rendered once at ``--render`` pixels and area-shrunk to every size compared, so each size has
its own ground truth. The source is the middle half of the width (a 1:2 portrait), outpainted
to 1:1 through the predict pipeline (``OutpaintingPipeline``), the output at the source's
resolution (``native``):

- ``upscaled``: the border generated on the model's canvas (64 px for the tiny model) and
  upscaled to the output, as predict does by default;
- ``tiled``: generated on a canvas of the output's size as overlapping model-size windows
  (``TilingConfig(scale=size / 64)``), global frames shrunk to the model's canvas (``resize``)
  or cropped per window (``crop``), with or without the coherence pass (``+coherence``).

Scores over the generated region, every frame, against the ground truth at that size:

- region PSNR (dB, higher is better);
- sharpness: mean squared Laplacian (grey levels) of the output over the ground truth's
  (1 = as much fine detail as the truth; an upscaled border is < 1);
- seams: mean absolute gradient across the tiled windows' borders over that across the other
  latent-cell borders in the region (the autoencoder decodes each cell on its own, so every
  cell border is a small edge; 1 = a window border is no stronger; the same window lines are
  scored for every method at that size and for the ground truth);
- temporal error: mean |Δoutput − Δtruth| between consecutive frames ([0, 1] scale);
- seconds per frame (outpaint + decode + composite) and the peak resident memory of the
  process that ran the method (each method runs in its own process), and the largest UNet
  call (samples x latent size: tiling keeps it at one batch of model-size windows).

    python benchmarks/tiling.py --checkpoint outputs/convergence/model.ckpt --out outputs/tiling
    python benchmarks/tiling.py --quick --out /tmp/tiling      # random weights, seconds: a smoke test
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.convergence import clip_psnr, temporal_error  # noqa: E402
from lightning_m3ddm.autoencoders import PatchDCTAutoencoder  # noqa: E402
from lightning_m3ddm.coarse_to_fine import ScheduleConfig  # noqa: E402
from lightning_m3ddm.data.synthetic import SyntheticVideoSpec, render_frames  # noqa: E402
from lightning_m3ddm.video.decode import encode_video  # noqa: E402
from lightning_m3ddm.geometry import AspectRatio  # noqa: E402
from lightning_m3ddm.lit_module import UNetInit  # noqa: E402
from lightning_m3ddm.predict.composite import NativeCompositor  # noqa: E402
from lightning_m3ddm.predict.pipeline import GlobalFramesConfig, SamplingConfig  # noqa: E402
from lightning_m3ddm.predict.predictor import M3DDMPredictor  # noqa: E402
from lightning_m3ddm.predict.tiling import TilingConfig  # noqa: E402
from lightning_m3ddm.video.stream import iter_source_frames, probe_source  # noqa: E402

MODEL_CANVAS = 64  # the tiny model's training resolution (configs/tiny_cpu.yaml)
TRAIN_RENDER = 96  # its training videos are rendered at 96 px and shrunk to 64 (synthetic_shards)
TARGET = AspectRatio(1, 1)
HELD_OUT_SEED = 30_000_000  # apart from the training videos and convergence.py's clips
# a smaller UNet than the tiny model's, random weights, for --quick
QUICK_UNET = dict(block_out_channels=[16, 16, 16, 16], layers_per_block=1, norm_num_groups=8, attention_head_dim=4,
                  cross_attention_dim=16, temporal_position_embed_dim=16)


@dataclass(frozen=True)
class Method:
    """One way to outpaint the clips at one output size."""

    size: int
    scale: float = 1.0
    global_frames: str = "resize"
    coherence: bool = False

    @property
    def name(self) -> str:
        if self.scale == 1:
            return f"upscaled@{self.size}" if self.size != MODEL_CANVAS else f"model@{self.size}"
        return f"tiled-{self.global_frames}{'+coherence' if self.coherence else ''}@{self.size}"

    def tiling(self, overlap: float, strength: float) -> TilingConfig:
        return TilingConfig(
            scale=self.scale, overlap=overlap, global_frames=self.global_frames, coherence=self.coherence,
            coherence_strength=strength,
        )


def methods_for(sizes: list[int], crop_sizes: list[int] | None = None) -> list[Method]:
    """Every method at every size; ``crop`` global frames only at ``crop_sizes`` (None: every size)."""
    out = [Method(MODEL_CANVAS)]
    for size in sizes:
        scale = size / MODEL_CANVAS
        out += [Method(size), Method(size, scale)]
        if crop_sizes is None or size in crop_sizes:
            out.append(Method(size, scale, "crop"))
        out.append(Method(size, scale, coherence=True))
    return out


def render_clips(out: Path, num_clips: int, frames: int, interval: int, render: int, sizes: list[int]) -> dict:
    """Write each clip's source (middle half of the width) as a lossless mp4 per size; return the truths.

    Returns {size: (N, F, H, W, 3) uint8 ground truth}.
    """
    truths: dict[int, list[np.ndarray]] = {s: [] for s in sizes}
    for i in range(num_clips):
        # the pan at the training videos' speed relative to the frame (2 px per frame at 96 px)
        spec = SyntheticVideoSpec(width=render, height=render, num_frames=frames * interval + 8, fps=24.0,
                                  pan_speed=2.0 * render / TRAIN_RENDER, seed=HELD_OUT_SEED + i)
        clip = list(render_frames(spec))[: frames * interval : interval]
        for size in sizes:
            video = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in clip])
            truths[size].append(video)
            encode_video(video[:, :, size // 4 : 3 * size // 4], out / f"clip{i}_{size}.mp4", fps=24 / interval, crf=0)
    return {s: np.stack(v) for s, v in truths.items()}


def make_predictor(args, method: Method) -> M3DDMPredictor:
    if args.checkpoint is not None:
        weights, unet, autoencoder = UNetInit(source="pretrained", path=str(args.checkpoint)), None, None
    else:  # random weights: exercises the code, measures nothing about quality
        weights, unet = UNetInit(source="config"), QUICK_UNET
        autoencoder = PatchDCTAutoencoder(factor=4, luma_coefficients=6, chroma_coefficients=3)
    return M3DDMPredictor(
        weights=weights, unet=unet, autoencoder=autoencoder,
        sampling=SamplingConfig(
            scheduler=args.sampler, num_inference_steps=args.inference_steps, seed=args.seed,
            guidance_context=args.guidance[0], guidance_global=args.guidance[1],
        ),
        schedule=ScheduleConfig(window=args.frames, max_batch=args.max_batch),
        global_frames=GlobalFramesConfig(count=args.global_frames), canvas_size=MODEL_CANVAS,
        tiling=method.tiling(args.overlap, args.coherence_strength), progress=False,
    )


def run_method(args, method: Method) -> dict:
    """Outpaint every clip with ``method``; save the outputs; return timing, memory and window borders."""
    predictor = make_predictor(args, method)
    pipeline = predictor.pipeline
    largest = [0, set()]  # samples per UNet call, latent sizes seen

    def record(_module, inputs):
        largest[0] = max(largest[0], inputs[0].shape[0])
        largest[1].add(tuple(inputs[0].shape[-2:]))

    pipeline.unet.register_forward_pre_hook(record)
    outputs, seconds, borders = [], 0.0, None
    for i in range(args.clips):
        info = probe_source(args.out / "clips" / f"clip{i}_{method.size}.mp4")
        start = time.perf_counter()
        video = pipeline.outpaint(info, [TARGET])
        try:
            compositor = NativeCompositor(info.width, info.height, video.layout, TARGET)
            frames = [compositor(s, c) for s, c in zip(iter_source_frames(info), video.canvas_frames())]
            tiles = pipeline.tiles(video.painter)
            if tiles is not None:
                d = video.painter.downscale
                borders = sorted({(w.box.x0 * d, w.box.x1 * d) for w in tiles.windows}), sorted(
                    {(w.box.y0 * d, w.box.y1 * d) for w in tiles.windows}
                )
        finally:
            video.close()
        seconds += time.perf_counter() - start
        outputs.append(np.stack(frames))
    np.save(args.out / f"{method.name}.npy", np.stack(outputs))
    return {
        "seconds_per_frame": seconds / (args.clips * args.frames),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "largest_unet_batch": largest[0],
        "unet_latent_sizes": [list(size) for size in sorted(largest[1])],
        "unet_calls": pipeline.unet_calls,
        "borders": borders,
        "downscale": pipeline.autoencoder.downscale,
    }


def generated_mask(size: int) -> np.ndarray:
    """(H, W) bool: the border to generate (left and right quarters)."""
    mask = np.ones((size, size), bool)
    mask[:, size // 4 : 3 * size // 4] = False
    return mask


def high_frequency_energy(video: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(N,) mean squared Laplacian of the grey frames over ``mask`` (pixels one off the border dropped)."""
    inner = cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8), borderType=cv2.BORDER_REPLICATE).astype(bool)
    grey = video.astype(np.float32).mean(-1)
    lap = np.stack([[cv2.Laplacian(f, cv2.CV_32F) for f in clip] for clip in grey])
    return (lap**2)[..., inner].mean(axis=(1, 2))


def seam_ratio(video: np.ndarray, mask: np.ndarray, borders, cell: int) -> float:
    """Mean |gradient| across window borders in the generated region over that across the other cell borders.

    The autoencoder decodes every latent cell (``cell`` output pixels) on its own, so every cell
    border is a small edge; window borders lie on cell borders, and a seam makes them stronger.
    """
    grey = video.astype(np.float32).mean(-1)
    gx, gy = np.abs(np.diff(grey, axis=-1)), np.abs(np.diff(grey, axis=-2))  # gx[..., x]: between x and x+1
    mx, my = mask[:, 1:] & mask[:, :-1], mask[1:] & mask[:-1]
    size = mask.shape[0]
    xs = {e for pair in borders[0] for e in pair if 0 < e < size}
    ys = {e for pair in borders[1] for e in pair if 0 < e < size}
    cells = set(range(cell, size, cell))
    lines = []
    for chosen in (xs | ys, cells - xs - ys):
        on_x, on_y = np.zeros_like(mx), np.zeros_like(my)
        on_x[:, [x - 1 for x in chosen]] = True
        on_y[[y - 1 for y in chosen]] = True
        lines.append(np.concatenate([gx[..., on_x & mx], gy[..., on_y & my]], -1).mean())
    return float(lines[0] / lines[1])


def to_model(video: np.ndarray) -> torch.Tensor:
    """(N, F, H, W, 3) uint8 -> (N, F, 3, H, W) in [-1, 1]."""
    return torch.from_numpy(video).permute(0, 1, 4, 2, 3).float() / 127.5 - 1


def score(output: np.ndarray, truth: np.ndarray, borders, cell: int) -> dict:
    mask = generated_mask(truth.shape[2])
    m = torch.from_numpy(mask).float()
    hf_truth = high_frequency_energy(truth, mask)
    out = {
        "psnr_region": float(clip_psnr(to_model(output), to_model(truth), m).mean()),
        "sharpness": float((high_frequency_energy(output, mask) / hf_truth).mean()),
        "temporal_error": temporal_error(to_model(output), to_model(truth), m),
    }
    if borders is not None:
        out["seam_ratio"] = seam_ratio(output, mask, borders, cell)
        out["seam_ratio_truth"] = seam_ratio(truth, mask, borders, cell)
    return out


def markdown_table(results: dict) -> str:
    """The results as a markdown table, one row per method."""
    rows = [
        "| method | region PSNR (dB) | sharpness (truth = 1) | seam ratio (truth) | temporal error | s / frame | peak RSS MiB | largest UNet call |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        seam = f"{r['seam_ratio']:.2f} ({r['seam_ratio_truth']:.2f})" if "seam_ratio" in r else ""
        rss = f"{r['peak_rss_mb']:.0f}" if r["peak_rss_mb"] is not None else ""
        rows.append(
            f"| {name} | {r['psnr_region']:.2f} | {r['sharpness']:.2f} | {seam} | {r['temporal_error']:.3f} | "
            f"{r['seconds_per_frame']:.2f} | {rss} | {r['largest_unet_batch']} x "
            f"{' / '.join(f'{h}x{w}' for h, w in r['unet_latent_sizes'])} |"
        )
    return "\n".join(rows) + "\n"


def picture(args, truths: dict, size: int, clip: int = 0, frame: int = 0) -> Path:
    """The same frame side by side: ground truth, upscaled from the model canvas, tiled (+ coherence)."""
    names = [f"upscaled@{size}", f"tiled-resize@{size}", f"tiled-resize+coherence@{size}"]
    tiles = [truths[size][clip, frame]] + [np.load(args.out / f"{n}.npy")[clip, frame] for n in names]
    gap = np.full((size, 4, 3), 255, np.uint8)
    row = np.concatenate([x for t in tiles for x in (t, gap)][:-1], axis=1)
    path = args.out / f"tiling_{size}.png"
    cv2.imwrite(str(path), cv2.cvtColor(row, cv2.COLOR_RGB2BGR))
    return path


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, help="a tiny-model .ckpt trained at 64 px (convergence.py)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256], help="output sizes besides 64")
    parser.add_argument("--crop-sizes", type=int, nargs="*", help="sizes with crop global frames too (default: all)")
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--frames", type=int, default=8, help="frames per clip: one window of the tiny model")
    parser.add_argument("--interval", type=int, default=2, help="rendered frames between clip frames")
    parser.add_argument("--global-frames", type=int, default=4, help="as the tiny model was trained")
    parser.add_argument("--render", type=int, default=384,
                        help="render size: 1.5 x the largest size, so a 64-px window there sees the training scale")
    parser.add_argument("--sampler", default="ddim")
    parser.add_argument("--guidance", type=float, nargs=2, default=(2.0, 4.0), metavar=("S1", "S2"),
                        help="eq. 4's scales (paper: 2, 4); 1 1 runs one UNet branch instead of three")
    parser.add_argument("--inference-steps", type=int, default=25)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--overlap", type=float, default=0.5)
    parser.add_argument("--coherence-strength", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "tiling")
    parser.add_argument("--quick", action="store_true", help="random weights, one 2-frame clip, 1 step, 128 px: a smoke test")
    parser.add_argument("--method", help=argparse.SUPPRESS)  # internal: run one method in this process
    args = parser.parse_args(argv)
    if args.quick:
        args.checkpoint, args.sizes, args.clips, args.inference_steps, args.render = None, [128], 1, 1, 128
        args.frames, args.global_frames = 2, 1
    elif args.checkpoint is None:
        parser.error("--checkpoint is needed (or --quick)")
    if args.clips < 1 or any(s % MODEL_CANVAS or s <= MODEL_CANVAS for s in args.sizes):
        parser.error(f"--clips must be >= 1 and --sizes multiples of {MODEL_CANVAS} above it, got {args.clips}, {args.sizes}")
    torch.set_num_threads(2)
    methods = {m.name: m for m in methods_for(args.sizes, args.crop_sizes)}
    if args.method:
        print(json.dumps(run_method(args, methods[args.method])))
        return {}

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "clips").mkdir(exist_ok=True)
    sizes = [MODEL_CANVAS, *args.sizes]
    truths = render_clips(args.out / "clips", args.clips, args.frames, args.interval, args.render, sizes)
    runs = {}
    for name, method in methods.items():
        if args.quick:  # in this process: seconds, no memory isolation
            runs[name] = run_method(args, method)
            runs[name]["peak_rss_mb"] = None
            continue
        child = subprocess.run(
            [sys.executable, __file__, *(argv if argv is not None else sys.argv[1:]), "--method", name],
            capture_output=True, text=True, check=False,
        )
        if child.returncode:
            raise SystemExit(f"{name} failed:\n{child.stderr[-3000:]}")
        runs[name] = json.loads(child.stdout.strip().splitlines()[-1])
    results = {}
    for name, method in methods.items():
        borders = runs[f"tiled-resize@{method.size}"]["borders"] if method.size != MODEL_CANVAS else None
        output = np.load(args.out / f"{name}.npy")
        # output pixels per latent cell: the tiled canvas is the output; the model's is upscaled
        cell = runs[name]["downscale"] * method.size // (MODEL_CANVAS * method.scale)
        results[name] = {**score(output, truths[method.size], borders, int(cell)), **{k: v for k, v in runs[name].items() if k != "borders"}}
    report = {
        "results": results,
        "pictures": [str(picture(args, truths, size)) for size in args.sizes],
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "method"},
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "loadavg": Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else None,
    }
    (args.out / "results.json").write_text(json.dumps(report, indent=2))
    (args.out / "results.md").write_text(markdown_table(results))
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
