"""M3DDMLitModule: the masked denoising objective with dual-condition dropout (paper 3.1-3.2).

One training step: encode the clip, its masked version and the global frames with the
frozen autoencoder; drop the context c1 and the global frames c2 to their null values
independently (p1, p2); noise the clip latents at a random timestep; predict the noise
from [noisy latents, masked-video latents, mask] with fps and global-frame cross-attention;
MSE against the added noise (or against v, with ``noise_schedule.prediction_type``).
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from einops import rearrange

from lightning_m3ddm.autoencoders import Autoencoder, from_spec
from lightning_m3ddm.conditioning import (
    Condition,
    black_frame_latent,
    decode_video,
    encode_video,
    mask_to_latent,
    null_condition,
    select,
)
from lightning_m3ddm.distributed import full, local
from lightning_m3ddm.models.unet_3d import M3DDMUNet
from lightning_m3ddm.sampling import Guidance, NoiseSchedule, make_scheduler, sample_latents
from lightning_m3ddm.seeding import stable_seed
# UNet construction and checkpoint reading live in weights.py (inference uses them without
# this module); the names stay importable from here for existing code
from lightning_m3ddm.weights import UNetInit, build_unet, load_pretrained_unet  # noqa: F401


@dataclass
class ConditionDropout:
    """Probabilities of replacing c1 (video context) and c2 (global frames) by their null values.

    The paper trains both (3.2.3) without giving p1, p2; 0.1 each (independent, so both are
    dropped together 1% of the time) is this framework's default.
    """

    context: float = 0.1
    global_frames: float = 0.1


@dataclass
class OptimizerConfig:
    """Adam, lr 1e-4, 1,000 warm-up steps (paper Appendix C.2); constant afterwards.

    ``decay``: after the warm-up, ``constant`` (paper) or ``cosine`` down to
    ``min_lr_ratio * lr`` at ``decay_steps`` (None: the trainer's ``max_steps``), for runs
    whose length is fixed in advance, such as a fine-tuning. ``decay_start`` holds the full
    rate until that step and decays only over the rest (warm-up, stable, decay), so a
    constant-rate run can be resumed into its final annealing.
    """

    name: Literal["adam", "adamw"] = "adam"
    lr: float = 1e-4
    warmup_steps: int = 1000
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    eps: float = 1e-8
    decay: Literal["constant", "cosine"] = "constant"
    decay_steps: int | None = None
    min_lr_ratio: float = 0.0
    decay_start: int | None = None

    def __post_init__(self):
        if self.decay not in ("constant", "cosine"):
            raise ValueError(f"decay must be 'constant' or 'cosine', got {self.decay!r}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")


def lr_multiplier(
    step: int, warmup_steps: int, decay: str = "constant", decay_steps: int | None = None, min_ratio: float = 0.0,
    decay_start: int | None = None,
) -> float:
    """Factor on the base lr at optimizer step ``step`` (0-based): linear warm-up, the full
    rate until ``decay_start`` (default: the end of the warm-up), then the decay."""
    warmup = max(warmup_steps, 1)
    start = warmup if decay_start is None else decay_start
    if decay != "constant" and start < warmup:
        raise ValueError(f"decay_start must be >= warmup_steps ({warmup}), got {decay_start}")
    if decay != "constant" and (not decay_steps or decay_steps <= start):
        after = "warmup_steps" if decay_start is None else "decay_start"
        raise ValueError(f"{decay} decay needs decay_steps > {after} ({start}), got {decay_steps}")
    if step + 1 < start or decay == "constant":
        return min(1.0, (step + 1) / warmup)
    progress = min(1.0, (step + 1 - start) / (decay_steps - start))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class M3DDMLitModule(L.LightningModule):
    """Training, validation and sample previews of the M3DDM UNet.

    Args:
        unet: M3DDMUNet config fields (its latent channels follow the autoencoder).
        init: where the initial weights come from (see :class:`UNetInit`).
        autoencoder: the frozen autoencoder (an instance or a ``{class_path, init_args}`` dict);
            default a pixel-unshuffle (x4) stand-in.
        noise_schedule: DDPM training schedule (1000 steps, scaled-linear 0.00085-0.012) and
            what the UNet predicts (noise by default, or v).
        condition_dropout: p1, p2 of the dual classifier-free guidance training.
        optimizer: optimizer and warm-up.
        ema_decay: keep an exponential moving average of the UNet (e.g. 0.9999) used for
            validation and prediction; None disables it.
        max_nonfinite_steps: stop after this many steps in a row with a NaN/inf loss.
        gradient_checkpointing: activation checkpointing inside every UNet block.
        seed: base seed of the per-step noise, timestep and dropout draws.
    """

    def __init__(
        self,
        unet: dict[str, Any] | None = None,
        init: UNetInit = UNetInit(),
        autoencoder: Autoencoder | dict | None = None,
        noise_schedule: NoiseSchedule = NoiseSchedule(),
        condition_dropout: ConditionDropout = ConditionDropout(),
        optimizer: OptimizerConfig = OptimizerConfig(),
        ema_decay: float | None = None,
        max_nonfinite_steps: int = 20,
        gradient_checkpointing: bool = False,
        seed: int = 0,
    ):
        super().__init__()
        init, noise_schedule = _as(UNetInit, init), _as(NoiseSchedule, noise_schedule)
        condition_dropout, optimizer = _as(ConditionDropout, condition_dropout), _as(OptimizerConfig, optimizer)
        autoencoder = from_spec(autoencoder)
        # plain data in checkpoints, so they load with torch.load(weights_only=True); the class
        # path lets `--ckpt_path` runs of the CLI restore these hyperparameters
        self.save_hyperparameters(
            {
                "_class_path": f"{type(self).__module__}.{type(self).__qualname__}",
                "unet": dict(unet or {}),
                "autoencoder": autoencoder.spec(),
                "init": asdict(init),
                "noise_schedule": asdict(noise_schedule),
                "condition_dropout": asdict(condition_dropout),
                "optimizer": asdict(optimizer),
                "ema_decay": ema_decay,
                "max_nonfinite_steps": max_nonfinite_steps,
                "gradient_checkpointing": gradient_checkpointing,
                "seed": seed,
            }
        )
        self.autoencoder = autoencoder
        self.autoencoder.requires_grad_(False)
        self.unet = self._build_unet(unet or {}, init)
        if gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()
        self.ema_unet = None
        if ema_decay is not None:
            if not 0.0 < ema_decay < 1.0:
                raise ValueError(f"ema_decay must be in (0, 1), got {ema_decay}")
            self.ema_unet = copy.deepcopy(self.unet).requires_grad_(False).eval()
        self.noise_scheduler = make_scheduler("ddpm", noise_schedule)
        self.condition_dropout = condition_dropout
        self.optimizer_config = optimizer
        self.ema_decay = ema_decay
        self.max_nonfinite_steps = max_nonfinite_steps
        self.nonfinite_in_row = 0
        self.nonfinite_total = 0

    # -- construction -----------------------------------------------------------------------

    def _build_unet(self, config: dict[str, Any], init: UNetInit) -> M3DDMUNet:
        return build_unet(init, config, self.autoencoder.latent_channels, field_name="init").train()

    def configure_model(self) -> None:
        """Shard the UNet (and its EMA copy) when the strategy shards (``M3DDMShardedStrategy``);
        runs before ``configure_optimizers``, so the optimizer holds the sharded parameters."""
        strategy = self._trainer.strategy if self._trainer is not None else None
        if hasattr(strategy, "shard"):
            strategy.shard(self)

    def train(self, mode: bool = True):
        # the frozen autoencoder and the EMA copy never train (no dropout, no norm statistics)
        super().train(mode)
        self.autoencoder.eval()
        if self.ema_unet is not None:
            self.ema_unet.eval()
        return self

    def denoiser(self) -> M3DDMUNet:
        """The weights used for validation and sampling: the EMA ones when kept."""
        return self.ema_unet if self.ema_unet is not None else self.unet

    # -- the objective ------------------------------------------------------------------------

    def encode_batch(self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None):
        """Latents of the clip, its context condition, the global frames and the black-frame latent."""
        video = batch["video"]
        h, w = video.shape[-2:]
        with torch.no_grad():
            latents = encode_video(self.autoencoder, video, generator)
            masked = encode_video(self.autoencoder, batch["masked_video"], generator)
            global_latents = rearrange(
                encode_video(self.autoencoder, batch["global_frames"], generator), "b c g h w -> b g c h w"
            )
            black = black_frame_latent(self.autoencoder, h, w, video.device, generator)
        condition = Condition(masked, mask_to_latent(batch["mask"], tuple(latents.shape[-2:])))
        return latents, condition, global_latents, black

    def diffusion_loss(
        self,
        batch: dict[str, torch.Tensor],
        unet: M3DDMUNet,
        *,
        dropout: ConditionDropout | None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        latents, condition, global_latents, black = self.encode_batch(batch, generator)
        b = latents.shape[0]
        device = latents.device
        if dropout is not None:
            condition, global_latents, _, _ = drop_conditions(condition, global_latents, black, dropout, generator)
        noise = torch.randn(latents.shape, device=device, generator=generator, dtype=latents.dtype)
        timesteps = torch.randint(
            0, self.noise_scheduler.config.num_train_timesteps, (b,), device=device, generator=generator
        )
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        pred = unet(condition.unet_input(noisy), timesteps, fps=batch["fps"], global_latents=global_latents).sample
        if self.noise_scheduler.config.prediction_type == "v_prediction":
            target = self.noise_scheduler.get_velocity(latents, noise, timesteps)
        else:
            target = noise
        return F.mse_loss(pred.float(), target.float())

    def step_generator(self, device: torch.device, batch_idx: int = 0) -> torch.Generator:
        """Noise, timesteps and condition dropout drawn from (seed, step, micro-batch, rank): a
        resumed run continues exactly as an uninterrupted one, and ranks and the micro-batches
        of one accumulated step draw differently.

        The micro-batch is ``batch_idx`` modulo the gradient accumulation, which is how Lightning
        counts the batches of an accumulated step (it restarts with every epoch)."""
        rank, accumulation = 0, 1
        if self._trainer is not None:
            rank, accumulation = self.global_rank, self.trainer.accumulate_grad_batches
        seed = stable_seed(self.hparams.seed, self.global_step, batch_idx % accumulation, rank)
        return torch.Generator(device=device).manual_seed(seed)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor | None:
        generator = self.step_generator(batch["video"].device, batch_idx)
        loss = self.diffusion_loss(batch, self.unet, dropout=self.condition_dropout, generator=generator)
        finite = bool(torch.isfinite(loss))
        if self._trainer is not None:
            finite = self.trainer.strategy.reduce_boolean_decision(finite, all=True)
        if not finite:
            self.nonfinite_in_row += 1
            self.nonfinite_total += 1
            self.log("train/skipped_steps", float(self.nonfinite_total), on_step=True)
            if self.nonfinite_in_row >= self.max_nonfinite_steps:
                raise RuntimeError(
                    f"{self.nonfinite_in_row} training steps in a row had a non-finite loss "
                    f"(last step {self.global_step}); stopping. Lower the learning rate or check the data."
                )
            return None  # skips backward and the optimizer step on every rank alike
        self.nonfinite_in_row = 0
        bs = batch["video"].shape[0]
        self.log("train/loss", loss, prog_bar=True, on_step=True, batch_size=bs)
        self.log("train/skipped_steps", float(self.nonfinite_total), on_step=True, batch_size=bs)
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        # fixed noise, timesteps and no condition dropout: comparable across evaluations
        generator = torch.Generator(device=batch["video"].device).manual_seed(batch_idx)
        loss = self.diffusion_loss(batch, self.denoiser(), dropout=None, generator=generator)
        self.log("val/loss", loss, prog_bar=True, sync_dist=True, batch_size=batch["video"].shape[0])
        return loss

    # -- optimisation -------------------------------------------------------------------------

    def configure_optimizers(self):
        cfg = self.optimizer_config
        cls = torch.optim.AdamW if cfg.name == "adamw" else torch.optim.Adam
        opt = cls(self.unet.parameters(), lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay)
        decay_steps = cfg.decay_steps
        if cfg.decay != "constant" and decay_steps is None:
            decay_steps = self.trainer.max_steps if self._trainer is not None else None
            if decay_steps is None or decay_steps < 0:
                raise ValueError("optimizer.decay needs optimizer.decay_steps or trainer.max_steps")
        # LambdaLR evaluates step 0 here, so a bad schedule fails before training
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: lr_multiplier(step, cfg.warmup_steps, cfg.decay, decay_steps, cfg.min_lr_ratio, cfg.decay_start)
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """Log ``train/grad_norm``, the norm of all gradients (across ranks when sharded) before
        clipping, then clip by that norm (``gradient_clip_val``, algorithm ``norm``) or by value."""
        params = [p for p in self.unet.parameters() if p.grad is not None]
        if not params:
            return
        # on sharded (DTensor) gradients the norm is reduced over all ranks' shards
        norm = torch.nn.utils.get_total_norm([p.grad for p in params], foreach=True)
        self.log("train/grad_norm", full(norm), on_step=True)
        if not gradient_clip_val:
            return
        if gradient_clip_algorithm in (None, "norm"):
            torch.nn.utils.clip_grads_with_norm_(params, gradient_clip_val, norm, foreach=True)
        else:
            self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)

    @torch.no_grad()
    def update_ema(self, step: int | None = None) -> None:
        """Average the UNet into the EMA copy; ``step``: optimizer steps taken (default ``global_step``)."""
        if self.ema_unet is None:
            return
        # warm-up of the decay, so that early averages are not dominated by the initial weights
        step = self.global_step if step is None else step
        decay = min(self.ema_decay, (1 + step) / (10 + step))
        # sharded: both copies are sharded alike, so each rank averages its own shards
        ema = [local(p) for p in self.ema_unet.parameters()]
        cur = [local(p.detach()) for p in self.unet.parameters()]
        torch._foreach_lerp_(ema, cur, 1.0 - decay)
        for eb, b in zip(self.ema_unet.buffers(), self.unet.buffers()):
            eb.copy_(b)

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        # Here rather than in on_train_batch_end: callbacks run that hook first, so a checkpoint
        # that ModelCheckpoint saved there lacked this step's average and a run resumed from it
        # drifted from the uninterrupted one. Lightning counts the step after this hook returns.
        self.update_ema(self.global_step + 1)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["m3ddm_unet_config"] = dict(self.unet.config)
        checkpoint["m3ddm_counters"] = {
            "nonfinite_total": self.nonfinite_total,
            "nonfinite_in_row": self.nonfinite_in_row,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        counters = checkpoint.get("m3ddm_counters", {})
        self.nonfinite_total = counters.get("nonfinite_total", 0)
        self.nonfinite_in_row = counters.get("nonfinite_in_row", 0)

    # -- sampling -----------------------------------------------------------------------------

    @torch.no_grad()
    def outpaint_clip(
        self,
        batch: dict[str, torch.Tensor],
        *,
        num_inference_steps: int = 50,
        scheduler: str = "ddpm",
        guidance: Guidance = Guidance(),
        seed: int = 0,
        timestep_spacing: str | None = None,
    ) -> torch.Tensor:
        """Generate the masked regions of the batch's clips: (B, F, 3, H, W) in [-1, 1].

        Known pixels are pasted back from the input, as the generated region is what the
        model was asked for. ``timestep_spacing``: see :func:`~lightning_m3ddm.sampling.make_scheduler`.
        """
        unet = self.denoiser()
        device = batch["video"].device
        b = batch["video"].shape[0]
        generators = [torch.Generator(device=device).manual_seed(seed + i) for i in range(b)]
        latents, condition, global_latents, black = self.encode_batch(batch)
        null = null_condition(condition, black)
        tokens = unet.encode_global_frames(global_latents)
        null_tokens = unet.encode_global_frames(torch.zeros_like(global_latents))
        out = sample_latents(
            unet,
            make_scheduler(scheduler, NoiseSchedule(**self.hparams.noise_schedule), timestep_spacing=timestep_spacing),
            condition,
            null,
            tokens,
            null_tokens,
            batch["fps"],
            num_steps=num_inference_steps,
            guidance=guidance,
            generators=generators,
        )
        frames = decode_video(self.autoencoder, out).clamp(-1, 1)
        mask = batch["mask"].to(frames.dtype)
        return frames * mask + batch["masked_video"] * (1 - mask)


def _as(cls, value):
    """A config dataclass from itself or from a dict (as stored in checkpoints)."""
    return cls(**value) if isinstance(value, dict) else value


def drop_conditions(
    condition: Condition,
    global_latents: torch.Tensor,
    black_latent: torch.Tensor,
    dropout: ConditionDropout,
    generator: torch.Generator | None = None,
) -> tuple[Condition, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Replace c1 by its null value with probability p1 and c2 with p2, independently per sample.

    Returns the new condition, the new global latents (B, G, C, h, w) and the two (B,) bool
    draws (context dropped, global frames dropped).
    """
    b = global_latents.shape[0]
    device = global_latents.device
    drop_context = torch.rand(b, device=device, generator=generator) < dropout.context
    drop_global = torch.rand(b, device=device, generator=generator) < dropout.global_frames
    condition = select(drop_context, null_condition(condition, black_latent), condition)
    global_latents = torch.where(drop_global[:, None, None, None, None], torch.zeros_like(global_latents), global_latents)
    return condition, global_latents, drop_context, drop_global
