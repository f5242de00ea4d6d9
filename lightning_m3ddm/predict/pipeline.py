"""OutpaintingPipeline: one whole video through the hybrid coarse-to-fine plan (paper 3.3).

Three passes, memory bounded whatever the length (the per-frame latents live on disk,
:mod:`lightning_m3ddm.predict.latent_store`):

1. **Prepare** (streams the source once): every frame is drawn on the model canvas
   (:mod:`~lightning_m3ddm.predict.canvas`), its masked context and its border-inpainted
   start are encoded and stored; the ``g`` global frames (spread over the whole video,
   ``linspace(0, N-1, g)`` as the released script) are kept and encoded to
   cross-attention tokens once.
2. **Generate**: the plan of :mod:`lightning_m3ddm.coarse_to_fine` runs level by level,
   batch by batch. A window's context is the stored context latents, except its guide
   frames, which get their generated latents and mask 0 (also in the null branch), as
   in training and the released pipeline; generated latents are reused directly as
   guides (no decode/encode round trip). Sampling: any scheduler by name, dual
   classifier-free guidance eq. 4 with the three needed branches in one UNet call
   (:func:`lightning_m3ddm.sampling.sample_latents`), the start latents noised to the
   start timestep (paper Appendix D; ``sampling.start``) or pure noise. Every window has its own seeded
   generator (seed, window index), so batching does not change the result.
   Beyond the model's canvas (:class:`~lightning_m3ddm.predict.tiling.TilingConfig`) the
   video is laid out on a larger canvas and every window of the plan is denoised as
   overlapping model-size spatial windows merged at every step, optionally started from
   a first pass on the model's canvas (the coherence pass).
3. **Decode** (:meth:`OutpaintedVideo.canvas_frames`): the generated latents are decoded
   in chunks, in frame order, for the writer to composite while it streams the source
   a second time.

From Python, :meth:`OutpaintingPipeline.from_pretrained` / :meth:`~OutpaintingPipeline.from_config`
build one and calling it runs the three passes on a file or on frames in memory and
composites the result (:class:`OutpaintingResult`); ``predict`` and ``evaluate`` run the
same :meth:`~OutpaintingPipeline.outpaint`.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import yaml
from einops import rearrange, repeat
from tqdm.auto import tqdm

from lightning_m3ddm.autoencoders import Autoencoder, PixelUnshuffleAutoencoder
from lightning_m3ddm.checkpoints import CheckpointError
from lightning_m3ddm.coarse_to_fine import Plan, ScheduleConfig, Window, batch_level, level_fps, model_slots
from lightning_m3ddm.conditioning import Condition, black_frame_latent, null_condition
from lightning_m3ddm.data.sampling import global_frame_indices
from lightning_m3ddm.geometry import (
    CANVAS_SIZE,
    AspectRatio,
    CanvasLayout,
    CropMode,
    Padding,
    Target,
    canvas_layout,
    is_copy_through,
    parse_ratio,
    target_padding,
)
from lightning_m3ddm.predict.canvas import CanvasPainter, to_model_range, to_uint8
from lightning_m3ddm.predict.composite import OutputMode, make_compositor
from lightning_m3ddm.predict.latent_store import VideoLatents
from lightning_m3ddm.predict.preparation import PaintedFrame, paint_frames
from lightning_m3ddm.predict.tiling import TilingConfig, VideoTiles, coherence_start, shrink_to
from lightning_m3ddm.sampling import Guidance, SamplingConfig, sample_latents, scheduler_for
from lightning_m3ddm.tiled_sampling import sample_tiled_latents
from lightning_m3ddm.video.errors import VideoInputError
from lightning_m3ddm.video.stream import Mp4Writer, SourceInfo, even_frame, iter_source_frames, probe_source
from lightning_m3ddm.weights import TrainedModel, UNetInit, build_unet, check_channels, read_trained_model

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GlobalFramesConfig:
    """The global video clip fed by cross-attention (paper 3.2.2).

    Attributes:
        count: g = 16 frames (paper Appendix C.2), spread evenly over the whole video.
        mode: ``masked``: drawn on the canvas and masked like the context (paper 3.2.2,
            as this framework trains); ``resize``: the whole frame squeezed to the canvas,
            as the released inference script feeds the released weights; None: chosen by
            the predictor from the weights (``resize`` for the released weights), else
            ``masked``.
    """

    count: int = 16
    mode: Literal["masked", "resize"] | None = None

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError(f"global frame count must be >= 1, got {self.count}")
        if self.mode not in (None, "masked", "resize"):
            raise ValueError(f"global frame mode must be 'masked', 'resize' or null, got {self.mode!r}")


# Seed stream of the autoencoder's posterior samples (SD VAE), apart from every window's.
ENCODE_STREAM = 2**31 - 1


def window_seed(seed: int, window_index: int) -> int:
    """Seed of one window's generator: depends on (seed, window index) only, not on batching."""
    return int(np.random.SeedSequence([seed, window_index]).generate_state(1)[0])


