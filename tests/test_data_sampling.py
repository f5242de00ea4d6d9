"""Clip and global-frame index selection (paper 3.2, 3.2.2)."""

import pytest

from lightning_m3ddm.data.sampling import (
    clip_indices,
    effective_fps,
    frame_interval,
    global_frame_indices,
    max_clip_start,
    plan_clip,
)


@pytest.mark.parametrize(
    "fps, rate, frames, expected",
    [
        (30, 30, 300, 1),
        (30, 10, 300, 3),
        (30, 7, 300, 4),  # round(4.29)
        (30, 1, 300, 19),  # 30 would not fit: (300 - 1) // 15
        (25, 30, 300, 1),  # never below 1
        (30, 1, 10, 1),  # shorter than the clip
    ],
)
def test_frame_interval(fps, rate, frames, expected):
    assert frame_interval(fps, rate, frames, 16) == expected


def test_frame_interval_rejects_bad_rates():
    with pytest.raises(ValueError, match="rate"):
        frame_interval(30, 0, 100, 16)
    with pytest.raises(ValueError, match="fps"):
        frame_interval(0, 5, 100, 16)


def test_effective_fps_is_floor_of_source_over_interval():
    assert effective_fps(30, 3) == 10
    assert effective_fps(29.97, 1) == 29  # as fps // stride at inference
    assert effective_fps(30, 4) == 7
    assert effective_fps(5, 19) == 1


def test_clip_indices_pad_and_loop():
    assert clip_indices(0, 2, 4, 100) == (0, 2, 4, 6)
    assert clip_indices(0, 1, 6, 4, "pad") == (0, 1, 2, 3, 3, 3)
    assert clip_indices(0, 1, 6, 4, "loop") == (0, 1, 2, 3, 0, 1)
    with pytest.raises(ValueError, match="short_video"):
        clip_indices(0, 1, 6, 4, "stretch")


def test_plan_clip_always_fits_and_covers_start_range():
    starts = set()
    for i in range(200):
        plan = plan_clip(120, 30.0, rate=1 + i % 30, start_fraction=(i * 0.137) % 1, clip_len=16)
        assert len(plan.indices) == 16 and plan.indices[-1] < 120
        assert all(b - a == plan.interval for a, b in zip(plan.indices, plan.indices[1:]))
        assert plan.fps == effective_fps(30.0, plan.interval)
        starts.add(plan.indices[0])
    assert 0 in starts and len(starts) > 50
    last = plan_clip(120, 30.0, rate=30, start_fraction=0.999999, clip_len=16)
    assert last.indices[-1] == 119 and last.indices[0] == max_clip_start(1, 16, 120)


def test_plan_clip_short_video_is_padded():
    plan = plan_clip(10, 24.0, rate=3, start_fraction=0.5, clip_len=16)
    assert plan.indices == tuple(range(10)) + (9,) * 6 and plan.fps == 24


def test_global_frames_span_the_whole_video():
    idx = global_frame_indices(300, 16)
    assert len(idx) == 16 and idx[0] == 0 and idx[-1] == 299
    assert all(b > a for a, b in zip(idx, idx[1:]))
    assert global_frame_indices(5, 16)[-1] == 4 and len(global_frame_indices(5, 16)) == 16
    assert global_frame_indices(7, 1) == (0,)
