"""Frozen autoencoders between frames and latents, behind one small protocol.

- :class:`StableDiffusionVAE`: diffusers' ``AutoencoderKL`` from a local Stable Diffusion
  folder (what the paper and the released model use; latents scaled by 0.18215 and drawn
  from the posterior, as the released pipeline does);
- :class:`PixelUnshuffleAutoencoder`: an exact, weight-free, lossless stand-in (space to
  depth) for tests and shape checks;
- :class:`PatchDCTAutoencoder`: a weight-free, compressive stand-in (the low frequencies of
  every patch's DCT, JPEG-like) with few latent channels, what a tiny UNet can learn to
  denoise quickly on CPU (demos, the convergence benchmark).

Both map frames (N, 3, H, W) in [-1, 1] to latents (N, C, H/s, W/s) and back.
"""

from __future__ import annotations

import math
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


class PatchDCTAutoencoder(Autoencoder):
    """The lowest spatial frequencies of every ``factor x factor`` patch, in an opponent colour space.

    Each patch is taken to an orthonormal colour basis (luma ``(R+G+B)/sqrt(3)`` and two
    chroma axes), transformed by an orthonormal 2D DCT, and only the first coefficients in
    zig-zag order are kept: ``luma_coefficients`` of luma and ``chroma_coefficients`` of each
    chroma axis. Coefficient ``(u, v)`` is then multiplied by
    ``scale / factor * (1 + u + v) ** frequency_exponent``: image spectra fall with
    frequency, and with exponent 2 every kept channel has about the same spread (on the
    generated videos 0.7-1.0 at scale 3, on the sample clip 0.2-2.6), as diffusion wants;
    residual noise in a high-frequency channel is divided by the same gain when decoded.
    Decoding inverts the gains and applies the transposed basis, so decode(encode(x)) is
    the best approximation of x in the kept subspace and encode(decode(z)) == z.

    Why not pixel-unshuffle for training: its 3 * factor^2 latent channels (48 at x4) are as
    many as a tiny UNet's widths, and the UNet then learns very slowly (64-wide UNet, one
    fixed batch, lr 1e-3, 40 steps: noise MSE 0.86 with 48 channels, 0.23 with 12). The
    default keeps 12 channels at x4: 32.8 dB reconstruction PSNR on the generated videos,
    31.9 dB on the sample clip.
    """

    def __init__(
        self,
        factor: int = 4,
        luma_coefficients: int = 6,
        chroma_coefficients: int = 3,
        frequency_exponent: float = 2.0,
        scale: float = 3.0,
    ):
        super().__init__()
        if factor < 1:
            raise ValueError(f"factor must be >= 1, got {factor}")
        for name, k in (("luma_coefficients", luma_coefficients), ("chroma_coefficients", chroma_coefficients)):
            if not 0 <= k <= factor * factor:
                raise ValueError(f"{name} must be in [0, {factor * factor}] for factor {factor}, got {k}")
        if luma_coefficients + chroma_coefficients == 0:
            raise ValueError("keep at least one coefficient")
        if scale <= 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        self.downscale = factor
        self.latent_channels = luma_coefficients + 2 * chroma_coefficients
        self.luma_coefficients = luma_coefficients
        self.chroma_coefficients = chroma_coefficients
        self.frequency_exponent = frequency_exponent
        self.scale = scale
        basis, frequencies = patch_dct_basis(factor, luma_coefficients, chroma_coefficients, return_frequencies=True)
        self.register_buffer("basis", basis, persistent=False)
        gains = scale / factor * (1.0 + frequencies) ** frequency_exponent
        self.register_buffer("gains", gains, persistent=False)

    def init_args(self) -> dict:
        return {
            "factor": self.downscale,
            "luma_coefficients": self.luma_coefficients,
            "chroma_coefficients": self.chroma_coefficients,
            "frequency_exponent": self.frequency_exponent,
            "scale": self.scale,
        }

    def encode(self, frames: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        patches = F.pixel_unshuffle(frames, self.downscale)
        coefficients = torch.einsum("kp,nphw->nkhw", self.basis.to(frames.dtype), patches)
        return coefficients * self.gains.to(frames.dtype)[:, None, None]

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        coefficients = latents / self.gains.to(latents.dtype)[:, None, None]
        patches = torch.einsum("kp,nkhw->nphw", self.basis.to(latents.dtype), coefficients)
        return F.pixel_shuffle(patches, self.downscale)


def patch_dct_basis(factor: int, luma: int, chroma: int, return_frequencies: bool = False):
    """(luma + 2 * chroma, 3 * factor^2) orthonormal rows, in ``pixel_unshuffle``'s (c, i, j) order.

    With ``return_frequencies``, also the (K,) ``u + v`` of every row's DCT frequency.
    """
    n = torch.arange(factor, dtype=torch.float64)
    dct = torch.stack(
        [math.sqrt((1 if k == 0 else 2) / factor) * torch.cos(math.pi * (2 * n + 1) * k / (2 * factor)) for k in range(factor)]
    )  # (frequency, position)
    zigzag = sorted(((u, v) for u in range(factor) for v in range(factor)), key=lambda uv: (uv[0] + uv[1], uv[0]))
    colour = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, -1.0], [1.0, -2.0, 1.0]], dtype=torch.float64)
    colour = colour / colour.norm(dim=1, keepdim=True)
    kept = [(axis, u, v) for axis, k in enumerate((luma, chroma, chroma)) for u, v in zigzag[:k]]
    basis = torch.stack([torch.einsum("c,i,j->cij", colour[a], dct[u], dct[v]).reshape(-1) for a, u, v in kept]).float()
    if not return_frequencies:
        return basis
    return basis, torch.tensor([float(u + v) for _, u, v in kept])


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
    classes = {f"{c.__module__}.{c.__qualname__}": c for c in (PixelUnshuffleAutoencoder, PatchDCTAutoencoder, StableDiffusionVAE)}
    path = spec.get("class_path")
    if path not in classes:
        raise ValueError(f"unknown autoencoder {path!r}; known: {sorted(classes)}")
    return classes[path](**spec.get("init_args", {}))
