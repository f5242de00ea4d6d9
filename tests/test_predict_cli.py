"""`python -m lightning_m3ddm predict` end to end with configs/predict_tiny.yaml (random weights, CPU)."""

import logging
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from lightning_m3ddm.cli import main
from lightning_m3ddm.video.samples import (
    write_sample_video,
    write_truncated_copy,
    write_zero_frame_video,
)

REPO = Path(__file__).resolve().parents[1]
CONFIG = str(REPO / "configs" / "predict_tiny.yaml")
CLIP = REPO / "tests" / "data" / "carphone_176x144_30fps_120f.mp4"


@pytest.fixture(autouse=True)
def _plain_argv_one_thread(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["lightning_m3ddm"])  # main(args=...) is the command line
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: spinning OpenMP workers only cost time on a shared CPU
    yield
    torch.set_num_threads(threads)


def predict(*args: str) -> int:
    """Run the CLI in-process; returns the exit status."""
    try:
        main(["predict", "--config", CONFIG, *args])
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else 1
    return 0


def read(path: Path):
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        rate, size = stream.average_rate, (stream.width, stream.height)
        audio = c.streams.audio[0].codec_context.name if c.streams.audio else None
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    return frames, rate, size, audio


def audio_samples(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(f.samples for f in c.decode(audio=0))


def test_sample_clip_to_9_16_and_1_1(tmp_path):
    out = tmp_path / "out"
    assert predict("--input", str(CLIP), "--target_ratio", "9:16,1:1", "--output_dir", str(out)) == 0
    assert sorted(p.name for p in out.glob("*.mp4")) == [
        "carphone_176x144_30fps_120f_1-1.mp4",
        "carphone_176x144_30fps_120f_9-16.mp4",
    ]
    source, source_rate, _, _ = read(CLIP)
    for name, size, top in (("9-16", (176, 312), 84), ("1-1", (176, 176), 16)):
        frames, rate, got_size, _ = read(out / f"carphone_176x144_30fps_120f_{name}.mp4")
        assert len(frames) == 120 and rate == source_rate == Fraction(30000, 1001) and got_size == size
        for i in (0, 60, 119):  # the source region is the source, up to the codec
            region = frames[i][top : top + 144].astype(int)
            assert np.abs(region - source[i].astype(int)).mean() < 4
        border = frames[60][: top - 8].astype(int)  # generated, not a copy of anything near
        assert border.std() > 5


def test_videos_with_audio_single_frame_and_bad_inputs(tmp_path, caplog):
    inputs = tmp_path / "in"
    inputs.mkdir()
    good = write_sample_video(inputs / "good.mp4", 20, fps=25, audio="aac")
    pcm = write_sample_video(inputs / "pcm.mov", 12, audio="pcm")
    one = write_sample_video(inputs / "one.mp4", 1)
    bad = {
        inputs / "missing.mp4": "no such file",
        inputs / "notes.mp4": "not a video",
        write_truncated_copy(good, inputs / "cut.mp4"): "truncated",
        write_zero_frame_video(inputs / "empty.avi"): "zero frames",
    }
    (inputs / "notes.mp4").write_text("not a video at all\n" * 30)
    out = tmp_path / "out"
    caplog.set_level(logging.INFO, logger="lightning_m3ddm")
    args = [str(p) for p in (good, *bad, pcm, one)]
    assert predict("--input", *args, "--target_ratio", "9:16", "--output_dir", str(out)) == 1

    assert sorted(p.name for p in out.glob("*.mp4")) == ["good_9-16.mp4", "one_9-16.mp4", "pcm_9-16.mp4"]
    frames, rate, size, audio = read(out / "good_9-16.mp4")
    assert len(frames) == 20 and rate == 25 and size == (64, 114) and audio == "aac"
    assert audio_samples(out / "good_9-16.mp4") == audio_samples(good)
    frames, _, _, audio = read(out / "pcm_9-16.mp4")
    assert len(frames) == 12 and audio == "aac" and audio_samples(out / "pcm_9-16.mp4") > 0
    assert len(read(out / "one_9-16.mp4")[0]) == 1  # an image outpaints too

    failures = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR and "FAILED" in r.getMessage()]
    assert len(failures) == len(bad)
    for path, words in bad.items():
        (line,) = [m for m in failures if str(path) in m]
        assert words in line and "\n" not in line


def test_copy_through_and_explicit_padding(tmp_path, caplog):
    src = write_sample_video(tmp_path / "clip.mp4", 10, 64, 48)  # 4:3
    out = tmp_path / "out"
    caplog.set_level(logging.WARNING, logger="lightning_m3ddm")
    assert predict("--input", str(src), "--target_ratio", "4:3", "--padding", "0,0,8,8", "--output_dir", str(out)) == 0
    assert (out / "clip_4-3.mp4").read_bytes() == src.read_bytes()
    assert any("already has 4:3" in r.getMessage() for r in caplog.records)
    frames, _, size, _ = read(out / "clip_pad-0-0-8-8.mp4")
    assert size == (64, 64) and len(frames) == 10


def test_bad_arguments_stop_before_any_work(tmp_path, capsys):
    src = write_sample_video(tmp_path / "clip.mp4", 4)
    assert predict("--input", str(src), "--target_ratio", "9x16", "--output_dir", str(tmp_path / "o")) == 2
    assert "'9x16'" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert predict("--input", str(src), "--target_ratio", "9:16", "--output_dir", str(blocker / "out")) == 2
    err = capsys.readouterr().err
    assert str(blocker / "out") in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_a_pattern_matching_nothing_fails_like_a_missing_file(tmp_path, caplog):
    pattern = str(tmp_path / "*.webm")
    assert predict("--input", pattern, "--target_ratio", "9:16", "--output_dir", str(tmp_path / "o")) == 1
    assert any(pattern in r.getMessage() and "no file matches" in r.getMessage() for r in caplog.records)
    assert list((tmp_path / "o").glob("*.mp4")) == []
