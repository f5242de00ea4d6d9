"""Fréchet Video Distance (FVD, Unterthiner et al. 2018) from a local I3D TorchScript file.

Paper 4.1: "For the FVD evaluation metric, we use a uniform sampling of 16
frames per video". Appendix B (SSv2): "the same FVD evaluation metric as
[MAGVIT], with 16 frames for each video".

Feature network
---------------
The common ``i3d_torchscript.pt`` (StyleGAN-V, DIGAN, ...: a TorchScript port
of the tf.hub Kinetics-400 I3D used by the original FVD code, matching it to
~1e-4 in L2 of the outputs) is called as StyleGAN-V's ``compute_fvd`` does::

    features = detector(videos, rescale=True, resize=True, return_features=True)

* ``videos``: uint8 in [0, 255], layout ``(B, C, T, H, W)`` (channels before
  time); StyleGAN-V quantizes generated frames with ``x * 127.5 + 128`` then
  ``clamp(0, 255)`` and ``uint8``: rounding to the nearest level.
* ``rescale=True``: the network maps [0, 255] to [-1, 1] itself (the range the
  TF I3D expects). ``rescale=False`` means the input is already float [-1, 1]
  (then pass ``input_format="minus_one_one"``).
* ``resize=True``: the network resizes frames to 224 x 224 itself.
* ``return_features=True``: the 400-d logits before the softmax, as the
  original FVD uses them.

Our frames are float [0, 1] (paper 4.1); :class:`I3DFeatureExtractor` converts
them (``round(x * 255)``, uint8) and transposes with einops. The network is
injectable: anything with that call signature works (tests use a scripted
stand-in).

Statistics and distance
-----------------------
Features are accumulated as float64 sums (:class:`FeatureStats`): mean and the
unbiased covariance (``N - 1``, as ``numpy.cov`` / pytorch-fid / tf-gan). The
Fréchet distance ``|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))`` is computed
in float64 with a symmetric eigen-decomposition: ``tr((S1 S2)^(1/2)) =
tr((A S2 A)^(1/2))`` with ``A = S1^(1/2)``, and ``A S2 A`` is symmetric
positive semi-definite, so its square root has real eigenvalues (tiny negative
ones from round-off are clipped to 0). This gives the same value as
``scipy.linalg.sqrtm`` (tested) without its complex round-off parts, and needs
no SciPy at run time.

A missing I3D file, or fewer than two videos on a side (no covariance), makes
FVD ``None`` with a one-line reason.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from einops import rearrange

# Paper 4.1 and appendix B: 16 frames per video.
FVD_FRAMES = 16
# StyleGAN-V compute_fvd: return the raw 400-d features, let the network rescale and resize.
I3D_KWARGS = dict(rescale=True, resize=True, return_features=True)

InputFormat = Literal["uint8", "minus_one_one"]
FeatureExtractor = Callable[[torch.Tensor], torch.Tensor]
"""(B, T, 3, H, W) float in [0, 1] -> (B, D) features."""


def uniform_frame_indices(num_frames: int, count: int = FVD_FRAMES) -> list[int]:
    """``count`` frame indices spread evenly from the first to the last frame.

    ``round(linspace(0, num_frames - 1, count))``; a video shorter than
    ``count`` repeats frames (the I3D input needs exactly ``count``).
    """
    if num_frames < 1:
        raise ValueError(f"uniform_frame_indices: video has no frames (num_frames={num_frames})")
    if count < 1:
        raise ValueError(f"uniform_frame_indices: count must be >= 1, got {count}")
    return [int(i) for i in np.rint(np.linspace(0, num_frames - 1, count))]


class FeatureStats:
    """Running float64 mean / covariance of feature vectors."""

    def __init__(self) -> None:
        self.count = 0
        self._sum: np.ndarray | None = None
        self._outer: np.ndarray | None = None

    def update(self, features: torch.Tensor | np.ndarray) -> None:
        """Add (N, D) features."""
        x = features.detach().cpu().double().numpy() if isinstance(features, torch.Tensor) else np.asarray(features, np.float64)
        if x.ndim != 2:
            raise ValueError(f"FeatureStats: expected (N, D) features, got shape {x.shape}")
        if self._sum is None:
            self._sum = np.zeros(x.shape[1])
            self._outer = np.zeros((x.shape[1], x.shape[1]))
        elif x.shape[1] != self._sum.shape[0]:
            raise ValueError(f"FeatureStats: feature size changed from {self._sum.shape[0]} to {x.shape[1]}")
        self._sum += x.sum(axis=0)
        self._outer += x.T @ x
        self.count += x.shape[0]

    def mean(self) -> np.ndarray:
        if self._sum is None:
            raise ValueError("FeatureStats: no features")
        return self._sum / self.count

    def covariance(self) -> np.ndarray:
        """Unbiased covariance (divides by N - 1)."""
        if self.count < 2:
            raise ValueError(f"FeatureStats: covariance needs at least 2 videos, have {self.count}")
        mean = self.mean()
        return (self._outer - self.count * np.outer(mean, mean)) / (self.count - 1)


def _sym_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix (eigenvalues clipped at 0)."""
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance of two Gaussians, float64, symmetric eigen method (module docstring)."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(f"frechet_distance: shapes differ: mu {mu1.shape} / {mu2.shape}, sigma {sigma1.shape} / {sigma2.shape}")
    root1 = _sym_sqrt(sigma1)
    middle = root1 @ sigma2 @ root1
    eigenvalues = np.linalg.eigvalsh((middle + middle.T) / 2)
    trace_sqrt = float(np.sqrt(np.clip(eigenvalues, 0, None)).sum())
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt)


