"""Inputs of predict: paths, globs, folders, list files, per-video targets, unique stems, split over ranks."""

import pytest
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSamplerWrapper

from lightning_m3ddm.geometry import AspectRatio, Padding
from lightning_m3ddm.predict.datamodule import VideoPredictDataModule, parse_targets, resolve_jobs
from lightning_m3ddm.predict.errors import PredictConfigError


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_paths_globs_folders_and_list_files(tmp_path):
    a = touch(tmp_path / "a" / "clip.mp4")
    b = touch(tmp_path / "b" / "clip.mov")
    c = touch(tmp_path / "c" / "ad.mkv")
    touch(tmp_path / "c" / "readme.md")
    listing = tmp_path / "videos.txt"
    listing.write_text("# ads for the feed\n\nc/ad.mkv\t1:1,4:5\nmissing.mp4\nc/ad.mkv\t9x16\n")
    jobs = resolve_jobs([str(a), str(tmp_path / "b" / "*.mov"), str(tmp_path / "c"), str(listing)], "9:16")
    assert [j.path for j in jobs] == [str(a), str(b), str(c), str(c), str(tmp_path / "missing.mp4"), str(c)]
    assert [j.stem for j in jobs] == ["clip", "clip-2", "ad", "ad-2", "missing", "ad-3"]  # no output overwrites another
    assert jobs[0].targets == (AspectRatio(9, 16),)
    assert jobs[3].targets == (AspectRatio(1, 1), AspectRatio(4, 5))  # the list file's own targets
    assert "no such file" in jobs[4].error  # known before any decoding; the other videos go on
    assert jobs[5].error is not None and str(c) in jobs[5].error and "'9x16'" in jobs[5].error


def test_list_file_padding_and_patterns_that_match_nothing(tmp_path):
    video = touch(tmp_path / "v.mp4")
    listing = tmp_path / "l.lst"
    listing.write_text(f"{video}\t0,0,8,8\n")
    (job,) = resolve_jobs([str(listing)], None)
    assert job.targets == (Padding(0, 0, 8, 8),)
    (job,) = resolve_jobs([str(tmp_path / "*.webm")], "1:1")
    assert "no file matches" in job.error


def test_run_wide_targets():
    assert parse_targets("9:16, 1:1", "0,0,10,10") == (AspectRatio(9, 16), AspectRatio(1, 1), Padding(0, 0, 10, 10))
    with pytest.raises(PredictConfigError, match="'9x16'"):
        parse_targets("9x16", None)
    with pytest.raises(PredictConfigError, match="padding"):
        parse_targets(None, "1,2,3")
    with pytest.raises(PredictConfigError, match="--target_ratio"):
        resolve_jobs(["x.mp4"], None, None)
    with pytest.raises(PredictConfigError, match="'9x16'"):
        VideoPredictDataModule(["x.mp4"], "9x16")


def test_loader_gives_lists_of_jobs_and_ranks_share_the_videos(tmp_path):
    paths = [str(touch(tmp_path / f"v{i}.mp4")) for i in range(5)]
    dm = VideoPredictDataModule(paths, "9:16", batch_size=2)
    dm.setup("predict")
    loader = dm.predict_dataloader()
    batches = list(loader)
    assert [len(b) for b in batches] == [2, 2, 1] and batches[0][1].path == paths[1]
    assert dm.transfer_batch_to_device(batches[0], "cpu", 0) is batches[0]
    shares = [
        list(UnrepeatedDistributedSamplerWrapper(loader.sampler, num_replicas=2, rank=r, shuffle=False))
        for r in range(2)
    ]
    assert sorted(shares[0] + shares[1]) == list(range(5)) and not set(shares[0]) & set(shares[1])
