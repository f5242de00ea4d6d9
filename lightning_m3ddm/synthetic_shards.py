"""Generated training data for the tiny CPU config and the demo: shards made on first use.

``SyntheticShardsDataModule`` is an :class:`M3DDMDataModule` whose shards are written by
``prepare_data`` when missing: textured scenes with camera pans and objects crossing the
border (``lightning_m3ddm.data.synthetic``), so outpainting is learnable. Nothing is
downloaded; a fresh clone trains as is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning_m3ddm.data.datamodule import M3DDMDataModule
from lightning_m3ddm.data.synthetic import SyntheticVideoSpec, write_synthetic_video


def ensure_synthetic_shards(
    root: str | Path,
    split: str,
    num_videos: int,
    *,
    width: int = 96,
    height: int = 96,
    num_frames: int = 48,
    fps: float = 24.0,
    seed: int = 0,
    shard_size: int = 8,
) -> str:
    """Write ``num_videos`` generated videos of one split into shards under ``root/split``
    unless a finished set is there; return the shards' glob pattern."""
    from data_prep.sharding import ShardOptions, VideoItem, write_shards

    out = Path(root) / split
    done = out / f"{split}-summary.json"
    if not done.exists():
        videos = out / "videos"
        items = []
        for i in range(num_videos):
            path = videos / f"{split}_{i:05d}.mp4"
            if not path.exists():
                spec = SyntheticVideoSpec(
                    width=width, height=height, num_frames=num_frames, fps=fps, seed=seed + i
                )
                write_synthetic_video(path.with_suffix(".tmp.mp4"), spec).rename(path)
            items.append(VideoItem(path=str(path), key=f"{split}_{i:05d}"))
        write_shards(items, ShardOptions(output=out, prefix=split, shard_size=shard_size, progress=False))
    return str(out / f"{split}-*.tar")


class SyntheticShardsDataModule(M3DDMDataModule):
    """M3DDMDataModule over generated shards in ``root`` (written on first use).

    Args:
        root: folder for the generated videos and shards.
        num_train_videos / num_val_videos: videos per split (val draws other seeds).
        video_width / video_height / video_frames / video_fps: generated video size.
        videos_per_shard: small shards, so that every rank and worker gets some.
        **kwargs: any M3DDMDataModule argument (batch_size, resolution, num_frames, ...).
    """

    def __init__(
        self,
        root: str = "data/synthetic",
        num_train_videos: int = 32,
        num_val_videos: int = 4,
        video_width: int = 96,
        video_height: int = 96,
        video_frames: int = 48,
        video_fps: float = 24.0,
        videos_per_shard: int = 2,
        **kwargs: Any,
    ):
        root_path = Path(root)
        super().__init__(
            train_shards=str(root_path / "train" / "train-*.tar"),
            val_shards=str(root_path / "val" / "val-*.tar") if num_val_videos else None,
            **kwargs,
        )
        self.synthetic = dict(
            root=root_path,
            num_train_videos=num_train_videos,
            num_val_videos=num_val_videos,
            shard_size=videos_per_shard,
            video=dict(width=video_width, height=video_height, num_frames=video_frames, fps=video_fps),
        )

    def prepare_data(self) -> None:
        s = self.synthetic
        for split, count, seed in (("train", s["num_train_videos"], 0), ("val", s["num_val_videos"], 1_000_000)):
            if count:
                ensure_synthetic_shards(s["root"], split, count, seed=seed, shard_size=s["shard_size"], **s["video"])
