"""Frozen autoencoders between frames and latents, behind one small protocol.

- :class:`StableDiffusionVAE`: diffusers' ``AutoencoderKL`` from a local Stable Diffusion
  folder (what the paper and the released model use; latents scaled by 0.18215 and drawn
  from the posterior, as the released pipeline does);
- :class:`PixelUnshuffleAutoencoder`: an exact, weight-free, lossless stand-in (space to
  depth) for tests, demos and small experiments.

Both map frames (N, 3, H, W) in [-1, 1] to latents (N, C, H/s, W/s) and back.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from lightning_m3ddm.checkpoints import CheckpointError


class Autoencoder(nn.Module):
    """Base class of the frozen autoencoders (configs name a subclass by ``class_path``)."""

    latent_channels: int
    downscale: int

    def init_args(self) -> dict:
        """Constructor arguments, so checkpoints can rebuild the autoencoder (see :func:`from_spec`)."""
        raise NotImplementedError

    def spec(self) -> dict:
        cls = type(self)
        return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": self.init_args()}

    def encode(self, frames: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(N, 3, H, W) in [-1, 1] -> (N, latent_channels, H/downscale, W/downscale)."""
        raise NotImplementedError

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(N, latent_channels, h, w) -> (N, 3, h*downscale, w*downscale), roughly in [-1, 1]."""
        raise NotImplementedError


class PixelUnshuffleAutoencoder(Autoencoder):
    """Space-to-depth: every ``factor x factor`` patch of RGB becomes 3*factor^2 channels.

    Lossless and weight-free, so a tiny UNet can learn outpainting on CPU without a VAE.
    ``scale`` multiplies the latents (1 keeps [-1, 1]).
    """

    def __init__(self, factor: int = 4, scale: float = 1.0):
        super().__init__()
        if factor < 1:
            raise ValueError(f"factor must be >= 1, got {factor}")
        self.downscale = factor
        self.latent_channels = 3 * factor * factor
        self.scale = scale

    def init_args(self) -> dict:
        return {"factor": self.downscale, "scale": self.scale}

    def encode(self, frames: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return F.pixel_unshuffle(frames, self.downscale) * self.scale

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(latents / self.scale, self.downscale)


class StableDiffusionVAE(Autoencoder):
    """diffusers ``AutoencoderKL`` from ``<path>/<subfolder>``, frozen, run in micro-batches.

    ``sample_posterior=True`` draws latents from the posterior as the released pipeline does
    (``latent_dist.sample() * 0.18215``); False takes its mean.
    """

    def __init__(
        self,
        path: str | Path,
        subfolder: str = "vae",
        scaling_factor: float = 0.18215,
        sample_posterior: bool = True,
        micro_batch: int = 16,
        dtype: str = "float32",
    ):
        super().__init__()
        from diffusers import AutoencoderKL

        folder = Path(path).expanduser() / subfolder
        if not (folder / "config.json").is_file():
            raise CheckpointError(f"no VAE at {folder} (expected config.json and weights of an AutoencoderKL)")
        try:
            self.vae = AutoencoderKL.from_pretrained(folder, local_files_only=True, torch_dtype=getattr(torch, dtype))
        except (OSError, ValueError, EnvironmentError) as err:
            raise CheckpointError(f"cannot load the VAE from {folder}: {err}") from err
        self.vae.requires_grad_(False).eval()
        self.scaling_factor = scaling_factor
        self.sample_posterior = sample_posterior
        self.micro_batch = micro_batch
        self.latent_channels = self.vae.config.latent_channels
        self.downscale = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self._init_args = dict(
            path=str(path), subfolder=subfolder, scaling_factor=scaling_factor,
            sample_posterior=sample_posterior, micro_batch=micro_batch, dtype=dtype,
        )

    def init_args(self) -> dict:
        return dict(self._init_args)

    def train(self, mode: bool = True) -> "StableDiffusionVAE":
        return super().train(False)  # frozen: never in train mode

    @torch.no_grad()
    def encode(self, frames: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        out = []
        for chunk in frames.split(self.micro_batch):
            dist = self.vae.encode(chunk.to(self.vae.dtype)).latent_dist
            latent = dist.sample(generator) if self.sample_posterior else dist.mean
            out.append(latent * self.scaling_factor)
        return torch.cat(out).to(frames.dtype)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        out = [
            self.vae.decode((chunk / self.scaling_factor).to(self.vae.dtype)).sample
            for chunk in latents.split(self.micro_batch)
        ]
        return torch.cat(out).to(latents.dtype)


def from_spec(spec: "Autoencoder | dict | None") -> Autoencoder:
    """An autoencoder from an instance, a ``{class_path, init_args}`` dict of this module's
    classes (as stored in checkpoints), or None (the pixel-unshuffle default)."""
    if spec is None:
        return PixelUnshuffleAutoencoder()
    if isinstance(spec, Autoencoder):
        return spec
    classes = {f"{c.__module__}.{c.__qualname__}": c for c in (PixelUnshuffleAutoencoder, StableDiffusionVAE)}
    path = spec.get("class_path")
    if path not in classes:
        raise ValueError(f"unknown autoencoder {path!r}; known: {sorted(classes)}")
    return classes[path](**spec.get("init_args", {}))
