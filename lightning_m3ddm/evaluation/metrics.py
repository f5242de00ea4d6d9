"""Per-video quality metrics of outpainted videos (paper 4.1) and their aggregation.

Paper 4.1: "To evaluate MSE, PSNR, SSIM, and FVD, we convert the generated
results into video frames with a value range of [0, 1], while LPIPS is evaluated
using a value range of [-1, 1]." Table 1: "we report their mean values across
all test samples". Per video, every metric is the mean over its frames of a
per-frame value; per protocol and method, the mean over videos
(:class:`MetricAccumulator`). FVD lives in :mod:`.fvd` (a set-level metric).

Each metric is reported over the whole frame (as the paper does, key ``"mse"``)
and over the generated region only (mask 1, key ``"region_mse"``); the known
region is copied from the input by a good method, so whole-frame numbers are
diluted by the known area and depend on the mask ratio.

Definitions (per frame, then averaged over frames):

* MSE: mean squared error over pixels and channels (float64). Region: over the
  masked pixels only.
* PSNR: ``10 log10(1 / MSE)`` of that frame (data range 1); capped at
  ``psnr_max_db`` (100 dB, i.e. MSE floor 1e-10) so that a perfect frame does
  not make the mean infinite. Equals torchmetrics' ``peak_signal_noise_ratio``
  with ``data_range=1`` per frame below the cap.
* SSIM: torchmetrics ``structural_similarity_index_measure`` with its defaults
  (Gaussian window sigma 1.5, 11 taps, K1 0.01, K2 0.03, data range 1), per
  frame the mean of the SSIM map over channels and pixels. torchmetrics pads
  the frame by reflection, so the map covers every pixel (scikit-image instead
  drops a 5-pixel border; in the interior both maps agree, tested). Region:
  the mean of the same full-frame SSIM map over the masked pixels. We use the
  map and not the bounding box of the region because the region of a
  two-sided protocol (left + right bands) has the whole frame as bounding box.
  The map is computed with OpenCV's separable float64 filter (same Gaussian,
  reflection = ``BORDER_REFLECT_101``, same formula and clamps): equal to
  torchmetrics' map to 1e-12 (tested) and 20-30x faster on the CPU, where
  torchmetrics' float64 grouped convolution takes over a second per 16 frames
  of 256 x 256 (:func:`ssim_map_torchmetrics` is the reference).
* LPIPS: torchmetrics' LPIPS network (AlexNet backbone by default, the
  ``lpips`` package default) on frames in [-1, 1]. Region: LPIPS of the
  bounding-box crop of each *band* of the generated region (top / bottom /
  left / right bands when the known area is a rectangle, otherwise each
  8-connected component), averaged weighted by the band's masked area. A crop
  narrower than ``lpips_min_crop`` (32 px: the smallest input AlexNet's five
  layers accept) is widened symmetrically inside the frame to that size, so it
  then includes some known pixels.

LPIPS weights: torchmetrics ships the LPIPS linear layers, but the backbone is
torchvision's ImageNet model, which torchvision downloads on first use. We never
download unless ``allow_download=True``: the backbone comes from
``backbone_weights`` (a local torchvision state dict, full model or
``features`` only) or from torchvision's cache file if present; otherwise LPIPS
is ``None`` with a one-line reason.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from einops import rearrange, reduce

METRICS: tuple[str, ...] = ("mse", "psnr", "ssim", "lpips")
SCOPES: tuple[str, ...] = ("frame", "region")
# Direction in which a metric is better (for tables): True = higher is better.
HIGHER_IS_BETTER = {"mse": False, "psnr": True, "ssim": True, "lpips": False, "fvd": False}

LpipsNet = Literal["alex", "vgg", "squeeze"]
_TORCHVISION_ARCH = {"alex": ("alexnet", "AlexNet_Weights"), "vgg": ("vgg16", "VGG16_Weights"), "squeeze": ("squeezenet1_1", "SqueezeNet1_1_Weights")}


def metric_key(metric: str, scope: str) -> str:
    """Flat key of a metric: ``"mse"`` (whole frame) or ``"region_mse"`` (generated region)."""
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    return metric if scope == "frame" else f"region_{metric}"


@dataclass(frozen=True)
class MetricConfig:
    """Metric settings (defaults: torchmetrics / scikit-image conventions, see module docstring)."""

    ssim_sigma: float = 1.5
    ssim_kernel_size: int = 11
    psnr_max_db: float = 100.0
    lpips_net: LpipsNet = "alex"
    lpips_backbone_weights: str | None = None
    allow_download: bool = False
    lpips_min_crop: int = 32
    frame_batch: int = 16  # frames per chunk: bounds memory on long videos
    range_tolerance: float = 1e-3  # inputs may overshoot [0, 1] by this much (then clamped)


# --------------------------------------------------------------------------- input checks


def _as_video(name: str, video: torch.Tensor) -> torch.Tensor:
    if not isinstance(video, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor of shape (F, 3, H, W), got {type(video).__name__}")
    if video.ndim != 4 or video.shape[1] != 3:
        raise ValueError(f"{name}: expected shape (F, 3, H, W), got {tuple(video.shape)}")
    if video.shape[0] == 0:
        raise ValueError(f"{name}: video has no frames")
    return video


def _check_unit_range(name: str, video: torch.Tensor, tolerance: float) -> torch.Tensor:
    low, high = float(video.min()), float(video.max())
    if not (math.isfinite(low) and math.isfinite(high)) or low < -tolerance or high > 1 + tolerance:
        raise ValueError(f"{name}: values must be in [0, 1] (frames as the paper evaluates them), got [{low:.4g}, {high:.4g}]")
    return video.clamp(0, 1)


def _as_mask(mask: torch.Tensor | np.ndarray | None, frames: int, height: int, width: int) -> torch.Tensor | None:
    """Bool mask (F, H, W), True = generated region; accepts (F, 1, H, W), (F, H, W), (1, 1, H, W) or (H, W)."""
    if mask is None:
        return None
    if isinstance(mask, np.ndarray):
        mask = torch.from_numpy(mask)
    if mask.ndim == 2:
        mask = mask[None]
    elif mask.ndim == 4:
        if mask.shape[1] != 1:
            raise ValueError(f"mask: expected (F, 1, H, W), got {tuple(mask.shape)}")
        mask = mask[:, 0]
    if mask.ndim != 3 or tuple(mask.shape[-2:]) != (height, width) or mask.shape[0] not in (1, frames):
        raise ValueError(f"mask: expected (F, 1, H, W) or (H, W) matching video ({frames}, 3, {height}, {width}), got {tuple(mask.shape)}")
    mask = mask > 0.5 if mask.dtype != torch.bool else mask
    return mask.expand(frames, height, width)


# --------------------------------------------------------------------------- pure metrics


def frame_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per-frame MSE in float64.

    Args:
        pred, target: (F, 3, H, W) in [0, 1].
        mask: optional bool (F, H, W); True pixels only. Frames without a True pixel give NaN.

    Returns:
        (F,) float64.
    """
    squared = (pred.double() - target.double()).pow(2)
    if mask is None:
        return reduce(squared, "f c h w -> f", "mean")
    weights = rearrange(mask.double(), "f h w -> f 1 h w")
    total = reduce(squared * weights, "f c h w -> f", "sum")
    count = reduce(weights, "f 1 h w -> f", "sum") * squared.shape[1]
    return total / count  # 0/0 = NaN for frames without region


