"""PyAV probing/decoding, clip loading and the synthetic test-video generator."""

from pathlib import Path

import numpy as np
import pytest
import torch

from lightning_m3ddm.data.clips import ClipConfig, crop_plan, load_clip_example
from lightning_m3ddm.data.synthetic import SyntheticVideoSpec, render_frames, write_synthetic_video, write_truncated_copy
from lightning_m3ddm.video.decode import (
    VideoDecodeError,
    center_crop_plan,
    decode_frames,
    index_frames,
    iter_frames,
    probe_video,
)

CARPHONE = Path(__file__).parent / "data" / "carphone_176x144_30fps_120f.mp4"


@pytest.fixture(scope="module")
def small_gop_video(tmp_path_factory) -> Path:
    """60 frames with a keyframe every 8 frames, so seeking is exercised."""
    path = tmp_path_factory.mktemp("video_io") / "gop8.mp4"
    return write_synthetic_video(path, SyntheticVideoSpec(width=96, height=64, num_frames=60, fps=25, seed=3, gop=8))


def test_probe_real_clip():
    info = probe_video(CARPHONE)
    assert (info.width, info.height, info.num_frames) == (176, 144, 120)
    assert info.fps == pytest.approx(30000 / 1001)
    assert info.duration == pytest.approx(120 / info.fps)
    assert info.codec == "h264"


def test_decode_selected_frames_matches_full_decode(small_gop_video):
    full = np.stack(list(iter_frames(small_gop_video)))
    assert full.shape == (60, 64, 96, 3)
    index = index_frames(small_gop_video)
    assert len(index.keyframe_pts) > 5
    wanted = [41, 3, 3, 59, 16, 17, 0, 30]
    seek = decode_frames(small_gop_video, wanted, index=index, seek=True)
    sequential = decode_frames(small_gop_video, wanted, index=index, seek=False)
    assert np.array_equal(seek, full[wanted]) and np.array_equal(sequential, full[wanted])
    from_bytes = decode_frames(small_gop_video.read_bytes(), wanted)
    assert np.array_equal(from_bytes, full[wanted])


def test_decode_resizes_and_crops():
    plan = center_crop_plan(144, 176, 64, 64)
    assert (plan.scaled_height, plan.scaled_width) == (64, 78) and plan.left == 7
    frames = decode_frames(CARPHONE, [0, 119], plan=plan)
    assert frames.shape == (2, 64, 64, 3) and frames.dtype == np.uint8
    with pytest.raises(VideoDecodeError, match="out of range"):
        decode_frames(CARPHONE, [120])


def test_bad_files_are_classified(tmp_path):
    truncated = write_truncated_copy(CARPHONE, tmp_path / "truncated.mp4", keep_fraction=0.4)
    text = tmp_path / "text.mp4"
    text.write_text("not a video at all")
    with pytest.raises(VideoDecodeError) as corrupt:
        probe_video(truncated)
    assert corrupt.value.kind == "corrupt"
    with pytest.raises(VideoDecodeError) as not_video:
        probe_video(text)
    assert not_video.value.kind == "not_a_video"
    with pytest.raises(VideoDecodeError) as missing:
        probe_video(tmp_path / "nowhere.mp4")
    assert missing.value.kind == "missing"


def test_crop_plan_covers_output():
    plan = crop_plan(144, 176, 64, 32, top_fraction=1.0, left_fraction=0.0)
    assert plan.scaled_height >= 64 and plan.scaled_width >= 32
    assert plan.top + 64 <= plan.scaled_height and plan.left == 0


def test_load_clip_example_shapes_range_and_fps():
    config = ClipConfig(height=48, width=64, num_frames=16, num_global_frames=5)
    example = load_clip_example(CARPHONE.read_bytes(), torch.Generator().manual_seed(0), config)
    assert example.video.shape == (16, 3, 48, 64) and example.global_frames.shape == (5, 3, 48, 64)
    assert example.video.min() >= -1 and example.video.max() <= 1 and example.video.std() > 0.05
    assert 1 <= example.fps <= 29
    steps = {b - a for a, b in zip(example.indices, example.indices[1:])}
    assert len(steps) == 1 and example.fps == int(30000 / 1001 / steps.pop())
    again = load_clip_example(CARPHONE, torch.Generator().manual_seed(0), config)
    assert torch.equal(example.video, again.video) and example.indices == again.indices


def test_synthetic_video_is_deterministic_and_moves(tmp_path):
    spec = SyntheticVideoSpec(width=64, height=48, num_frames=24, seed=11, num_objects=4, pan_speed=3.0)
    frames = np.stack(list(render_frames(spec)))
    assert np.array_equal(frames, np.stack(list(render_frames(spec))))
    assert frames.shape == (24, 48, 64, 3) and frames.std() > 20  # textured, not flat
    motion = np.abs(frames[1:].astype(int) - frames[:-1].astype(int)).mean(axis=(1, 2, 3))
    assert (motion > 1).all()  # the camera pans every frame
    other = np.stack(list(render_frames(SyntheticVideoSpec(width=64, height=48, num_frames=24, seed=12))))
    assert not np.array_equal(frames, other)
    path = write_synthetic_video(tmp_path / "s.mp4", spec)
    info = probe_video(path)
    assert (info.width, info.height, info.num_frames, info.fps) == (64, 48, 24, 24.0)


def test_synthetic_objects_cross_the_border():
    def render(num_objects):
        spec = SyntheticVideoSpec(width=64, height=48, num_frames=40, seed=2, num_objects=num_objects, pan_speed=1.0)
        return np.stack(list(render_frames(spec))).astype(int)

    # Same seed: the background is identical, the difference is the objects.
    objects = np.abs(render(3) - render(0)).sum(-1) > 30  # (F, H, W)
    border = np.zeros((48, 64), bool)
    border[:2], border[-2:], border[:, :2], border[:, -2:] = True, True, True, True
    touches_border = objects[:, border].any(axis=1)
    assert touches_border.any()  # an object is cut by the frame edge at some time
    area = objects.sum(axis=(1, 2))
    assert area.max() > 0 and len(set(area.tolist())) > 5  # objects enter, move and leave


def test_inputs_sharing_a_name_are_numbered_alike_in_predict_and_evaluate():
    from lightning_m3ddm.video.names import unique_name

    seen: dict[str, int] = {}
    assert [unique_name(n, seen) for n in ("clip", "clip", "ad", "clip")] == ["clip", "clip-2", "ad", "clip-3"]
