"""Training throughput and model FLOPs utilisation (MFU) in TensorBoard.

:class:`TrainingThroughput` is Lightning's ``ThroughputMonitor`` fed with the UNet's FLOPs per
sample, counted once on the meta device (no memory, no compute) by
:func:`unet_flops_per_sample`. The count is the model's (forward, and backward in training),
not the hardware's: activation-checkpointing recomputation and the frozen autoencoder are
left out, as MFU conventionally does.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.fabric.utilities.throughput import measure_flops
from lightning.pytorch.callbacks import ThroughputMonitor

from lightning_m3ddm.models.unet_3d import M3DDMUNet

# Dense (no sparsity) bf16 tensor-core peaks, FLOP/s, from NVIDIA's datasheets (SXM parts).
# Lightning's table has no entry for the name an H200 reports ("NVIDIA H200"), and its
# "h200 sxm1" entry is the 2:4-sparsity figure.
PEAK_FLOPS = {"h100 pcie": 756e12, "h100": 989e12, "h200": 989e12, "a100": 312e12}


def peak_flops_of(name: str) -> float | None:
    """The preset peak of a device name (e.g. ``torch.cuda.get_device_name()``), or None
    (the first preset whose name it contains: "H100 PCIe" before "H100")."""
    name = name.lower()
    return next((value for key, value in PEAK_FLOPS.items() if key in name), None)


def unet_flops_per_sample(
    config: dict[str, Any], frames: int, latent_size: tuple[int, int], global_frames: int, *, backward: bool = True
) -> int:
    """FLOPs of the UNet on one sample: (1, in_channels, frames, h, w) with ``global_frames``
    global latents; forward and backward when ``backward``, else forward only."""
    h, w = latent_size
    with torch.device("meta"):
        unet = M3DDMUNet.from_config(dict(config))
        sample = torch.empty(1, unet.config.in_channels, frames, h, w)
        global_latents = torch.empty(1, global_frames, unet.config.global_latent_channels, h, w)
        timestep = torch.zeros(1, dtype=torch.long)
        fps = torch.full((1,), 8, dtype=torch.long)

    def forward():
        return unet(sample, timestep, fps=fps, global_latents=global_latents).sample

    if not backward:
        unet.requires_grad_(False)
    return measure_flops(unet, forward, torch.Tensor.sum if backward else None)


class _BatchSize:
    """Samples in a batch dict (a class, not a lambda, so the callback pickles)."""

    def __init__(self, key: str):
        self.key = key

    def __call__(self, batch: dict[str, torch.Tensor]) -> int:
        return batch[self.key].shape[0]


class TrainingThroughput(ThroughputMonitor):
    """``train|validate/samples_per_sec``, ``.../device/flops_per_sec`` and ``.../device/mfu`` of an
    ``M3DDMLitModule``, averaged over the last ``window_size`` batches (logged from then on).

    Args:
        peak_flops: the device's peak FLOP/s for MFU: a number; a preset name (``"a100"``,
            ``"h100"`` (SXM), ``"h100 pcie"``, ``"h200"``: dense bf16, see :data:`PEAK_FLOPS`); ``"auto"``: the preset
            matching the GPU's name, else Lightning's table for the trainer's precision; None:
            no MFU. MFU is not reported on CPUs.
        window_size: batches per average.
        batch_key: the batch entry whose first dimension counts samples.
    """

    def __init__(self, peak_flops: float | str | None = "auto", window_size: int = 50, batch_key: str = "video"):
        super().__init__(batch_size_fn=_BatchSize(batch_key), window_size=window_size)
        if isinstance(peak_flops, str) and peak_flops != "auto" and peak_flops.lower() not in PEAK_FLOPS:
            raise ValueError(f"peak_flops: unknown device {peak_flops!r}; presets: {sorted(PEAK_FLOPS)}, or a number")
        self.peak_flops = peak_flops
        self._flops_per_sample: dict[bool, int] = {}

    def setup(self, trainer, pl_module, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        device = trainer.strategy.root_device
        if self.peak_flops is None or device.type == "cpu":
            peak = None
        elif self.peak_flops == "auto":
            preset = peak_flops_of(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
            peak = preset or self.available_flops
        elif isinstance(self.peak_flops, str):
            peak = PEAK_FLOPS[self.peak_flops.lower()]
        else:
            peak = float(self.peak_flops)
        self.available_flops = peak
        for throughput in self._throughputs.values():
            throughput.available_flops = peak

    def _set_flops(self, pl_module, batch, backward: bool) -> None:
        # counted once per kind (training: forward + backward; validation: forward)
        if backward not in self._flops_per_sample:
            frames = batch["video"].shape[1]
            h, w = (s // pl_module.autoencoder.downscale for s in batch["video"].shape[-2:])
            self._flops_per_sample[backward] = unet_flops_per_sample(
                pl_module.unet.config, frames, (h, w), batch["global_frames"].shape[1], backward=backward
            )
        pl_module.flops_per_batch = self._flops_per_sample[backward] * self.batch_size_fn(batch)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.is_global_zero:
            self._set_flops(pl_module, batch, backward=True)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        if trainer.is_global_zero and not trainer.sanity_checking:
            self._set_flops(pl_module, batch, backward=False)