@dataclass
class VideoConditioning:
    """What every window of one video shares.

    Attributes:
        tokens: (1, T, D) cross-attention tokens of the global frames (c2); on a tiled
            canvas with ``crop`` global frames, (S, T, D): one row per kept spatial window.
        null_tokens: (1, T, D) tokens of all-zero global latents (c2 = null).
        black: (C, h, w) latent of an all-black canvas (the null context c1).
    """

    tokens: torch.Tensor
    null_tokens: torch.Tensor
    black: torch.Tensor


@dataclass
class OutpaintedVideo:
    """A generated video on disk: its plan, canvas layout and per-frame latents.

    Hand it to the writer, which streams the source and :meth:`canvas_frames` together;
    :meth:`close` deletes the latents.
    """

    info: SourceInfo
    layout: CanvasLayout
    painter: CanvasPainter
    plan: Plan
    latents: VideoLatents
    pipeline: "OutpaintingPipeline"

    @torch.no_grad()
    def canvas_frames(self) -> Iterator[np.ndarray]:
        """The outpainted canvas of every frame in order, RGB uint8 (ch, cw, 3)."""
        n = self.info.num_frames
        step = self.pipeline.decode_batch
        for start in range(0, n, step):
            frames = list(range(start, min(n, start + step)))
            latents = torch.from_numpy(self.latents.generated.read(frames)).to(self.pipeline.device)
            yield from to_uint8(self.pipeline.autoencoder.decode(latents))

    def close(self) -> None:
        self.latents.close()


@dataclass
class OutpaintingResult:
    """What :meth:`OutpaintingPipeline.__call__` returns.

    Attributes:
        frames: the outpainted video, (F, H', W', 3) uint8 RGB; None when written to ``path``.
        path: the written mp4 (``output_path``), None when the frames are returned.
        fps: the frame rate (the source's).
        padding: the border added to each side of the source, in output pixels.
        timings: seconds spent generating (``outpaint``: prepare + every level) and
            decoding/compositing/writing (``decode``), and in all (``total``).
    """

    frames: np.ndarray | None
    path: Path | None
    fps: float
    padding: Padding
    timings: dict[str, float] = field(default_factory=dict)