def psnr_from_mse(mse: torch.Tensor, max_db: float = 100.0) -> torch.Tensor:
    """PSNR in dB for data range 1, capped at ``max_db``; NaN stays NaN."""
    floor = 10.0 ** (-max_db / 10.0)
    return -10.0 * torch.log10(mse.clamp_min(floor))


def _ssim_from_moments(moments: torch.Tensor, count: int, c1: float, c2: float) -> torch.Tensor:
    """SSIM map from the filtered (pred, target, pred², target², pred·target), torchmetrics' formula."""
    mu_pred, mu_target, pred_sq, target_sq, pred_target = moments.split(count)
    mu_pred_sq, mu_target_sq, mu_pred_target = mu_pred.pow(2), mu_target.pow(2), mu_pred * mu_target
    sigma_pred_sq = (pred_sq - mu_pred_sq).clamp_min(0.0)
    sigma_target_sq = (target_sq - mu_target_sq).clamp_min(0.0)
    sigma_pred_target = pred_target - mu_pred_target
    upper = 2 * sigma_pred_target + c2
    lower = sigma_pred_sq + sigma_target_sq + c2
    return ((2 * mu_pred_target + c1) * upper) / ((mu_pred_sq + mu_target_sq + c1) * lower)


# OpenCV filters take at most this many channels per image (CV_CN_MAX is 128 in OpenCV 5).
_CV_CHANNELS = 128


