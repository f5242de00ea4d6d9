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
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from einops import rearrange, repeat
from tqdm.auto import tqdm

from lightning_m3ddm.autoencoders import Autoencoder
from lightning_m3ddm.coarse_to_fine import Plan, ScheduleConfig, Window, batch_level, level_fps, model_slots
from lightning_m3ddm.conditioning import Condition, black_frame_latent, null_condition
from lightning_m3ddm.geometry import CANVAS_SIZE, CanvasLayout, CropMode, Target, canvas_layout
from lightning_m3ddm.predict.canvas import CanvasPainter, to_model_range, to_uint8
from lightning_m3ddm.predict.errors import VideoInputError
from lightning_m3ddm.predict.latent_store import VideoLatents
from lightning_m3ddm.predict.preparation import PaintedFrame, paint_frames
from lightning_m3ddm.predict.tiling import TilingConfig, VideoTiles, coherence_start, shrink_to
from lightning_m3ddm.predict.video_stream import SourceInfo
from lightning_m3ddm.sampling import (
    START_MODES,
    Guidance,
    NoiseSchedule,
    denoising_timesteps,
    make_scheduler,
    sample_latents,
)
from lightning_m3ddm.tiled_sampling import sample_tiled_latents

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SamplingConfig:
    """How each window is denoised.

    Attributes:
        scheduler: ``ddpm`` (paper Appendix C.2), ``pndm`` (released script), ``ddim``, ``dpm++``;
            None: chosen by the predictor from the weights (``pndm`` for the released
            weights, as the released script), else ``ddpm``.
        start: where sampling starts (:func:`~lightning_m3ddm.sampling.denoising_timesteps`):
            ``full``: the start latents noised to the first timestep, every timestep
            stepped; ``released``: the released pipeline's start (PNDM, 50 steps: noised to
            t = 961, stepping over ``timesteps[1:]``); None: ``released`` for ``pndm``
            (the only scheduler the released script runs), ``full`` for the others.
        num_inference_steps: 50 (paper Appendix C.2 and released script).
        guidance_context: s1 of eq. 4, video context; 2 (paper 3.2.3 / C.2).
        guidance_global: s2 of eq. 4, global frames; 4 (paper C.2).
        init: ``inpaint``: start from the encoded Telea-inpainted frames noised to the
            first timestep (paper Appendix D; released ``use_add_noise=True``);
            ``noise``: pure Gaussian noise.
        inpaint_radius: OpenCV inpainting radius (released script: 5).
        seed: base seed; window ``i`` samples with its own generator seeded by (seed, i).
        prediction_type: what the UNet predicts, ``epsilon`` (paper, released model) or
            ``v_prediction``; None: as recorded in a framework ``.ckpt``, else ``epsilon``.
        timestep_spacing: diffusers' placement of the inference timesteps: ``leading``
            (Stable Diffusion's, which the released script uses), ``trailing`` (the first
            step at t = T - 1, from pure noise: much better with few steps, Lin et al.,
            "Common diffusion noise schedules and sample steps are flawed", WACV 2024) or
            ``linspace``; None: the scheduler's Stable Diffusion setting (``trailing`` with
            a zero-terminal-SNR schedule).
        rescale_betas_zero_snr: the schedule the model was trained with
            (:class:`~lightning_m3ddm.sampling.NoiseSchedule`); None: as recorded in a
            framework ``.ckpt``, else off.
    """

    scheduler: str | None = None
    start: Literal["full", "released"] | None = None
    num_inference_steps: int = 50
    guidance_context: float = 2.0
    guidance_global: float = 4.0
    init: Literal["inpaint", "noise"] = "inpaint"
    inpaint_radius: int = 5
    seed: int = 0
    prediction_type: Literal["epsilon", "v_prediction"] | None = None
    timestep_spacing: Literal["leading", "trailing", "linspace"] | None = None
    rescale_betas_zero_snr: bool | None = None

    def __post_init__(self) -> None:
        if self.num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {self.num_inference_steps}")
        if self.init not in ("inpaint", "noise"):
            raise ValueError(f"init must be 'inpaint' or 'noise', got {self.init!r}")
        if self.start not in (None, *START_MODES):
            raise ValueError(f"sampling.start must be one of {START_MODES} or null, got {self.start!r}")
        self.noise_schedule()  # fail early on an unknown prediction type or a bad combination
        scheduler_for(self)  # fail early on an unknown name or spacing
        try:
            self.steps_per_window()
        except ValueError:
            raise ValueError(
                f"sampling.start 'released' skips the first of the {self.num_inference_steps} step(s) of "
                f"{self.scheduler_name}, leaving none: use num_inference_steps >= 2 or start: full"
            ) from None

    def noise_schedule(self) -> NoiseSchedule:
        return NoiseSchedule(
            # a zero-terminal-SNR schedule is only trained with v-prediction
            prediction_type=self.prediction_type or ("v_prediction" if self.rescale_betas_zero_snr else "epsilon"),
            rescale_betas_zero_snr=bool(self.rescale_betas_zero_snr),
        )

    @property
    def start_mode(self) -> str:
        """``start``, or its default for the scheduler."""
        if self.start is not None:
            return self.start
        return "released" if self.scheduler_name == "pndm" else "full"

    @property
    def scheduler_name(self) -> str:
        return (self.scheduler or "ddpm").lower()

    def steps_per_window(self) -> int:
        """UNet calls per window (PNDM's 50 steps take 51 timesteps; ``released`` skips one)."""
        scheduler = scheduler_for(self)
        scheduler.set_timesteps(self.num_inference_steps)
        return len(denoising_timesteps(scheduler.timesteps, self.num_inference_steps, self.start_mode)[1])

    @property
    def guidance(self) -> Guidance:
        return Guidance(context=self.guidance_context, global_frames=self.guidance_global)


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


def scheduler_for(sampling: SamplingConfig):
    """A fresh diffusers scheduler of ``sampling`` with Stable Diffusion's settings."""
    return make_scheduler(sampling.scheduler_name, sampling.noise_schedule(), timestep_spacing=sampling.timestep_spacing)


# Seed stream of the autoencoder's posterior samples (SD VAE), apart from every window's.
ENCODE_STREAM = 2**31 - 1


def window_seed(seed: int, window_index: int) -> int:
    """Seed of one window's generator: depends on (seed, window index) only, not on batching."""
    return int(np.random.SeedSequence([seed, window_index]).generate_state(1)[0])


def global_frame_indices(num_frames: int, count: int) -> np.ndarray:
    """``count`` frame indices spread over the video, first and last included (released script)."""
    return np.linspace(0, num_frames - 1, count).astype(int)


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


class OutpaintingPipeline:
    """Outpaints whole videos with a masked 3D UNet and a frozen autoencoder.

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