def fvd_from_stats(real: FeatureStats, fake: FeatureStats) -> tuple[float | None, str | None]:
    """FVD of two feature sets, or ``(None, reason)``."""
    for name, stats in (("real", real), ("generated", fake)):
        if stats.count < 2:
            return None, f"FVD needs at least 2 {name} videos, have {stats.count}"
    return frechet_distance(real.mean(), real.covariance(), fake.mean(), fake.covariance()), None


class I3DFeatureExtractor:
    """Calls an I3D TorchScript module with the StyleGAN-V convention (module docstring).

    Args:
        module: the loaded ``i3d_torchscript.pt`` or a stand-in with the same signature.
        input_format: ``"uint8"`` (default; ``rescale=True``) or ``"minus_one_one"``
            (float in [-1, 1], ``rescale=False``).
        resize: let the network resize frames to 224 x 224.
        batch: videos per forward pass.
    """

    def __init__(self, module: torch.nn.Module, input_format: InputFormat = "uint8", resize: bool = True, batch: int = 8) -> None:
        if input_format not in ("uint8", "minus_one_one"):
            raise ValueError(f"I3DFeatureExtractor: input_format must be 'uint8' or 'minus_one_one', got {input_format!r}")
        self.module = module
        self.input_format = input_format
        self.resize = resize
        self.batch = batch

    @property
    def device(self) -> torch.device:
        for tensor in list(self.module.parameters()) + list(self.module.buffers()):
            return tensor.device
        return torch.device("cpu")

    @torch.no_grad()
    def __call__(self, videos: torch.Tensor) -> torch.Tensor:
        """(B, T, 3, H, W) float in [0, 1] -> (B, D) float64 features on the CPU."""
        if videos.ndim != 5 or videos.shape[2] != 3:
            raise ValueError(f"I3DFeatureExtractor: expected (B, T, 3, H, W), got {tuple(videos.shape)}")
        outputs = []
        for start in range(0, videos.shape[0], self.batch):
            x = rearrange(videos[start : start + self.batch].to(self.device), "b t c h w -> b c t h w")
            if self.input_format == "uint8":
                x = (x.float() * 255).round().clamp(0, 255).to(torch.uint8)
                rescale = True
            else:
                x = x.float() * 2 - 1
                rescale = False
            features = self.module(x, rescale=rescale, resize=self.resize, return_features=True)
            outputs.append(features.detach().double().cpu())
        return torch.cat(outputs)