def ssim_map(pred: torch.Tensor, target: torch.Tensor, sigma: float = 1.5, kernel_size: int = 11) -> torch.Tensor:
    """Full-frame SSIM map, torchmetrics' definition (reflection padding; see module docstring).

    As in torchmetrics, the Gaussian window has ``int(3.5 * sigma + 0.5) * 2 + 1`` taps
    (11 for sigma 1.5) whatever ``kernel_size`` says; K1 = 0.01, K2 = 0.03, data range 1.

    Args:
        pred, target: (F, 3, H, W) in [0, 1].

    Returns:
        (F, 3, H, W) in float64, on ``pred``'s device.
    """
    import cv2

    taps = int(3.5 * sigma + 0.5) * 2 + 1
    offsets = np.arange((1 - taps) / 2, (1 + taps) / 2, 1, dtype=np.float64)
    gauss = np.exp(-((offsets / sigma) ** 2) / 2)
    gauss /= gauss.sum()
    if min(pred.shape[-2:]) <= taps // 2:  # reflection needs more pixels than the half window
        return ssim_map_torchmetrics(pred, target, sigma, kernel_size)
    device = pred.device
    pred, target = pred.detach().double().cpu(), target.detach().double().cpu()
    stack = torch.cat((pred, target, pred * pred, target * target, pred * target))
    planes = rearrange(stack, "n c h w -> h w (n c)").contiguous().numpy()
    filtered = [
        cv2.sepFilter2D(np.ascontiguousarray(planes[..., start : start + _CV_CHANNELS]), cv2.CV_64F, gauss, gauss, borderType=cv2.BORDER_REFLECT_101)
        .reshape(planes.shape[0], planes.shape[1], -1)
        for start in range(0, planes.shape[-1], _CV_CHANNELS)
    ]
    moments = rearrange(torch.from_numpy(np.concatenate(filtered, axis=-1)), "h w (n c) -> n c h w", c=pred.shape[1])
    return _ssim_from_moments(moments, pred.shape[0], 0.01**2, 0.03**2).to(device)


def ssim_map_torchmetrics(pred: torch.Tensor, target: torch.Tensor, sigma: float = 1.5, kernel_size: int = 11) -> torch.Tensor:
    """The same map through torchmetrics (reference; slow on the CPU in float64)."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    _, full = structural_similarity_index_measure(
        pred.double(), target.double(), gaussian_kernel=True, sigma=sigma, kernel_size=kernel_size,
        data_range=1.0, reduction="none", return_full_image=True,
    )
    return full


def masked_frame_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Per-frame mean of a (F, C, H, W) map, over the True pixels of ``mask`` (F, H, W) if given.

    Returns:
        (F,) float64; NaN for frames without a True pixel.
    """
    values = values.double()
    if mask is None:
        return reduce(values, "f c h w -> f", "mean")
    weights = rearrange(mask.double(), "f h w -> f 1 h w")
    return reduce(values * weights, "f c h w -> f", "sum") / (reduce(weights, "f 1 h w -> f", "sum") * values.shape[1])


# --------------------------------------------------------------------------- region boxes


@dataclass(frozen=True)
class RegionBox:
    """Half-open pixel rectangle ``[y0, y1) x [x0, x1)`` and the masked pixels it stands for."""

    y0: int
    y1: int
    x0: int
    x1: int
    weight: int


