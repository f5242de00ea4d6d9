"""Reference outpainting methods that need no model, for the rows beside M3DDM in every table.

* ``telea``: per-frame OpenCV inpainting (``cv2.inpaint`` with
  ``INPAINT_TELEA``, radius 5 px by default), the same tool the paper uses to
  pre-fill the region before adding noise (appendix D).
* ``edge_replicate``: every generated pixel takes the value of the nearest known
  pixel. When the known pixels form a rectangle this is exactly
  ``cv2.copyMakeBorder(known_crop, ..., BORDER_REPLICATE)`` (each border pixel
  copies the closest edge pixel, corners copy the corner pixel); otherwise the
  nearest known pixel by OpenCV's distance transform (L2, 5 x 5 mask).

Both work frame by frame on uint8 ``(H, W, 3)`` frames with a bool ``(H, W)``
mask (True = generate), so a video can be streamed (:func:`iter_outpaint`).
Known pixels are returned unchanged. :func:`outpaint_video` wraps them for
``(F, 3, H, W)`` tensors in [-1, 1] (the data convention of this project).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from einops import rearrange

FrameMethod = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _check_frame(frame: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        shape = getattr(frame, "shape", None)
        dtype = getattr(frame, "dtype", type(frame).__name__)
        raise ValueError(f"frame must be a uint8 array (H, W, 3), got {dtype} {shape}")
    mask = np.asarray(mask)
    if mask.shape != frame.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} does not match frame {frame.shape[:2]}")
    mask = mask.astype(bool, copy=False)
    if mask.all():
        raise ValueError("mask covers the whole frame: no known pixel to outpaint from")
    return np.ascontiguousarray(frame), mask


def known_rectangle(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Half-open ``(y0, y1, x0, x1)`` of the known pixels if they form one rectangle, else ``None``."""
    known = ~np.asarray(mask, dtype=bool)
    if not known.any():
        return None
    rows, cols = np.flatnonzero(known.any(axis=1)), np.flatnonzero(known.any(axis=0))
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    return (y0, y1, x0, x1) if known[y0:y1, x0:x1].all() else None


def telea_frame(frame: np.ndarray, mask: np.ndarray, radius: float = 5.0) -> np.ndarray:
    """OpenCV Telea inpainting of the masked pixels of one frame.

    Args:
        frame: uint8 (H, W, 3).
        mask: bool (H, W), True = generate.
        radius: neighbourhood radius in pixels (``inpaintRadius``).

    Returns:
        uint8 (H, W, 3); known pixels unchanged.
    """
    frame, mask = _check_frame(frame, mask)
    if not mask.any():
        return frame.copy()
    filled = cv2.inpaint(frame, mask.astype(np.uint8), float(radius), cv2.INPAINT_TELEA)
    # cv2.inpaint leaves known pixels alone; enforce it so the contract never depends on OpenCV internals.
    return np.where(mask[..., None], filled, frame)


def edge_replicate_frame(frame: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Fill masked pixels with the nearest known pixel (see module docstring).

    Args:
        frame: uint8 (H, W, 3).
        mask: bool (H, W), True = generate.

    Returns:
        uint8 (H, W, 3); known pixels unchanged.
    """
    frame, mask = _check_frame(frame, mask)
    if not mask.any():
        return frame.copy()
    height, width = mask.shape
    box = known_rectangle(mask)
    if box is not None:
        y0, y1, x0, x1 = box
        return cv2.copyMakeBorder(frame[y0:y1, x0:x1], y0, height - y1, x0, width - x1, cv2.BORDER_REPLICATE)
    # Labels of the nearest zero (known) pixel for every pixel; each known pixel has its own label.
    _, labels = cv2.distanceTransformWithLabels(mask.astype(np.uint8), cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL)
    known = ~mask
    lookup = np.zeros((int(labels.max()) + 1, 3), dtype=np.uint8)
    lookup[labels[known]] = frame[known]
    return np.where(mask[..., None], lookup[labels], frame)


@dataclass(frozen=True)
class BaselineConfig:
    """Baseline settings. ``telea_radius``: OpenCV inpainting radius in pixels."""

    telea_radius: float = 5.0


BASELINES: tuple[str, ...] = ("telea", "edge_replicate")


def make_baseline(name: str, config: BaselineConfig = BaselineConfig()) -> FrameMethod:
    """Frame method ``(frame uint8 (H, W, 3), mask bool (H, W)) -> frame`` by name."""
    if name == "telea":
        return lambda frame, mask: telea_frame(frame, mask, config.telea_radius)
    if name == "edge_replicate":
        return edge_replicate_frame
    raise KeyError(f"unknown baseline {name!r}; known: {list(BASELINES)}")


def iter_outpaint(frames: Iterable[np.ndarray], mask: np.ndarray | Iterable[np.ndarray], method: FrameMethod | str) -> Iterator[np.ndarray]:
    """Outpaint a stream of uint8 (H, W, 3) frames, one at a time.

    Args:
        frames: any iterable of frames (e.g. a decoder).
        mask: one bool (H, W) mask for every frame, or an iterable of masks, one per frame.
        method: a frame method or a baseline name.
    """
    method = make_baseline(method) if isinstance(method, str) else method
    if isinstance(mask, np.ndarray) and mask.ndim == 2:
        for frame in frames:
            yield method(frame, mask)
    else:
        for frame, frame_mask in zip(frames, mask, strict=True):
            yield method(frame, frame_mask)


def _to_uint8(video: torch.Tensor) -> np.ndarray:
    """(F, 3, H, W) in [-1, 1] -> uint8 (F, H, W, 3)."""
    frames = ((video.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return rearrange(frames, "f c h w -> f h w c").numpy()


def outpaint_video(video: torch.Tensor, mask: torch.Tensor | np.ndarray, method: FrameMethod | str, config: BaselineConfig = BaselineConfig()) -> torch.Tensor:
    """Apply a frame method to a video tensor.

    Args:
        video: (F, 3, H, W) in [-1, 1]; values under the mask are ignored
            (they may hold the masked-video fill, -1).
        mask: (H, W), (F, H, W) or (F, 1, H, W), 1 = generate.
        method: a frame method or a baseline name.

    Returns:
        (F, 3, H, W) in [-1, 1], same dtype and device as ``video``; known
        pixels are the input's exactly (no uint8 round trip), generated
        pixels come from the uint8 result.
    """
    if video.ndim != 4 or video.shape[1] != 3:
        raise ValueError(f"outpaint_video: expected video (F, 3, H, W), got {tuple(video.shape)}")
    frames, _, height, width = video.shape
    mask_t = torch.as_tensor(mask).detach().cpu()
    if mask_t.ndim == 4:
        mask_t = mask_t[:, 0]
    if mask_t.ndim == 2:
        mask_t = mask_t[None].expand(frames, height, width)
    if tuple(mask_t.shape) != (frames, height, width):
        raise ValueError(f"outpaint_video: mask shape {tuple(torch.as_tensor(mask).shape)} does not fit video {tuple(video.shape)}")
    mask_np = (mask_t > 0.5).numpy() if mask_t.dtype != torch.bool else mask_t.numpy()
    method = make_baseline(method, config) if isinstance(method, str) else method
    filled = np.stack(list(iter_outpaint(_to_uint8(video), mask_np, method)))
    result = torch.from_numpy(rearrange(filled, "f h w c -> f c h w").copy()).to(device=video.device, dtype=video.dtype) / 127.5 - 1
    keep = rearrange(torch.from_numpy(mask_np), "f h w -> f 1 h w").to(video.device)
    return torch.where(keep, result, video)
