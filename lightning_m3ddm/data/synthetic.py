"""Real mp4 files of moving textured scenes, for tests, demos and benchmarks.

A scene is a large procedural texture (multi-octave colour noise plus
oriented stripes) seen through a camera that pans across it, with textured
discs and boxes moving on straight paths that enter and leave through the
frame border. Edges therefore carry content that continues the visible part
in space (the texture) and in time (the pan brings it in, objects cross), so
outpainting is learnable from it. Deterministic under ``seed``.

Command line::

    python -m lightning_m3ddm.data.synthetic --output DIR --num-videos 8 --width 320 --height 240
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from lightning_m3ddm.video.decode import encode_video


@dataclass(frozen=True)
class SyntheticVideoSpec:
    """Size, length and motion of one generated video (width and height must be even for h264)."""

    width: int = 128
    height: int = 96
    num_frames: int = 48
    fps: float = 24.0
    num_objects: int = 3
    pan_speed: float = 2.0  # pixels per frame
    seed: int = 0
    pan_heading: float | None = None  # radians, 0 = the camera moves right; None: drawn from seed
    crf: int = 18
    gop: int | None = None

    def __post_init__(self) -> None:
        if self.width % 2 or self.height % 2 or self.width < 16 or self.height < 16:
            raise ValueError(f"width and height must be even and >= 16, got {self.width}x{self.height}")
        if self.num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {self.num_frames}")


def _texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Float32 (height, width, 3) in [0, 1]: coloured noise at several scales plus stripes."""
    acc = np.zeros((height, width, 3), np.float32)
    for cell, weight in ((64, 1.0), (24, 0.6), (8, 0.35), (3, 0.15)):
        coarse = rng.random((height // cell + 2, width // cell + 2, 3), dtype=np.float32)
        acc += weight * cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, math.pi)
    period = rng.uniform(12, 40)
    stripes = 0.5 + 0.5 * np.sin(2 * math.pi * (xx * math.cos(angle) + yy * math.sin(angle)) / period)
    acc += 0.5 * stripes[..., None] * rng.random(3, dtype=np.float32)
    acc -= acc.min()
    return acc / max(float(acc.max()), 1e-6)


@dataclass(frozen=True)
class _MovingObject:
    shape: str
    size: float
    start: tuple[float, float]
    velocity: tuple[float, float]
    colour_a: np.ndarray
    colour_b: np.ndarray
    stripe_period: float
    spin: float


def _objects(rng: np.random.Generator, spec: SyntheticVideoSpec) -> list[_MovingObject]:
    """Objects whose straight path crosses the frame from one border to another during the video."""
    out = []
    h, w, n = spec.height, spec.width, max(spec.num_frames - 1, 1)
    for _ in range(spec.num_objects):
        size = rng.uniform(0.15, 0.3) * min(h, w)
        # Enter through a random border, leave through the opposite one, over a random part of the video.
        side = rng.integers(4)
        along = rng.uniform(0.2, 0.8)
        start, end = {
            0: ((-size, along * h), (w + size, rng.uniform(0.2, 0.8) * h)),
            1: ((w + size, along * h), (-size, rng.uniform(0.2, 0.8) * h)),
            2: ((along * w, -size), (rng.uniform(0.2, 0.8) * w, h + size)),
            3: ((along * w, h + size), (rng.uniform(0.2, 0.8) * w, -size)),
        }[int(side)]
        span = rng.uniform(0.5, 1.5) * n
        offset = rng.uniform(-0.3, 0.5) * n  # some objects are already inside at frame 0
        velocity = ((end[0] - start[0]) / span, (end[1] - start[1]) / span)
        start = (start[0] - velocity[0] * offset, start[1] - velocity[1] * offset)
        out.append(
            _MovingObject(
                shape="disc" if rng.random() < 0.5 else "box",
                size=size,
                start=start,
                velocity=velocity,
                colour_a=rng.random(3, dtype=np.float32),
                colour_b=rng.random(3, dtype=np.float32),
                stripe_period=rng.uniform(4, 12),
                spin=rng.uniform(-0.1, 0.1),
            )
        )
    return out


def _draw(frame: np.ndarray, obj: _MovingObject, t: int) -> None:
    h, w = frame.shape[:2]
    cx, cy = obj.start[0] + obj.velocity[0] * t, obj.start[1] + obj.velocity[1] * t
    r = obj.size / 2
    x0, x1 = max(0, int(cx - r)), min(w, int(cx + r) + 1)
    y0, y1 = max(0, int(cy - r)), min(h, int(cy + r) + 1)
    if x0 >= x1 or y0 >= y1:
        return
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    dx, dy = xx - cx, yy - cy
    inside = dx * dx + dy * dy <= r * r if obj.shape == "disc" else (np.abs(dx) <= r) & (np.abs(dy) <= r * 0.7)
    angle = obj.spin * t
    phase = (dx * math.cos(angle) + dy * math.sin(angle)) / obj.stripe_period
    blend = (0.5 + 0.5 * np.sin(2 * math.pi * phase))[..., None]
    colour = blend * obj.colour_a + (1 - blend) * obj.colour_b
    region = frame[y0:y1, x0:x1]
    region[inside] = colour[inside]


def render_frames(spec: SyntheticVideoSpec):
    """Yield the video's frames, uint8 (height, width, 3) RGB."""
    rng = np.random.default_rng(spec.seed)
    n = spec.num_frames
    heading = rng.uniform(0, 2 * math.pi)  # drawn even when fixed: the rest of the scene stays the seed's
    if spec.pan_heading is not None:
        heading = spec.pan_heading
    vx, vy = spec.pan_speed * math.cos(heading), spec.pan_speed * math.sin(heading)
    wobble = 0.15 * min(spec.height, spec.width)
    margin = int(wobble) + 2
    reach_x, reach_y = int(abs(vx) * n) + 2 * margin, int(abs(vy) * n) + 2 * margin
    canvas = _texture(rng, spec.height + reach_y, spec.width + reach_x)
    origin_x = margin + (reach_x - 2 * margin if vx < 0 else 0)
    origin_y = margin + (reach_y - 2 * margin if vy < 0 else 0)
    wobble_freq = rng.uniform(0.5, 1.5) * 2 * math.pi / max(n, 1)
    objects = _objects(rng, spec)  # drawn last: the same seed without objects gives the same background
    for t in range(n):
        x = origin_x + vx * t + wobble * math.sin(wobble_freq * t)
        y = origin_y + vy * t + 0.5 * wobble * math.cos(wobble_freq * t)
        x = int(round(min(max(x, 0), canvas.shape[1] - spec.width)))
        y = int(round(min(max(y, 0), canvas.shape[0] - spec.height)))
        frame = canvas[y : y + spec.height, x : x + spec.width].copy()
        for obj in objects:
            _draw(frame, obj, t)
        yield (np.clip(frame, 0, 1) * 255 + 0.5).astype(np.uint8)


def write_synthetic_video(path: str | Path, spec: SyntheticVideoSpec = SyntheticVideoSpec()) -> Path:
    """Render ``spec`` and encode it as H.264 mp4 at ``path`` (parent folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return encode_video(render_frames(spec), path, fps=spec.fps, crf=spec.crf, gop=spec.gop)


def write_truncated_copy(src: str | Path, dst: str | Path, keep_fraction: float = 0.5) -> Path:
    """A corrupt video for robustness tests: the first ``keep_fraction`` of ``src``'s bytes."""
    data = Path(src).read_bytes()
    dst = Path(dst)
    dst.write_bytes(data[: max(1, int(len(data) * keep_fraction))])
    return dst


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True, type=Path, help="folder for the mp4 files")
    parser.add_argument("--num-videos", type=int, default=4)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--frames", type=int, default=96, help="frames per video")
    parser.add_argument("--fps", type=float, default=24.0)
    parser.add_argument("--objects", type=int, default=3, help="moving objects per video")
    parser.add_argument("--pan-speed", type=float, default=2.0, help="camera pan in pixels per frame")
    parser.add_argument("--seed", type=int, default=0, help="video i uses seed + i")
    args = parser.parse_args(argv)
    from tqdm import tqdm

    for i in tqdm(range(args.num_videos), desc="videos", unit="video"):
        spec = SyntheticVideoSpec(
            width=args.width, height=args.height, num_frames=args.frames, fps=args.fps,
            num_objects=args.objects, pan_speed=args.pan_speed, seed=args.seed + i,
        )
        write_synthetic_video(args.output / f"synthetic_{i:04d}.mp4", spec)


if __name__ == "__main__":
    main()