def region_boxes(mask: np.ndarray | torch.Tensor) -> list[RegionBox]:
    """Bands of a generated region (H, W) bool, for region LPIPS (see module docstring).

    When the known pixels form one rectangle, the region is cut into the
    top and bottom bands (full width) and the left and right bands (between
    them). Otherwise each 8-connected component gives its bounding box.
    """
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"region_boxes: expected a (H, W) mask, got shape {mask.shape}")
    height, width = mask.shape
    if not mask.any():
        return []
    known = ~mask
    if known.any():
        rows, cols = np.flatnonzero(known.any(axis=1)), np.flatnonzero(known.any(axis=0))
        y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        if known[y0:y1, x0:x1].all():
            bands = [(0, y0, 0, width), (y1, height, 0, width), (y0, y1, 0, x0), (y0, y1, x1, width)]
            return [RegionBox(a, b, c, d, (b - a) * (d - c)) for a, b, c, d in bands if b > a and d > c]
    import cv2

    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    boxes = []
    for label in range(1, count):
        x, y, w, h, area = (int(v) for v in stats[label])
        boxes.append(RegionBox(y, y + h, x, x + w, area))
    return boxes


def widen_box(box: RegionBox, min_size: int, height: int, width: int) -> RegionBox:
    """``box`` grown symmetrically (clamped inside the frame) to at least ``min_size`` per side."""

    def grow(lo: int, hi: int, limit: int) -> tuple[int, int]:
        size = min(min_size, limit)
        if hi - lo >= size:
            return lo, hi
        lo = max(0, lo - (size - (hi - lo)) // 2)
        hi = lo + size
        if hi > limit:
            hi, lo = limit, limit - size
        return lo, hi

    y0, y1 = grow(box.y0, box.y1, height)
    x0, x1 = grow(box.x0, box.x1, width)
    return RegionBox(y0, y1, x0, x1, box.weight)


# --------------------------------------------------------------------------- LPIPS


def _backbone_key(name: str) -> str:
    """LPIPS backbone parameter name -> torchvision ``features.*`` name.

    torchmetrics splits ``model.features`` into slices that keep the original
    layer indices as child names: ``slice2.3.weight`` (AlexNet, VGG) and
    ``slices.1.3.squeeze.weight`` (SqueezeNet) are ``features.3...``.
    """
    parts = name.split(".")
    rest = parts[2:] if parts[0] == "slices" else parts[1:]
    return "features." + ".".join(rest)


def _load_backbone(lpips_net: torch.nn.Module, path: Path) -> None:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping):
        raise ValueError(f"{path} does not hold a state dict")
    if not any(key.startswith("features.") for key in state):
        state = {f"features.{key}": value for key, value in state.items()}
    wanted = {name: _backbone_key(name) for name, _ in lpips_net.net.named_parameters()}
    missing = sorted(source for source in wanted.values() if source not in state)
    if missing:
        raise ValueError(f"{path} lacks backbone tensors {missing[:3]}{'...' if len(missing) > 3 else ''}")
    params = dict(lpips_net.net.named_parameters())
    with torch.no_grad():
        for name, source in wanted.items():
            if tuple(state[source].shape) != tuple(params[name].shape):
                raise ValueError(f"{path}: {source} has shape {tuple(state[source].shape)}, expected {tuple(params[name].shape)}")
            params[name].copy_(state[source])


def torchvision_cache_file(net: LpipsNet) -> Path:
    """Where torchvision caches the ImageNet backbone of ``net`` (``$TORCH_HOME/hub/checkpoints``)."""
    import torchvision

    _, weights_enum = _TORCHVISION_ARCH[net]
    url = getattr(torchvision.models, weights_enum).DEFAULT.url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


