"""Denoising windows of latents with dual classifier-free guidance (paper 3.2.3, eq. 4).

    ε̂ = ε(∅, ∅) + s1 · (ε(c1, ∅) − ε(∅, ∅)) + s2 · (ε(c1, c2) − ε(c1, ∅))

c1 is the video context (masked-video latents and mask, guides included), c2 the global
frames. The three branches go through the UNet as one batch; the released script also
computes ε(∅, c2), which eq. 4 never uses. Any diffusers scheduler works.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Sequence

import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, PNDMScheduler
from diffusers.utils.torch_utils import randn_tensor

from lightning_m3ddm.conditioning import Condition
from lightning_m3ddm.models.unet_3d import M3DDMUNet

SCHEDULERS = {
    "ddpm": DDPMScheduler,
    "pndm": PNDMScheduler,
    "ddim": DDIMScheduler,
    "dpm++": DPMSolverMultistepScheduler,
}


PREDICTION_TYPES = ("epsilon", "v_prediction")


@dataclass(frozen=True)
class NoiseSchedule:
    """Stable Diffusion's schedule, which M3DDM keeps (paper 3.1): 1000 steps, scaled-linear betas.

    ``prediction_type``: what the UNet predicts, ``epsilon`` (the noise: the paper and the
    released model) or ``v_prediction`` (sqrt(a) * noise - sqrt(1 - a) * x0, as Stable
    Diffusion 2 does). An undertrained or small model does better with v: at high noise an
    error in predicted noise is multiplied by 1/sqrt(a) in the clip estimate, an error in v
    is not (the tiny CPU config uses it; see configs/tiny_cpu.yaml).

    ``rescale_betas_zero_snr``: rescale the betas so that the last step holds no signal at all
    (Lin et al., 2024, "Common Diffusion Noise Schedules and Sample Steps are Flawed"; diffusers
    implements it). Stable Diffusion's schedule keeps sqrt(alpha_bar) = 0.068 of the clip at
    t = 999, which the model learns to read while sampling starts from pure noise; with the
    rescale the prediction at the first step is the model's estimate of the clip from the
    conditions alone. Needs v-prediction (the noise is then the whole input) and ``trailing``
    timesteps, which :func:`make_scheduler` picks for it. Off by default (paper).
    """

    num_train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    beta_schedule: str = "scaled_linear"
    prediction_type: str = "epsilon"
    rescale_betas_zero_snr: bool = False

    def __post_init__(self):
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {self.prediction_type!r}")
        if self.rescale_betas_zero_snr and self.prediction_type != "v_prediction":
            # with zero signal at t = T the noise is the input itself: predicting it teaches nothing
            raise ValueError("rescale_betas_zero_snr needs prediction_type 'v_prediction'")

    def kwargs(self) -> dict:
        return dict(
            num_train_timesteps=self.num_train_timesteps,
            beta_start=self.beta_start,
            beta_end=self.beta_end,
            beta_schedule=self.beta_schedule,
            prediction_type=self.prediction_type,
            # only when set: PNDM has no such option
            **({"rescale_betas_zero_snr": True} if self.rescale_betas_zero_snr else {}),
        )


# Stable Diffusion's scheduler settings (its scheduler_config.json, which the released script
# loads for PNDM): latents are not in [-1, 1], so the predicted x0 is never clipped (diffusers'
# DDPM and DDIM clip by default), and inference steps are offset by 1.
SCHEDULER_SETTINGS: dict[str, dict] = {
    "ddpm": {"clip_sample": False, "steps_offset": 1},
    "ddim": {"clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1},
    "pndm": {"skip_prk_steps": True, "set_alpha_to_one": False, "steps_offset": 1},
    "dpm++": {"algorithm_type": "dpmsolver++"},
}


TIMESTEP_SPACINGS = ("leading", "trailing", "linspace")


def make_scheduler(
    name: str = "ddpm", schedule: NoiseSchedule = NoiseSchedule(), timestep_spacing: str | None = None, **kwargs
):
    """A diffusers scheduler by name with Stable Diffusion's settings: ddpm (paper), pndm
    (released script), ddim, dpm++. ``timestep_spacing`` (None: the setting's, or ``trailing``
    for a zero-terminal-SNR schedule, so that sampling starts at t = T) and ``kwargs`` override
    the settings."""
    key = name.lower()
    if key not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)}")
    if schedule.rescale_betas_zero_snr:
        if key == "pndm":
            raise ValueError("scheduler 'pndm' does not support rescale_betas_zero_snr; use ddim, ddpm or dpm++")
        if timestep_spacing is None:
            timestep_spacing = "trailing"
    if timestep_spacing is not None:
        if timestep_spacing not in TIMESTEP_SPACINGS:
            raise ValueError(f"timestep_spacing must be one of {TIMESTEP_SPACINGS}, got {timestep_spacing!r}")
        kwargs["timestep_spacing"] = timestep_spacing
    return SCHEDULERS[key](**schedule.kwargs(), **{**SCHEDULER_SETTINGS[key], **kwargs})


START_MODES = ("full", "released")


def denoising_timesteps(timesteps: Sequence, num_steps: int, start: str = "full") -> tuple[object, Sequence]:
    """(timestep the start latents are noised to, timesteps the loop steps over).

    ``full``: noised to the first timestep, every timestep stepped (diffusers' default).
    ``released``: the released pipeline's img2img arithmetic at strength 1 with
    ``steps_offset = 1``: ``init_timestep = min(num_steps + 1, num_steps)``, noised to
    ``timesteps[-init_timestep]`` and stepping over ``timesteps[1:]``. For PNDM (whose
    ``num_steps`` steps give ``num_steps + 1`` timesteps, 981, 961, 961, ... at 50) that is
    t = 961 and 50 calls; for a scheduler with ``num_steps`` timesteps it noises to the
    first and skips it.
    """
    if start not in START_MODES:
        raise ValueError(f"start must be one of {START_MODES}, got {start!r}")
    if start == "full":
        return timesteps[0], timesteps
    if len(timesteps) < 2:
        raise ValueError("start 'released' skips the first timestep: it needs at least 2 timesteps")
    return timesteps[-min(num_steps, len(timesteps))], timesteps[1:]


@dataclass(frozen=True)
class Guidance:
    """Guidance scales of eq. 4; the paper's s1 = 2 (context), s2 = 4 (global frames), section 4.4.1."""

    context: float = 2.0
    global_frames: float = 4.0

    def branches(self) -> tuple[str, ...]:
        """UNet branches eq. 4 needs: '00' = ε(∅,∅), '10' = ε(c1,∅), '11' = ε(c1,c2).

        A branch whose weight is 0 is not run: with s2 = 0 the global frames are never read,
        so a model trained without them (p2 = 1, whose global encoder has only ever seen the
        null frames) cannot put a non-finite ε(c1,c2) into the sum as 0 x inf = NaN.
        """
        if self.global_frames == 0.0:
            return ("10",) if self.context == 1.0 else ("00", "10")
        if self.context == 1.0 and self.global_frames == 1.0:
            return ("11",)
        if self.context == 1.0:
            return ("10", "11")
        return ("00", "10", "11")

    def combine(self, eps: dict[str, torch.Tensor]) -> torch.Tensor:
        if set(eps) == {"11"}:
            return eps["11"]
        e10 = eps["10"]
        e00 = eps.get("00", e10)
        out = e00 + self.context * (e10 - e00)
        return out + self.global_frames * (eps["11"] - e10) if "11" in eps else out


def guided_noise(
    unet: M3DDMUNet,
    latents: torch.Tensor,
    timestep: torch.Tensor,
    condition: Condition,
    null_condition: Condition,
    global_tokens: torch.Tensor,
    null_global_tokens: torch.Tensor,
    fps: torch.Tensor,
    guidance: Guidance,
) -> torch.Tensor:
    """ε̂ for (B, C, F, h, w) latents: the needed branches in one UNet call, combined by eq. 4."""
    branches = guidance.branches()
    inputs, tokens = [], []
    for branch in branches:
        inputs.append((condition if branch[0] == "1" else null_condition).unet_input(latents))
        tokens.append(global_tokens if branch[1] == "1" else null_global_tokens)
    n = len(branches)
    b = latents.shape[0]
    eps = unet(
        torch.cat(inputs),
        timestep.expand(b).repeat(n),
        fps=fps.repeat(n),
        global_tokens=torch.cat(tokens),
    ).sample
    return guidance.combine(dict(zip(branches, eps.chunk(n))))


def per_sample_noise(shape: Sequence[int], generators: list[torch.Generator] | None, device, dtype) -> torch.Tensor:
    """Noise drawn sample by sample from its own generator, so batching does not change it."""
    if generators is None:
        return torch.randn(shape, device=device, dtype=dtype)
    return randn_tensor(tuple(shape), generator=generators, device=torch.device(device), dtype=dtype)


def start_latents(
    scheduler,
    shape: Sequence[int],
    num_steps: int,
    init_latents: torch.Tensor | None,
    generators: list[torch.Generator] | None,
    device,
    dtype: torch.dtype,
    start: str = "full",
    start_step: int = 0,
) -> tuple[torch.Tensor, Sequence]:
    """Set ``num_steps`` timesteps; return the latents to start from and the timesteps to run.

    ``start``: see :func:`denoising_timesteps`; then the first ``start_step`` timesteps are
    skipped (a start that is already part-denoised). ``init_latents`` are noised to the
    start timestep, else pure noise.
    """
    scheduler.set_timesteps(num_steps, device=device)
    noise_at, timesteps = denoising_timesteps(scheduler.timesteps, num_steps, start)
    if start_step:
        timesteps = timesteps[start_step:]
        noise_at = timesteps[0]
    noise = per_sample_noise(shape, generators, device, dtype)
    if init_latents is not None:
        return scheduler.add_noise(init_latents.to(dtype), noise, noise_at.reshape(1).repeat(shape[0])), timesteps
    return noise * scheduler.init_noise_sigma, timesteps


@torch.no_grad()
def sample_latents(
    unet: M3DDMUNet,
    scheduler,
    condition: Condition,
    null_condition: Condition,
    global_tokens: torch.Tensor,
    null_global_tokens: torch.Tensor,
    fps: torch.Tensor,
    *,
    num_steps: int = 50,
    guidance: Guidance = Guidance(),
    init_latents: torch.Tensor | None = None,
    generators: list[torch.Generator] | None = None,
    on_step: Callable[[int, int], None] | None = None,
    start: str = "full",
) -> torch.Tensor:
    """Denoise a batch of windows; returns (B, C, F, h, w) latents.

    ``init_latents`` (the encoded, border-inpainted frames) are noised to the start
    timestep instead of starting from pure noise (paper's robustness trick, released
    script's ``use_add_noise``); ``start`` picks that timestep and the steps, see
    :func:`denoising_timesteps`. One generator per window makes batched windows equal to
    windows run one by one; it draws the start noise, then any step noise (DDPM).
    """
    b, _, f, h, w = condition.masked_latents.shape
    device = condition.masked_latents.device
    shape = (b, unet.config.out_channels, f, h, w)
    latents, timesteps = start_latents(scheduler, shape, num_steps, init_latents, generators, device, unet.dtype, start)
    step_kwargs = {"generator": generators} if "generator" in scheduler.step.__code__.co_varnames else {}
    for i, t in enumerate(timesteps):
        model_in = scheduler.scale_model_input(latents, t)
        eps = guided_noise(
            unet, model_in, t.reshape(1).to(device), condition, null_condition, global_tokens, null_global_tokens, fps, guidance
        )
        latents = scheduler.step(eps, t, latents, **step_kwargs).prev_sample
        if on_step is not None:
            on_step(i + 1, len(timesteps))
    return latents


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


def scheduler_for(sampling: SamplingConfig):
    """A fresh diffusers scheduler of ``sampling`` with Stable Diffusion's settings."""
    return make_scheduler(sampling.scheduler_name, sampling.noise_schedule(), timestep_spacing=sampling.timestep_spacing)