def load_i3d(path: str | os.PathLike | None, device: torch.device | str = "cpu", input_format: InputFormat = "uint8") -> tuple[I3DFeatureExtractor | None, str | None]:
    """Load ``i3d_torchscript.pt`` from disk (never downloads), or ``(None, reason)``."""
    if path is None:
        return None, "no I3D TorchScript file given (i3d_path); FVD not computed"
    path = Path(path)
    if not path.is_file():
        return None, f"I3D TorchScript file not found: {path}"
    try:
        with warnings.catch_warnings():
            # torch marks TorchScript as deprecated; the I3D port only exists as TorchScript.
            warnings.simplefilter("ignore", FutureWarning)
            module = torch.jit.load(str(path), map_location=device).eval()
    except Exception as error:  # noqa: BLE001 - an unusable file makes FVD unavailable, not the run
        return None, f"I3D TorchScript file unusable ({path}): {type(error).__name__}: {error}"
    return I3DFeatureExtractor(module, input_format=input_format), None


class FVDAccumulator:
    """Feature statistics per protocol (real videos) and per protocol and method (generated).

    Real statistics are shared by all methods of a protocol. Each video gives
    ``num_frames`` uniformly sampled frames (:func:`uniform_frame_indices`).

    Args:
        extractor: (B, T, 3, H, W) in [0, 1] -> (B, D), e.g. :func:`load_i3d`'s;
            ``None`` makes every FVD ``None`` with ``reason``.
        reason: why ``extractor`` is ``None``.
        num_frames: frames per video (paper: 16).
    """

    def __init__(self, extractor: FeatureExtractor | None, reason: str | None = None, num_frames: int = FVD_FRAMES) -> None:
        if extractor is None and not reason:
            raise ValueError("FVDAccumulator: give a reason when no feature extractor is available")
        self.extractor = extractor
        self.reason = None if extractor is not None else reason
        self.num_frames = num_frames
        self._real: dict[str, FeatureStats] = {}
        self._fake: dict[tuple[str, str], FeatureStats] = {}

    @property
    def available(self) -> bool:
        return self.extractor is not None

    def _features(self, videos: torch.Tensor) -> torch.Tensor:
        if videos.ndim == 4:
            videos = videos[None]
        if videos.ndim != 5 or videos.shape[2] != 3:
            raise ValueError(f"FVD: expected a video (F, 3, H, W) or videos (B, F, 3, H, W), got {tuple(videos.shape)}")
        low, high = float(videos.min()), float(videos.max())
        if low < -1e-3 or high > 1 + 1e-3:
            raise ValueError(f"FVD: frames must be in [0, 1], got [{low:.4g}, {high:.4g}]")
        index = torch.tensor(uniform_frame_indices(videos.shape[1], self.num_frames), device=videos.device)
        return self.extractor(videos.index_select(1, index).clamp(0, 1))

    def add_real(self, protocol: str, videos: torch.Tensor) -> None:
        """Ground-truth video(s): (F, 3, H, W) or (B, F, 3, H, W) in [0, 1]."""
        if self.extractor is not None:
            self._real.setdefault(protocol, FeatureStats()).update(self._features(videos))

    def add_fake(self, protocol: str, method: str, videos: torch.Tensor) -> None:
        """Generated video(s) of ``method``: (F, 3, H, W) or (B, F, 3, H, W) in [0, 1]."""
        if self.extractor is not None:
            self._fake.setdefault((protocol, method), FeatureStats()).update(self._features(videos))

    def compute(self, protocol: str, method: str) -> tuple[float | None, str | None]:
        """``(fvd, None)`` or ``(None, reason)``."""
        if self.extractor is None:
            return None, self.reason
        return fvd_from_stats(self._real.get(protocol, FeatureStats()), self._fake.get((protocol, method), FeatureStats()))