PairScorer = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""(N, 3, h, w) x 2 in [-1, 1] -> (N,) per-image distances."""


class LPIPSScorer:
    """LPIPS per frame, or unavailable with a reason (never raises for missing weights).

    Args:
        net: a callable ``(pred, target) -> (N,)`` on frames in [-1, 1], or ``None``.
        reason: why ``net`` is ``None``.
        min_crop: smallest crop side for region LPIPS.
        batch: frames per forward pass.
    """

    def __init__(self, net: PairScorer | None, reason: str | None = None, min_crop: int = 32, batch: int = 16) -> None:
        if net is None and not reason:
            raise ValueError("LPIPSScorer: give a reason when no network is available")
        self.net = net
        self.reason = None if net is not None else reason
        self.min_crop = min_crop
        self.batch = batch

    @property
    def available(self) -> bool:
        return self.net is not None

    @classmethod
    def from_config(cls, config: MetricConfig = MetricConfig(), device: torch.device | str = "cpu") -> LPIPSScorer:
        net, reason = load_lpips_network(config.lpips_net, config.lpips_backbone_weights, config.allow_download)
        if net is None:
            return cls(None, reason, config.lpips_min_crop, config.frame_batch)
        net = net.to(device)

        def score(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return net(pred.to(device).float(), target.to(device).float()).reshape(-1)

        return cls(score, None, config.lpips_min_crop, config.frame_batch)

    def frame_scores(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """(N, 3, h, w) x 2 in [-1, 1] -> (N,) float64."""
        if self.net is None:
            raise RuntimeError(f"LPIPS unavailable: {self.reason}")
        out = [self.net(pred[i : i + self.batch], target[i : i + self.batch]).reshape(-1) for i in range(0, pred.shape[0], self.batch)]
        return torch.cat(out).double().cpu()

    def region_scores(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Per-frame region LPIPS (see module docstring); NaN for frames without region.

        Args:
            pred, target: (F, 3, H, W) in [-1, 1].
            mask: bool (F, H, W).
        """
        frames, _, height, width = pred.shape
        scores = torch.full((frames,), float("nan"), dtype=torch.float64)
        # Outpainting masks are usually the same on every frame: cut boxes once per distinct mask.
        groups: list[tuple[torch.Tensor, list[int]]] = []
        for index in range(frames):
            for group_mask, members in groups:
                if torch.equal(group_mask, mask[index]):
                    members.append(index)
                    break
            else:
                groups.append((mask[index], [index]))
        for group_mask, members in groups:
            boxes = [widen_box(b, self.min_crop, height, width) for b in region_boxes(group_mask)]
            if not boxes:
                continue
            idx = torch.tensor(members, device=pred.device)
            total = torch.zeros(len(members), dtype=torch.float64)
            for box in boxes:
                crop = (slice(None), slice(None), slice(box.y0, box.y1), slice(box.x0, box.x1))
                total += box.weight * self.frame_scores(pred[idx][crop], target[idx][crop])
            scores[members] = total / sum(b.weight for b in boxes)
        return scores


def load_lpips_network(net: LpipsNet = "alex", backbone_weights: str | os.PathLike | None = None, allow_download: bool = False) -> tuple[torch.nn.Module | None, str | None]:
    """torchmetrics' LPIPS module with a local backbone, or ``(None, reason)``.

    Order: ``backbone_weights`` if given; else torchvision's cache file; else a
    download through torchvision when ``allow_download``; else unavailable.
    """
    if net not in _TORCHVISION_ARCH:
        return None, f"unknown LPIPS backbone {net!r}; expected one of {sorted(_TORCHVISION_ARCH)}"
    try:
        from torchmetrics.functional.image.lpips import _NoTrainLpips
    except ImportError as error:  # torchvision missing, or torchmetrics moved its private class
        return None, f"torchmetrics LPIPS cannot be imported ({error})"
    if backbone_weights is not None:
        path = Path(backbone_weights)
        if not path.is_file():
            return None, f"LPIPS backbone weights not found: {path}"
    else:
        try:
            path = torchvision_cache_file(net)
        except ImportError as error:
            return None, f"LPIPS needs torchvision for its backbone ({error})"
        if not path.is_file():
            if not allow_download:
                return None, (
                    f"LPIPS needs the ImageNet {_TORCHVISION_ARCH[net][0]} backbone: not at {path}; "
                    "pass lpips_backbone_weights=PATH or allow_download=True"
                )
            try:
                return _NoTrainLpips(net=net).eval(), None  # torchvision downloads the backbone
            except Exception as error:  # noqa: BLE001 - any failure makes the metric unavailable, not the run
                return None, f"LPIPS backbone download failed: {type(error).__name__}: {error}"
    try:
        module = _NoTrainLpips(net=net, pnet_rand=True)  # random backbone: nothing downloaded
        _load_backbone(module, path)
    except Exception as error:  # noqa: BLE001
        return None, f"LPIPS backbone weights unusable ({path}): {type(error).__name__}: {error}"
    return module.eval(), None


# --------------------------------------------------------------------------- per video


@dataclass
class VideoScores:
    """Metrics of one video: ``values[key]`` (keys from :func:`metric_key`), ``None`` when unavailable."""

    values: dict[str, float | None]
    reasons: dict[str, str] = field(default_factory=dict)
    num_frames: int = 0

    def as_dict(self) -> dict:
        return {"num_frames": self.num_frames, "metrics": dict(self.values), "reasons": dict(self.reasons)}