class OutpaintingPipeline:
    """Outpaints whole videos with a masked 3D UNet and a frozen autoencoder.

    From Python (no Lightning involved)::

        pipe = OutpaintingPipeline.from_pretrained("model/")      # or from_config("predict.yaml")
        result = pipe(frames, fps=25, target_ratio="9:16")        # or pipe("clip.mp4", padding=(0, 0, 64, 64))
        result.frames                                             # (F, H', W', 3) uint8

    Args:
        unet: the denoiser (an :class:`~lightning_m3ddm.models.unet_3d.M3DDMUNet` or
            anything with its call signature, ``config.out_channels``, ``dtype`` and
            ``encode_global_frames``), on the device to run on.
        autoencoder: frames <-> latents, on the same device.
        sampling: scheduler, steps, guidance, start latents, seed.
        schedule: window, strides (released (15, 5, 1); paper (30, 15, 1)), dense
            threshold and ``max_batch`` windows per UNet call.
        global_frames: count and mode of the global frames.
        canvas_size: model canvas (width, height) or one side for a square; 256 as trained.
        tiling: a generation canvas larger than the model's, as overlapping windows
            (:mod:`lightning_m3ddm.predict.tiling`); default: the model's canvas.
        crop_mode: which canvas rectangle belongs to a target, see :mod:`lightning_m3ddm.geometry`.
        pad_short_windows: a video shorter than one window is fed as a full window, its
            last frame repeated (released script), instead of a shorter clip.
        encode_batch, decode_batch: frames per autoencoder call.
        work_dir: where the per-video latent files go (default: the system temp folder).
        progress: show a progress bar per video (None: only on a terminal).
    """

    def __init__(
        self,
        unet,
        autoencoder: Autoencoder,
        sampling: SamplingConfig = SamplingConfig(),
        schedule: ScheduleConfig = ScheduleConfig(),
        global_frames: GlobalFramesConfig = GlobalFramesConfig(),
        canvas_size: int | tuple[int, int] = CANVAS_SIZE,
        crop_mode: CropMode = "padded",
        pad_short_windows: bool = True,
        encode_batch: int = 16,
        decode_batch: int = 16,
        work_dir: str | os.PathLike | None = None,
        progress: bool | None = None,
        tiling: TilingConfig = TilingConfig(),
    ):
        self.unet = unet
        self.autoencoder = autoencoder
        self.sampling = sampling
        self.schedule = schedule
        self.global_frames = global_frames
        self.canvas_size = (canvas_size, canvas_size) if isinstance(canvas_size, int) else tuple(canvas_size)
        self.crop_mode = crop_mode
        self.pad_short_windows = pad_short_windows
        self.encode_batch = encode_batch
        self.decode_batch = decode_batch
        self.work_dir = work_dir
        self.progress = progress
        self.tiling = tiling
        # the canvas the video is laid out on; larger than canvas_size when tiled
        self.generation_canvas = tiling.canvas(self.canvas_size, autoencoder.downscale)
        self.unet_calls = 0  # for tests and logs: UNet forward passes so far

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    def layout(self, info: SourceInfo, targets: Sequence[Target]) -> CanvasLayout:
        return canvas_layout(info.width, info.height, targets, *self.generation_canvas, crop_mode=self.crop_mode)

    @property
    def tiled(self) -> bool:
        return self.generation_canvas != self.canvas_size

    def tiles(self, painter: CanvasPainter) -> VideoTiles | None:
        """The spatial windows of a video's canvas; None on the model's own canvas."""
        return VideoTiles.plan(self.tiling, painter, self.canvas_size) if self.tiled else None

    # -- the whole video ------------------------------------------------------------------

    @torch.no_grad()
    def outpaint(
        self, info: SourceInfo, targets: Sequence[Target], painted: Iterable[PaintedFrame] | None = None
    ) -> OutpaintedVideo:
        """Prepare, plan and generate every frame of ``info`` for ``targets``.

        ``painted``: the canvases prepared ahead by a loader worker (None: painted here).

        Returns an :class:`OutpaintedVideo` (latents on disk); close it when written.

        Raises:
            VideoInputError: a target too extreme for the canvas, or the source fails to
                decode while streaming.
        """
        try:
            layout = self.layout(info, targets)
            painter = CanvasPainter(layout, self.autoencoder.downscale, self.sampling.inpaint_radius)
        except ValueError as err:  # e.g. a ratio so extreme that no latent cell of the source is left
            raise VideoInputError(info.path, str(err), "bad_target") from None
        plan = self.schedule.plan(info.num_frames)
        coherence = self.coherence_pass(info, targets) if self.tiled and self.tiling.coherence else None
        try:
            latents, conditioning = self.prepare(
                info, painter, painted, coherence.canvas_frames() if coherence is not None else None
            )
        finally:
            if coherence is not None:
                coherence.close()
        try:
            self.generate(info, plan, latents, painter, conditioning)
        except BaseException:
            latents.close()
            raise
        return OutpaintedVideo(info, layout, painter, plan, latents, self)

    # -- pass 1: the source on the canvas, encoded to disk ---------------------------------

    def coherence_pass(self, info: SourceInfo, targets: Sequence[Target]) -> OutpaintedVideo:
        """The video outpainted on the model's canvas, untiled: the start of the tiled pass."""
        untiled = OutpaintingPipeline(
            self.unet, self.autoencoder, sampling=self.sampling, schedule=self.schedule,
            global_frames=self.global_frames, canvas_size=self.canvas_size, crop_mode=self.crop_mode,
            pad_short_windows=self.pad_short_windows, encode_batch=self.encode_batch,
            decode_batch=self.decode_batch, work_dir=self.work_dir, progress=self.progress,
        )
        video = untiled.outpaint(info, targets)
        self.unet_calls += untiled.unet_calls
        return video

    @torch.no_grad()
    def prepare(
        self,
        info: SourceInfo,
        painter: CanvasPainter,
        painted: Iterable[PaintedFrame] | None = None,
        coherence: Iterator[np.ndarray] | None = None,
    ) -> tuple[VideoLatents, VideoConditioning]:
        """Stream the source once; store context (and start) latents; encode the global frames.

        ``painted``: the frames already painted by a loader worker (:mod:`.preparation`);
        None paints them here, from the source. ``coherence``: the coherence pass's canvas of
        every frame, in order; the start latents are then those canvases upscaled
        (:func:`~lightning_m3ddm.predict.tiling.coherence_start`).
        """
        w, h = painter.latent_size
        shape = (self.autoencoder.latent_channels, h, w)
        use_start = self.sampling.init == "inpaint" or coherence is not None
        latents = VideoLatents(info.num_frames, shape, self.work_dir, with_start=use_start)
        try:
            generator = torch.Generator(self.device).manual_seed(window_seed(self.sampling.seed, ENCODE_STREAM))
            global_index = global_frame_indices(info.num_frames, self.global_frames.count)
            if painted is None:
                inpaint = use_start and coherence is None
                painted = paint_frames(info, painter, inpaint, global_index, self.global_frames.mode)
            global_canvases: dict[int, np.ndarray] = {}
            context, start, frames = [], [], []
            for frame in painted:
                context.append(frame.masked)
                if coherence is not None:
                    start.append(coherence_start(painter, frame.masked, next(coherence)))
                elif use_start:
                    start.append(frame.start)
                frames.append(frame.index)
                if frame.global_canvas is not None:
                    global_canvases[frame.index] = frame.global_canvas
                if len(frames) == self.encode_batch:
                    self._store(latents, frames, context, start, generator)
                    context, start, frames = [], [], []
            if frames:
                self._store(latents, frames, context, start, generator)
            conditioning = self.video_conditioning(
                np.stack([global_canvases[i] for i in global_index]), painter, generator
            )
        except BaseException:
            latents.close()
            raise
        return latents, conditioning

    @torch.no_grad()
    def video_conditioning(
        self, global_canvases: np.ndarray, painter: CanvasPainter, generator: torch.Generator | None = None
    ) -> VideoConditioning:
        """What every window shares, from the (g, ch, cw, 3) uint8 global-frame canvases."""
        glob = self._encode_global(global_canvases, painter, generator)
        return VideoConditioning(
            tokens=self.unet.encode_global_frames(glob),
            null_tokens=self.unet.encode_global_frames(torch.zeros_like(glob[:1])),
            black=black_frame_latent(self.autoencoder, painter.canvas_size[1], painter.canvas_size[0], self.device, generator),
        )

    def _encode_global(self, canvases: np.ndarray, painter: CanvasPainter, generator: torch.Generator) -> torch.Tensor:
        """(g, H, W, 3) global canvases -> (S, g, C, h, w) latents of the model's size: S = 1, or one
        row per spatial window on a tiled canvas with ``crop`` global frames."""
        tiles = self.tiles(painter)
        if tiles is not None and self.tiling.global_frames == "resize":
            canvases = shrink_to(canvases, self.canvas_size)
        glob = self._encode(canvases, generator)
        if tiles is None or self.tiling.global_frames == "resize":
            return rearrange(glob, "g c h w -> 1 g c h w")
        return torch.stack([glob[..., w.box.y0 : w.box.y1, w.box.x0 : w.box.x1] for w in tiles.windows])

    def _encode(self, canvases: np.ndarray | list[np.ndarray], generator: torch.Generator) -> torch.Tensor:
        return self.autoencoder.encode(to_model_range(canvases).to(self.device), generator)

    def _store(self, latents: VideoLatents, frames, context, start, generator) -> None:
        latents.context.write(frames, self._encode(context, generator))
        if latents.start is not None:
            latents.start.write(frames, self._encode(start, generator))

    # -- pass 2: the plan ----------------------------------------------------------------

    @torch.no_grad()
    def generate(
        self,
        info: SourceInfo,
        plan: Plan,
        latents: VideoLatents,
        painter: CanvasPainter,
        conditioning: VideoConditioning,
    ) -> None:
        """Run every level of ``plan``, writing each window's generated frames to ``latents.generated``."""
        levels = [(level, batch_level(level, self.schedule.max_batch)) for level in plan.levels]
        total_windows = len(plan.windows)
        bar = tqdm(
            total=total_windows * self.sampling.steps_per_window(),
            desc=info.stem,
            unit="step",
            disable=(not self.progress) if self.progress is not None else None,
            leave=False,
        )
        done = 0
        try:
            for level, batches in levels:
                fps = level_fps(info.fps, level.stride)
                for batch in batches:
                    bar.set_postfix_str(
                        f"level {level.index + 1}/{len(plan.levels)} (stride {level.stride}), "
                        f"windows {done + 1}-{done + len(batch)}/{total_windows}"
                    )
                    self.run_windows(
                        batch, fps, latents, painter, conditioning, on_step=lambda *_: bar.update(len(batch))
                    )
                    done += len(batch)
        finally:
            bar.close()
        missing = np.flatnonzero(~latents.generated.written)
        if missing.size:  # the planner guarantees coverage; this guards the executor
            raise RuntimeError(f"{info.path}: frames {missing[:8].tolist()} were not generated")

    def slots(self, window: Window) -> tuple[int, ...]:
        """Source frame of each model slot of ``window``."""
        if self.pad_short_windows and len(window.frames) < self.schedule.window:
            return model_slots(window, self.schedule.window)
        return window.frames

    @torch.no_grad()
    def run_windows(
        self,
        windows: Sequence[Window],
        fps: int,
        latents: VideoLatents,
        painter: CanvasPainter,
        conditioning: VideoConditioning,
        on_step=None,
    ) -> torch.Tensor:
        """Denoise ``windows`` (independent of each other) in one batch; store their new frames.

        Returns the (B, C, F, h, w) sampled latents.
        """
        device = self.device
        slots = [self.slots(w) for w in windows]
        if len({len(s) for s in slots}) != 1:
            raise ValueError("windows of one batch must have the same number of frames")
        known_mask = painter.latent_mask()
        contexts, masks, starts = [], [], []
        for window, frames in zip(windows, slots):
            guides = set(window.guides)
            is_guide = np.array([f in guides for f in frames])
            # guides as in training: the generated latent itself, every cell known (mask 0)
            context = latents.context.read(frames)
            if is_guide.any():
                context[is_guide] = latents.generated.read([f for f in frames if f in guides])
            contexts.append(torch.from_numpy(context))
            masks.append(torch.stack([torch.zeros_like(known_mask) if g else known_mask for g in is_guide]))
            if latents.start is not None:
                starts.append(torch.from_numpy(latents.start.read(frames)))
        condition = Condition(
            rearrange(torch.stack(contexts), "b f c h w -> b c f h w").to(device),
            rearrange(torch.stack(masks), "b f c h w -> b c f h w").to(device),
        )
        null = null_condition(condition, conditioning.black)
        init = rearrange(torch.stack(starts), "b f c h w -> b c f h w").to(device) if starts else None
        b = len(windows)
        generators = [torch.Generator(device).manual_seed(window_seed(self.sampling.seed, w.index)) for w in windows]
        tiles = self.tiles(painter)
        calls_per_step = 1 if tiles is None else -(-b * len(tiles.windows) // self.schedule.max_batch)

        def count_step(i: int, n: int) -> None:
            self.unet_calls += calls_per_step
            if on_step is not None:
                on_step(i, n)

        sample = sample_latents if tiles is None else self._tiled_sampler(tiles, conditioning)
        out = sample(
            self.unet,
            scheduler_for(self.sampling),
            condition,
            null,
            repeat(conditioning.tokens[0], "t d -> b t d", b=b),
            repeat(conditioning.null_tokens[0], "t d -> b t d", b=b),
            torch.full((b,), fps, device=device),
            num_steps=self.sampling.num_inference_steps,
            guidance=self.sampling.guidance,
            init_latents=init,
            generators=generators,
            on_step=count_step,
            start=self.sampling.start_mode,
        )
        for k, (window, frames) in enumerate(zip(windows, slots)):
            position = {}
            for slot, frame in enumerate(frames):
                position.setdefault(frame, slot)  # a repeated (padding) frame keeps its first slot
            new = list(window.generates)
            latents.generated.write(new, rearrange(out[k, :, [position[f] for f in new]], "c f h w -> f c h w"))
        return out

    def _tiled_sampler(self, tiles: VideoTiles, conditioning: VideoConditioning):
        """:func:`~lightning_m3ddm.sampling.sample_latents` on the tiled canvas: the windows merged
        at every step, each with its global tokens; the coherence pass's steps skipped."""
        tokens = conditioning.tokens
        if len(tokens) == 1:
            tokens = tokens.expand(len(tiles.windows), -1, -1)

        def sample(unet, scheduler, condition, null, _tokens, _null_tokens, fps, *, num_steps, **kwargs):
            return sample_tiled_latents(
                unet, scheduler, condition, null, tokens, conditioning.null_tokens[0], fps, tiles.windows,
                tiles.weights, max_batch=self.schedule.max_batch, num_steps=num_steps,
                start_step=self.tiling.start_step(num_steps), **kwargs,
            )

        return sample

    # -- from Python: loading, settings, and one call per video -----------------------------

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> "OutpaintingPipeline":
        """Move the networks to ``device``; ``dtype`` casts the UNet (the autoencoder keeps its own)."""
        self.unet.to(device=device, dtype=dtype)
        if device is not None:
            self.autoencoder.to(device)
        return self

    def replace(self, **changes: Any) -> "OutpaintingPipeline":
        """A pipeline with some settings changed (``sampling``, ``schedule``, ...), sharing the networks."""
        settings = dict(
            sampling=self.sampling, schedule=self.schedule, global_frames=self.global_frames,
            canvas_size=self.canvas_size, crop_mode=self.crop_mode, pad_short_windows=self.pad_short_windows,
            encode_batch=self.encode_batch, decode_batch=self.decode_batch, work_dir=self.work_dir,
            progress=self.progress,
        )
        unknown = set(changes) - set(settings)
        if unknown:
            raise TypeError(f"unknown pipeline settings: {sorted(unknown)}")
        return type(self)(self.unet, self.autoencoder, **{**settings, **changes})

    @classmethod
    def from_trained(
        cls,
        model: TrainedModel,
        autoencoder: Autoencoder | None = None,
        *,
        sampling: SamplingConfig | None = None,
        schedule: ScheduleConfig | None = None,
        global_frames: GlobalFramesConfig | None = None,
        canvas_size: int | tuple[int, int] | None = None,
        dtype: torch.dtype | None = None,
        device: str | torch.device | None = None,
        **options: Any,
    ) -> "OutpaintingPipeline":
        """A pipeline around a trained model; each setting not given is the one it was
        trained for (:func:`~lightning_m3ddm.weights.trained_defaults`), else the paper's.

        ``sampling``'s ``prediction_type`` and ``rescale_betas_zero_snr`` left at None follow
        the model's noise schedule. ``options``: the other constructor arguments.
        """
        defaults = model.defaults
        autoencoder = autoencoder if autoencoder is not None else model.autoencoder
        if autoencoder is None:
            raise CheckpointError(
                "these weights do not say which autoencoder they were trained with: pass autoencoder= "
                "(the released model: StableDiffusionVAE(path to a Stable Diffusion folder))"
            )
        check_channels(model.unet, autoencoder.latent_channels, released=model.released)
        sampling = sampling if sampling is not None else SamplingConfig(**defaults.get("sampling", {}))
        trained = model.noise_schedule
        if trained is not None:  # one replace: the pair is validated together
            sampling = replace(
                sampling,
                prediction_type=sampling.prediction_type or trained.prediction_type,
                rescale_betas_zero_snr=(
                    trained.rescale_betas_zero_snr
                    if sampling.rescale_betas_zero_snr is None
                    else sampling.rescale_betas_zero_snr
                ),
            )
        if schedule is None:
            schedule = ScheduleConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in defaults.get("schedule", {}).items()})
        if global_frames is None:
            global_frames = GlobalFramesConfig(**defaults.get("global_frames", {}))
        sampling, schedule, global_frames = weight_defaults(
            "official" if model.released else "pretrained", sampling, schedule, global_frames
        )
        if canvas_size is None:
            size = defaults.get("canvas_size", CANVAS_SIZE)
            canvas_size = size if isinstance(size, int) else tuple(size)
        unet = model.unet.eval().requires_grad_(False)
        autoencoder.requires_grad_(False).eval()
        pipe = cls(unet, autoencoder, sampling=sampling, schedule=schedule, global_frames=global_frames,
                   canvas_size=canvas_size, **options)
        if dtype == unet.dtype:
            dtype = None  # diffusers warns on every cast, even to the same dtype
        return pipe.to(device, dtype) if device is not None or dtype is not None else pipe

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike,
        autoencoder: Autoencoder | None = None,
        *,
        allow_download: bool = False,
        cache_dir: str | os.PathLike | None = None,
        revision: str | None = None,
        **settings: Any,
    ) -> "OutpaintingPipeline":
        """A pipeline from trained weights.

        Args:
            path: a folder written by ``python -m lightning_m3ddm export`` (or
                :func:`~lightning_m3ddm.weights.export_checkpoint`), a framework ``.ckpt``,
                the released layout (``config.json`` + weights; give ``autoencoder``), or a
                Hugging Face Hub id (``owner/name``) found in the local Hub cache.
            autoencoder: overrides the recorded one; needed for the released layout.
            allow_download: let a Hub id be downloaded when it is not in the cache.
            cache_dir, revision: of the Hub cache (default: Hugging Face's).
            settings: pipeline settings (``sampling``, ``schedule``, ``canvas_size``,
                ``dtype``, ``device``, ...), see :meth:`from_trained`.
        """
        local = resolve_model_path(path, allow_download=allow_download, cache_dir=cache_dir, revision=revision)
        return cls.from_trained(read_trained_model(local), autoencoder, **settings)

    @classmethod
    def from_config(cls, config: str | os.PathLike | dict) -> "OutpaintingPipeline":
        """A pipeline from a predict config (YAML path or dict): its ``model.init_args``
        (weights, unet, autoencoder, sampling, schedule, ...) as ``python -m lightning_m3ddm
        predict --config`` reads them; random weights where ``weights.source: config``."""
        from jsonargparse import ArgumentParser

        if not isinstance(config, dict):
            config = yaml.safe_load(Path(config).read_text())
        args = (config.get("model") or {}).get("init_args", config.get("model") or {})
        parser = ArgumentParser(exit_on_error=False)
        parser.add_function_arguments(build_pipeline, fail_untyped=False)
        parsed = parser.instantiate_classes(parser.parse_object(args))
        return build_pipeline(**parsed.as_dict())

    @torch.no_grad()
    def __call__(
        self,
        video: str | os.PathLike | np.ndarray | torch.Tensor,
        target_ratio: str | AspectRatio | None = None,
        *,
        padding: Padding | Sequence[int] | None = None,
        fps: float | None = None,
        num_inference_steps: int | None = None,
        guidance: tuple[float, float] | Guidance | None = None,
        seed: int | None = None,
        output_path: str | os.PathLike | None = None,
        output_mode: OutputMode = "native",
        seam: float = 2.0,
        progress: bool | None = None,
    ) -> OutpaintingResult:
        """Outpaint one video to ``target_ratio`` (e.g. ``"9:16"``) or by ``padding`` (left, right, top, bottom).

        Args:
            video: a video file, or frames (F, H, W, 3) uint8 RGB (numpy or torch) with ``fps``.
            num_inference_steps, guidance (s1, s2), seed: override the pipeline's sampling.
            output_path: write an H.264 mp4 there (streamed, memory bounded whatever the
                length; the audio of a source file carried over) instead of returning frames.
            output_mode, seam: ``native`` (source resolution, source pixels kept) or
                ``canvas`` (the model-resolution crop), see the writer.

        Raises:
            VideoInputError: an unreadable video, bad frames, or a target the canvas cannot hold.
        """
        started = time.perf_counter()
        if isinstance(video, (str, os.PathLike)):
            info = probe_source(video)
        else:
            info = SourceInfo.from_frames(video, fps)
        target = _one_target(target_ratio, padding)
        pipe = self._for_call(num_inference_steps, guidance, seed, progress)
        pad = target_padding(info.width, info.height, target)
        timings: dict[str, float] = {}
        if is_copy_through(info.width, info.height, target):  # nothing to generate
            path = _write_or_stack(iter_source_frames(info), output_path, info, info.width, info.height)
            out = None if path is not None else np.stack(list(iter_source_frames(info)))
            timings["total"] = time.perf_counter() - started
            return OutpaintingResult(out, path, info.fps, pad, timings)
        generated = pipe.outpaint(info, [target])
        timings["outpaint"] = time.perf_counter() - started
        try:
            compose = make_compositor(output_mode, generated.painter, info.width, info.height, target, seam)
            frames = (compose(source, canvas) for source, canvas in
                      zip(iter_source_frames(info), generated.canvas_frames(), strict=True))
            if output_path is not None:
                path, out = _write_or_stack(frames, output_path, info, compose.width, compose.height), None
            else:
                path, out = None, np.stack(list(frames))
        finally:
            generated.close()
        timings["decode"] = time.perf_counter() - started - timings["outpaint"]
        timings["total"] = time.perf_counter() - started
        self.unet_calls += pipe.unet_calls
        return OutpaintingResult(out, path, info.fps, pad, timings)

    def _for_call(self, steps, guidance, seed, progress) -> "OutpaintingPipeline":
        changes = {}
        if steps is not None:
            changes["num_inference_steps"] = steps
        if seed is not None:
            changes["seed"] = seed
        if guidance is not None:
            s1, s2 = (guidance.context, guidance.global_frames) if isinstance(guidance, Guidance) else guidance
            changes.update(guidance_context=float(s1), guidance_global=float(s2))
        return self.replace(
            sampling=replace(self.sampling, **changes), progress=self.progress if progress is None else progress
        )


