"""Training callbacks: sample outpaintings in TensorBoard (throughput: :mod:`lightning_m3ddm.throughput`)."""

from __future__ import annotations

import lightning as L
import torch
from einops import rearrange
from lightning.pytorch.loggers import TensorBoardLogger
from torchvision.utils import make_grid

from lightning_m3ddm.sampling import Guidance


class SamplePreviews(L.Callback):
    """Every ``every_n_steps`` optimizer steps, outpaint the first clips of the current batch and
    log one image per clip to TensorBoard: rows masked input | generated | ground truth,
    one column per frame (at most ``max_frames``).

    Sampling runs on every rank (sharded weights need all of them); rank 0 logs.
    """

    def __init__(
        self,
        every_n_steps: int = 1000,
        num_samples: int = 2,
        max_frames: int = 8,
        num_inference_steps: int = 25,
        scheduler: str = "ddpm",
        guidance_context: float = 2.0,
        guidance_global: float = 4.0,
        seed: int = 0,
    ):
        self.every_n_steps = every_n_steps
        self.num_samples = num_samples
        self.max_frames = max_frames
        self.num_inference_steps = num_inference_steps
        self.scheduler = scheduler
        self.guidance = Guidance(guidance_context, guidance_global)
        self.seed = seed
        self._last_step = -1

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step == self._last_step or step == 0 or step % self.every_n_steps:
            return
        self._last_step = step
        images = self.render(pl_module, batch)
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                if isinstance(logger, TensorBoardLogger):
                    for i, image in enumerate(images):
                        logger.experiment.add_image(f"samples/outpainting_{i}", image, global_step=step)

    @torch.no_grad()
    def render(self, pl_module, batch) -> list[torch.Tensor]:
        """(3, H', W') images in [0, 1], one per clip."""
        n = min(self.num_samples, batch["video"].shape[0])
        sub = {k: v[:n] for k, v in batch.items() if torch.is_tensor(v)}
        was_training = pl_module.training
        pl_module.eval()
        try:
            generated = pl_module.outpaint_clip(
                sub,
                num_inference_steps=self.num_inference_steps,
                scheduler=self.scheduler,
                guidance=self.guidance,
                seed=self.seed,
            )
        finally:
            pl_module.train(was_training)
        f = min(self.max_frames, generated.shape[1])
        images = []
        for i in range(n):
            rows = torch.stack([sub["masked_video"][i, :f], generated[i, :f], sub["video"][i, :f]])
            tiles = rearrange(rows, "r f c h w -> (r f) c h w")
            images.append(make_grid((tiles.float().cpu() + 1) / 2, nrow=f, padding=2).clamp(0, 1))
        return images