class VideoMetricAccumulator:
    """Streaming per-video metrics: feed chunks of frames, read :meth:`result`.

    Every metric is a mean of per-frame values, so chunks add up exactly; use
    this for long videos that do not fit in memory at once.
    """

    def __init__(self, config: MetricConfig = MetricConfig(), lpips: LPIPSScorer | None = None) -> None:
        self.config = config
        self.lpips = lpips
        self._sums = {metric_key(m, s): 0.0 for m in METRICS for s in SCOPES}
        self._counts = dict.fromkeys(self._sums, 0)
        self._frames = 0
        self._mask_given = False
        self._lpips_usable = False
        self._lpips_reason: str | None = None

    def update(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | np.ndarray | None = None) -> None:
        """Add frames.

        Args:
            pred, target: (F, 3, H, W) in [0, 1].
            mask: optional (F, 1, H, W) / (H, W), 1 = generated region.
        """
        pred, target = _as_video("prediction", pred), _as_video("ground truth", target)
        if pred.shape != target.shape:
            raise ValueError(f"prediction {tuple(pred.shape)} and ground truth {tuple(target.shape)} differ in shape")
        pred = _check_unit_range("prediction", pred, self.config.range_tolerance)
        target = _check_unit_range("ground truth", target, self.config.range_tolerance)
        frames, _, height, width = pred.shape
        region = _as_mask(mask, frames, height, width)
        self._lpips_usable = self.lpips is not None and self.lpips.available
        if self._lpips_usable and min(height, width) < self.lpips.min_crop:
            # AlexNet's five layers need about 31 px; a smaller frame cannot be scored.
            self._lpips_usable = False
            self._lpips_reason = f"frames of {height}x{width} px are smaller than LPIPS' minimum of {self.lpips.min_crop} px"
        if region is not None:
            region = region.to(pred.device)
            self._mask_given = True
        step = max(1, self.config.frame_batch)
        for start in range(0, frames, step):
            chunk = slice(start, start + step)
            self._update_chunk(pred[chunk], target[chunk], None if region is None else region[chunk])
        self._frames += frames

    def _add(self, key: str, per_frame: torch.Tensor) -> None:
        valid = per_frame[~torch.isnan(per_frame)]
        self._sums[key] += float(valid.sum())
        self._counts[key] += int(valid.numel())

    def _update_chunk(self, pred: torch.Tensor, target: torch.Tensor, region: torch.Tensor | None) -> None:
        cfg = self.config
        ssim = ssim_map(pred, target, cfg.ssim_sigma, cfg.ssim_kernel_size)
        for scope, scope_mask in (("frame", None), ("region", region)):
            if scope == "region" and region is None:
                continue
            mse = frame_mse(pred, target, scope_mask)
            self._add(metric_key("mse", scope), mse)
            self._add(metric_key("psnr", scope), psnr_from_mse(mse, cfg.psnr_max_db))
            self._add(metric_key("ssim", scope), masked_frame_mean(ssim, scope_mask))
        if self._lpips_usable:
            # Paper 4.1: LPIPS on [-1, 1].
            pred_m11, target_m11 = pred * 2 - 1, target * 2 - 1
            self._add("lpips", self.lpips.frame_scores(pred_m11, target_m11))
            if region is not None:
                self._add("region_lpips", self.lpips.region_scores(pred_m11, target_m11, region))

    def result(self) -> VideoScores:
        values: dict[str, float | None] = {}
        reasons: dict[str, str] = {}
        lpips_reason = "LPIPS not requested" if self.lpips is None else (self.lpips.reason or self._lpips_reason)
        for key, total in self._sums.items():
            count = self._counts[key]
            values[key] = total / count if count else None
            if count:
                continue
            if self._frames == 0:
                reasons[key] = "no frames"
            elif key.endswith("lpips") and lpips_reason:
                reasons[key] = lpips_reason
            elif key.startswith("region_"):
                reasons[key] = "no generated pixels" if self._mask_given else "no mask given"
            else:
                reasons[key] = "not computed"
        return VideoScores(values, reasons, self._frames)