def _one_target(target_ratio, padding) -> Target:
    if (target_ratio is None) == (padding is None):
        raise ValueError("give exactly one of target_ratio (e.g. '9:16') and padding (left, right, top, bottom)")
    if padding is not None:
        return padding if isinstance(padding, Padding) else Padding(*[int(p) for p in padding])
    return target_ratio if isinstance(target_ratio, AspectRatio) else parse_ratio(str(target_ratio))


def _write_or_stack(frames: Iterator[np.ndarray], output_path, info: SourceInfo, width: int, height: int) -> Path | None:
    """Write ``frames`` to ``output_path`` (an mp4, audio of a source file carried over); None when no path."""
    if output_path is None:
        return None
    audio = info.path if info.audio_codec else None
    even = (width + width % 2, height + height % 2)  # H.264 (yuv420p) takes even sizes only
    with Mp4Writer(output_path, *even, info.rate, audio, preset="veryfast") as writer:
        for frame in frames:
            writer.write(even_frame(frame))
    return Path(output_path)


def resolve_model_path(
    path: str | os.PathLike, *, allow_download: bool = False, cache_dir=None, revision: str | None = None
) -> Path:
    """A local path as it is; a Hugging Face Hub id (``owner/name``) through the Hub cache.

    Nothing is downloaded unless ``allow_download``.

    Raises:
        CheckpointError: neither a local path nor an id found in the cache.
    """
    local = Path(path).expanduser()
    if local.exists():
        return local
    text = os.fspath(path)
    if text.count("/") != 1 or text.startswith((".", "/", "~")):
        raise CheckpointError(f"{text}: no such folder or checkpoint file (nor a Hub id 'owner/name')")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(text, revision=revision, cache_dir=cache_dir, local_files_only=not allow_download))
    except Exception as err:  # not cached (offline), unknown repo, no network
        hint = "" if allow_download else " (not in the local Hub cache; pass allow_download=True to fetch it)"
        raise CheckpointError(f"{text}: no such folder, checkpoint file or Hub model{hint}: {err}") from None


