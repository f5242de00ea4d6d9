"""Per-frame latents of one video on disk, so that memory does not grow with its length.

A long ad at 30 fps has thousands of frames; their context latents, inpainted start
latents and generated latents would not fit in RAM (or GPU memory) together, and
the coarse-to-fine plan (paper 3.3) reads guides from anywhere in the video. Each
kind lives in one file of fixed-size records (frame ``i`` at ``i * record_bytes``),
read and written with ``pread``/``pwrite``.

Why not ``numpy.memmap``: pages of a mapped file that were touched count towards
the process's resident memory until the kernel needs them back, so a memmap of a
long video looks (and, under cgroup limits, is accounted) like a video held in
RAM. Plain file I/O goes through the page cache, which is not the process's.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from lightning_m3ddm.predict.leftovers import owner_tag


class LatentStore:
    """``num_frames`` records of shape ``shape`` (e.g. (C, h, w)) in one file.

    Records not yet written read as an error, so a plan that uses a guide before it
    was generated fails loudly instead of feeding zeros.
    """

    def __init__(self, path: str | os.PathLike, num_frames: int, shape: Sequence[int], dtype=np.float32):
        self.path = Path(path)
        self.num_frames = num_frames
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.record_bytes = int(np.prod(self.shape)) * self.dtype.itemsize
        self.written = np.zeros(num_frames, dtype=bool)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        os.ftruncate(self._fd, num_frames * self.record_bytes)

    def write(self, frames: Sequence[int], values: np.ndarray | torch.Tensor) -> None:
        """Store ``values[k]`` (shape ``self.shape``) as the record of ``frames[k]``."""
        if isinstance(values, torch.Tensor):
            values = values.detach().to("cpu", torch.float32).numpy()
        values = np.ascontiguousarray(values, dtype=self.dtype)
        if values.shape != (len(frames), *self.shape):
            raise ValueError(f"expected {(len(frames), *self.shape)}, got {values.shape}")
        for start, stop, offset in _runs(frames):
            chunk = values[offset : offset + stop - start]
            os.pwrite(self._fd, memoryview(chunk).cast("B"), start * self.record_bytes)
            self.written[start:stop] = True

    def read(self, frames: Sequence[int]) -> np.ndarray:
        """(len(frames), *shape) array of the records of ``frames`` (any order, repeats allowed)."""
        missing = [f for f in frames if not self.written[f]]
        if missing:
            raise RuntimeError(f"{self.path.name}: frames {missing[:8]} read before they were written")
        out = np.empty((len(frames), *self.shape), dtype=self.dtype)
        for start, stop, offset in _runs(frames):
            view = memoryview(out[offset : offset + stop - start]).cast("B")
            got = os.preadv(self._fd, [view], start * self.record_bytes)
            if got != len(view):
                raise OSError(f"{self.path}: short read ({got} of {len(view)} bytes)")
        return out

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _runs(frames: Sequence[int]):
    """Split frame indices into runs of consecutive indices: (start, stop, offset in ``frames``)."""
    k = 0
    n = len(frames)
    while k < n:
        start = frames[k]
        j = k + 1
        while j < n and frames[j] == frames[j - 1] + 1:
            j += 1
        yield int(start), int(frames[j - 1]) + 1, k
        k = j


class VideoLatents:
    """The three per-frame stores of one video in a private temporary folder.

    * ``context``: masked-video latents (what the model is told is known);
    * ``start``: latents of the border-inpainted frames (sampling starts from them);
    * ``generated``: the outpainted latents, written once per frame by the plan.
    """

    def __init__(self, num_frames: int, shape: Sequence[int], work_dir: str | os.PathLike | None = None,
                 with_start: bool = True):
        # the owner's pid in the name: a later run removes the folder if this process is killed
        self.folder = Path(tempfile.mkdtemp(prefix=f"m3ddm-predict-{owner_tag()}-", dir=work_dir))
        try:
            self.context = LatentStore(self.folder / "context.f32", num_frames, shape)
            self.start = LatentStore(self.folder / "start.f32", num_frames, shape) if with_start else None
            self.generated = LatentStore(self.folder / "generated.f32", num_frames, shape)
        except BaseException:
            shutil.rmtree(self.folder, ignore_errors=True)
            raise

    def close(self) -> None:
        """Close and delete the files (idempotent)."""
        for store in (self.context, self.start, self.generated):
            if store is not None:
                store.close()
        shutil.rmtree(self.folder, ignore_errors=True)