def video_metrics(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | np.ndarray | None = None,
    config: MetricConfig = MetricConfig(),
    lpips: LPIPSScorer | None = None,
) -> VideoScores:
    """All per-video metrics of one outpainted video.

    Args:
        pred: (F, 3, H, W) generated video in [0, 1].
        target: (F, 3, H, W) ground truth in [0, 1].
        mask: optional (F, 1, H, W) or (H, W), 1 = generated region; without it
            the region metrics are ``None``.
        lpips: LPIPS scorer (see :meth:`LPIPSScorer.from_config`); ``None`` or
            unavailable makes LPIPS ``None`` with its reason.
    """
    accumulator = VideoMetricAccumulator(config, lpips)
    accumulator.update(pred, target, mask)
    return accumulator.result()


# --------------------------------------------------------------------------- aggregation


class MetricAccumulator:
    """Means over videos per protocol and method (paper: "mean values across all test samples").

    Per-video scores come from :func:`video_metrics`; set-level metrics (FVD)
    are set with :meth:`set_metric`; videos that failed are recorded with
    :meth:`add_failure` so a batch job can go on. :meth:`summary` gives the
    structure :func:`~lightning_m3ddm.evaluation.results.write_results` writes.
    """

    def __init__(self) -> None:
        self._videos: dict[str, dict[str, list[dict]]] = {}
        self._set_metrics: dict[str, dict[str, dict[str, tuple[float | None, str | None]]]] = {}
        self._failures: dict[str, dict[str, list[dict]]] = {}

    def add_video(self, protocol: str, method: str, scores: VideoScores | Mapping[str, float | None], video_id: str | None = None) -> None:
        if not isinstance(scores, VideoScores):
            scores = VideoScores(dict(scores))
        entry = {"video": video_id, **scores.as_dict()}
        self._videos.setdefault(protocol, {}).setdefault(method, []).append(entry)

    def set_metric(self, protocol: str, method: str, name: str, value: float | None, reason: str | None = None) -> None:
        """A set-level metric such as ``"fvd"``; ``value=None`` needs a ``reason``."""
        if value is None and not reason:
            raise ValueError(f"set_metric({protocol!r}, {method!r}, {name!r}): a missing value needs a reason")
        self._set_metrics.setdefault(protocol, {}).setdefault(method, {})[name] = (None if value is None else float(value), reason)

    def add_failure(self, protocol: str, method: str, video_id: str, reason: str) -> None:
        self._failures.setdefault(protocol, {}).setdefault(method, []).append({"video": video_id, "reason": reason})

    def protocols(self) -> list[str]:
        return sorted(set(self._videos) | set(self._set_metrics) | set(self._failures))

    def summary(self) -> dict:
        """``{"protocols": {protocol: {"methods": {method: {...}}}}}``.

        Per method: ``num_videos``, ``metrics`` (means; ``None`` when no video
        had the value), ``counts`` (videos behind each mean), ``reasons`` (why a
        metric is ``None``), ``failures`` and the per-video ``videos``.
        """
        out: dict = {"protocols": {}}
        for protocol in self.protocols():
            methods = sorted(
                set(self._videos.get(protocol, {})) | set(self._set_metrics.get(protocol, {})) | set(self._failures.get(protocol, {}))
            )
            block: dict = {}
            for method in methods:
                videos = self._videos.get(protocol, {}).get(method, [])
                metrics: dict[str, float | None] = {}
                counts: dict[str, int] = {}
                reasons: dict[str, str] = {}
                keys = [metric_key(m, s) for s in SCOPES for m in METRICS]
                for key in keys:
                    present = [v["metrics"].get(key) for v in videos if v["metrics"].get(key) is not None]
                    counts[key] = len(present)
                    metrics[key] = float(np.mean(present)) if present else None
                    if not present:
                        found = next((v["reasons"][key] for v in videos if key in v.get("reasons", {})), None)
                        reasons[key] = found or ("no videos" if not videos else "not computed")
                for name, (value, reason) in self._set_metrics.get(protocol, {}).get(method, {}).items():
                    metrics[name] = value
                    if reason:
                        reasons[name] = reason
                block[method] = {
                    "num_videos": len(videos),
                    "metrics": metrics,
                    "counts": counts,
                    "reasons": reasons,
                    "failures": list(self._failures.get(protocol, {}).get(method, [])),
                    "videos": videos,
                }
            out["protocols"][protocol] = {"methods": block}
        return out

