"""Source frames on the model canvas: the masked context, the inpainted start, the global frames.

Where things go comes from :func:`lightning_m3ddm.geometry.canvas_layout`; this module
draws frames there (numpy / OpenCV, uint8 RGB, no model):

* ``drawn``: the source resized into ``source_box`` on a black canvas (the released
  script's ``frame_draw``);
* ``masked``: ``drawn`` blacked out wherever the latent mask says "generate", i.e.
  outside the known box on the autoencoder's latent grid. Training masks are aligned
  to latent cells and masked pixels are black (-1) (data issue), so the context looks
  exactly like a training sample;
* ``inpainted``: ``drawn`` with everything outside ``source_box`` filled by OpenCV's
  Telea inpainting, radius 5: the start of sampling, encoded and noised to the first
  timestep (paper Appendix D, released ``use_add_noise``);
* ``whole_frame``: the full source squeezed to the canvas, the released script's
  global frames (``T.Resize((256, 256))``), kept as an option; by default global
  frames are ``masked`` canvases like the context (paper 3.2.2).

Sources are shrunk with area averaging (the script uses bilinear, which aliases when
a 1080p frame goes to 256 px) and enlarged bilinearly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from einops import rearrange

from lightning_m3ddm.geometry import Box, CanvasLayout


def known_latent_box(source_box: Box, downscale: int) -> Box:
    """``source_box`` shrunk inward to whole latent cells of ``downscale`` pixels.

    Equals :attr:`CanvasLayout.known_latent_box` for the SD VAE (8 px); works for any
    autoencoder downscale.
    """
    return Box(
        math.ceil(source_box.x0 / downscale),
        math.ceil(source_box.y0 / downscale),
        source_box.x1 // downscale,
        source_box.y1 // downscale,
    )


@dataclass(frozen=True)
class CanvasPainter:
    """Draws source frames onto the canvas of ``layout`` for an autoencoder of ``downscale``."""

    layout: CanvasLayout
    downscale: int
    inpaint_radius: int = 5

    def __post_init__(self) -> None:
        lw, lh = self.layout.canvas_width, self.layout.canvas_height
        if lw % self.downscale or lh % self.downscale:
            raise ValueError(
                f"canvas {lw}x{lh} is not a whole number of {self.downscale}-px latent cells"
            )
        box = self.known_latent
        if box.width <= 0 or box.height <= 0:
            raise ValueError(
                f"the source covers no whole {self.downscale}x{self.downscale} latent cell on the "
                f"{lw}x{lh} canvas: the target is too extreme for this canvas"
            )

    @property
    def canvas_size(self) -> tuple[int, int]:
        """(width, height)."""
        return self.layout.canvas_width, self.layout.canvas_height

    @property
    def latent_size(self) -> tuple[int, int]:
        """(width, height) of the latent grid."""
        return self.layout.canvas_width // self.downscale, self.layout.canvas_height // self.downscale

    @property
    def known_latent(self) -> Box:
        return known_latent_box(self.layout.source_box, self.downscale)

    @property
    def known_pixels(self) -> Box:
        """The known latent cells in canvas pixels (inside ``source_box``)."""
        k, d = self.known_latent, self.downscale
        return Box(k.x0 * d, k.y0 * d, k.x1 * d, k.y1 * d)

    def latent_mask(self) -> torch.Tensor:
        """(1, h, w) float: 1 = generate, 0 = known."""
        w, h = self.latent_size
        k = self.known_latent
        mask = torch.ones(1, h, w)
        mask[:, k.y0 : k.y1, k.x0 : k.x1] = 0
        return mask

    def resized_source(self, frame: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 source -> (source_box.height, source_box.width, 3)."""
        box = self.layout.source_box
        shrink = box.width < frame.shape[1] or box.height < frame.shape[0]
        return cv2.resize(
            frame, (box.width, box.height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
        )

    def drawn(self, frame: np.ndarray) -> np.ndarray:
        """Canvas (ch, cw, 3) uint8: the resized source in ``source_box``, black elsewhere."""
        cw, ch = self.canvas_size
        box = self.layout.source_box
        canvas = np.zeros((ch, cw, 3), np.uint8)
        canvas[box.y0 : box.y1, box.x0 : box.x1] = self.resized_source(frame)
        return canvas

    def masked(self, drawn: np.ndarray) -> np.ndarray:
        """``drawn`` kept only inside the known latent cells, black elsewhere."""
        k = self.known_pixels
        out = np.zeros_like(drawn)
        out[k.y0 : k.y1, k.x0 : k.x1] = drawn[k.y0 : k.y1, k.x0 : k.x1]
        return out

    def inpainted(self, drawn: np.ndarray) -> np.ndarray:
        """``drawn`` with the outside of ``source_box`` filled by Telea inpainting."""
        cw, ch = self.canvas_size
        box = self.layout.source_box
        hole = np.ones((ch, cw), np.uint8)
        hole[box.y0 : box.y1, box.x0 : box.x1] = 0
        return cv2.inpaint(drawn, hole, self.inpaint_radius, cv2.INPAINT_TELEA)

    def whole_frame(self, frame: np.ndarray) -> np.ndarray:
        """The whole source resized to the canvas, aspect ratio ignored (released global frames)."""
        cw, ch = self.canvas_size
        shrink = cw < frame.shape[1] or ch < frame.shape[0]
        return cv2.resize(frame, (cw, ch), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def to_model_range(frames: list[np.ndarray] | np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) RGB -> float (N, 3, H, W) in [-1, 1]."""
    array = torch.from_numpy(np.ascontiguousarray(np.stack(frames) if isinstance(frames, list) else frames))
    return rearrange(array, "n h w c -> n c h w").float() / 127.5 - 1.0


def to_uint8(frames: torch.Tensor) -> np.ndarray:
    """float (N, 3, H, W) in [-1, 1] -> uint8 (N, H, W, 3) RGB (rounded, clipped)."""
    scaled = ((frames.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return rearrange(scaled, "n c h w -> n h w c").cpu().numpy()