def weight_defaults(
    source: str, sampling: SamplingConfig, schedule: ScheduleConfig, global_frames: GlobalFramesConfig
) -> tuple[SamplingConfig, ScheduleConfig, GlobalFramesConfig]:
    """Fill the settings left None from where the weights come from.

    ``official`` (the released weights, only ever run by the released script): ``pndm``
    (which :class:`SamplingConfig` starts as released: t = 961, ``timesteps[1:]``), whole
    frames resized to the canvas as global frames, and the released coarse-to-fine loop.
    Otherwise (this framework's weights): ``ddpm`` (paper Appendix C.2), masked global
    frames (this framework always trains them masked, paper 3.2.2) and the framework plan.
    Settings given explicitly are kept.
    """
    released = source == "official"
    if sampling.scheduler is None:
        sampling = replace(sampling, scheduler="pndm" if released else "ddpm")
    if schedule.compat is None:
        schedule = replace(schedule, compat="released" if released else "framework")
    if global_frames.mode is None:
        global_frames = replace(global_frames, mode="resize" if released else "masked")
    return sampling, schedule, global_frames


def build_pipeline(
    weights: UNetInit = UNetInit(source="official"),
    unet: dict[str, Any] | None = None,
    init_seed: int = 0,
    autoencoder: Autoencoder | None = None,
    sampling: SamplingConfig | None = None,
    schedule: ScheduleConfig | None = None,
    global_frames: GlobalFramesConfig | None = None,
    canvas_size: int | None = None,
    crop_mode: CropMode = "padded",
    pad_short_windows: bool = True,
    dtype: Literal["float32", "float16", "bfloat16"] = "float32",
    work_dir: str | None = None,
    progress: bool | None = None,
    tiling: TilingConfig = TilingConfig(),
) -> OutpaintingPipeline:
    """The pipeline of a predict config's model fields (see :class:`~lightning_m3ddm.predict.M3DDMPredictor`).

    A ``pretrained`` source brings its autoencoder, noise schedule and sampling defaults
    (each used unless given); ``config`` draws fresh weights from ``init_seed``.
    """
    if weights.source == "pretrained" and weights.path is not None:
        model = read_trained_model(weights.path)
    else:
        channels = (autoencoder or PixelUnshuffleAutoencoder()).latent_channels
        model = TrainedModel(
            build_unet(weights, unet, channels, init_seed=init_seed, for_sampling=True),
            released=weights.source == "official",
        )
    if autoencoder is None and model.autoencoder is None:
        autoencoder = PixelUnshuffleAutoencoder()
    return OutpaintingPipeline.from_trained(
        model, autoencoder, sampling=sampling, schedule=schedule, global_frames=global_frames,
        canvas_size=canvas_size, dtype=DTYPES[dtype], crop_mode=crop_mode, pad_short_windows=pad_short_windows,
        work_dir=work_dir, progress=progress, tiling=tiling,
    )


DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
