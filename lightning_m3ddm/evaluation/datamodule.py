"""EvaluationDataModule: the test videos of an ``evaluate`` run, one batch item per video.

Items are :class:`~lightning_m3ddm.evaluation.inputs.EvalVideo` records (paths, no
pixels): each protocol needs its own frame size, so the evaluation module decodes a
video at the geometries its protocols ask for, one video at a time (memory bounded by
one video at evaluation size).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import lightning as L
from torch.utils.data import DataLoader

from .inputs import DAVIS_FPS, EvalVideo, read_names_file, resolve_videos


@dataclass(frozen=True)
class SyntheticInputs:
    """Generated test videos written on first use (tiny runs and tests need no data set).

    ``num_videos`` mp4 files and ``num_frame_folders`` folders of JPEG frames (the DAVIS
    layout) under ``root``, from :mod:`lightning_m3ddm.data.synthetic` (textured scenes,
    camera pans, objects crossing the border), video ``i`` drawn from ``seed + i``.
    """

    root: str
    num_videos: int = 2
    num_frame_folders: int = 1
    width: int = 96
    height: int = 64
    num_frames: int = 24
    fps: float = 24.0
    seed: int = 0


def ensure_synthetic_inputs(spec: SyntheticInputs) -> list[str]:
    """Write the generated videos of ``spec`` unless present; return their paths (files, then folders)."""
    import cv2

    from lightning_m3ddm.data.synthetic import SyntheticVideoSpec, render_frames, write_synthetic_video

    root = Path(spec.root)
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(spec.num_videos + spec.num_frame_folders):
        video = SyntheticVideoSpec(width=spec.width, height=spec.height, num_frames=spec.num_frames, fps=spec.fps, seed=spec.seed + i)
        if i < spec.num_videos:
            path = root / f"synthetic_{i:03d}.mp4"
            if not path.exists():
                write_synthetic_video(path.with_name(f".{path.name}.tmp.mp4"), video).rename(path)
        else:
            path = root / f"synthetic_frames_{i - spec.num_videos:03d}"
            if not path.is_dir():
                partial = path.with_name(f".{path.name}.partial.{os.getpid()}")
                partial.mkdir(parents=True, exist_ok=True)
                try:
                    for index, frame in enumerate(render_frames(video)):
                        cv2.imwrite(str(partial / f"{index:05d}.jpg"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
                    partial.rename(path)
                finally:
                    shutil.rmtree(partial, ignore_errors=True)
        paths.append(str(path))
    return paths


class EvaluationDataModule(L.LightningDataModule):
    """Test videos for ``evaluate`` (see :mod:`lightning_m3ddm.evaluation.inputs` for the inputs).

    Args:
        inputs: video files, frame folders (DAVIS / YouTube-VOS sequences), folders of
            those, globs or list files.
        names_file: keep only the videos named in this file (e.g. DAVIS
            ``ImageSets/2017/val.txt``).
        frames_fps: frame rate of frame folders (DAVIS: 24; YouTube-VOS valid
            ``JPEGImages``: 6, every 5th frame of 30 fps videos).
        max_frames: evaluate only the first frames of each video (quick runs).
        max_videos: evaluate only the first videos (quick runs).
        synthetic: generated test videos, written on first use and evaluated before
            ``inputs`` (tiny runs, tests).
    """

    def __init__(
        self,
        inputs: str | list[str] | None = None,
        names_file: str | None = None,
        frames_fps: float = DAVIS_FPS,
        max_frames: int | None = None,
        max_videos: int | None = None,
        synthetic: SyntheticInputs | None = None,
    ):
        super().__init__()
        if not (isinstance(frames_fps, (int, float)) and frames_fps > 0):
            raise ValueError(f"frames_fps must be > 0, got {frames_fps!r}")
        if max_videos is not None and (isinstance(max_videos, bool) or not isinstance(max_videos, int) or max_videos < 1):
            raise ValueError(f"max_videos must be None or an integer >= 1, got {max_videos!r}")
        self.inputs = inputs
        self.names_file = names_file
        self.frames_fps = frames_fps
        self.max_frames = max_frames
        self.max_videos = max_videos
        self.synthetic = synthetic
        self.videos: list[EvalVideo] | None = None

    def resolve(self) -> list[EvalVideo]:
        """The test videos (bad inputs included, with their error)."""
        inputs = [self.inputs] if isinstance(self.inputs, (str, os.PathLike)) else list(self.inputs or [])
        if self.synthetic is not None:
            inputs = ensure_synthetic_inputs(self.synthetic) + inputs
        if not inputs:
            raise ValueError("no test video given: data.init_args.inputs (video files, frame folders, folders, globs or list files)")
        names = read_names_file(self.names_file) if self.names_file else None
        videos = resolve_videos(inputs, names, self.frames_fps, self.max_frames)
        return videos[: self.max_videos] if self.max_videos else videos

    def setup(self, stage: str) -> None:
        if self.videos is None:
            self.videos = self.resolve()

    def transfer_batch_to_device(self, batch: list[EvalVideo], device, dataloader_idx: int) -> list[EvalVideo]:
        return batch  # paths only: frames are decoded by the evaluation module

    def val_dataloader(self) -> DataLoader:
        self.setup("validate")
        return DataLoader(self.videos, batch_size=1, shuffle=False, collate_fn=list)  # lists of paths, not tensors
