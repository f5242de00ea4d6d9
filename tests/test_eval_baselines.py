"""Outpainting baselines: known pixels kept, the whole mask filled, edge replication exact."""

import numpy as np
import pytest
import torch

from lightning_m3ddm.evaluation.baselines import (
    BaselineConfig,
    edge_replicate_frame,
    iter_outpaint,
    make_baseline,
    outpaint_video,
    telea_frame,
)
from lightning_m3ddm.evaluation.protocols import mask_for

SENTINEL = 0  # value left in masked pixels before filling; known pixels never hold it


def _frame(height=40, width=48, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(60, 200, size=(height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize("method", ["telea", "edge_replicate"])
@pytest.mark.parametrize("protocol", ["davis_h025", "davis_h0666", "ssv2_opc", "ssv2_oph"])
def test_known_pixels_kept_and_mask_filled(method, protocol):
    frame = _frame()
    mask = mask_for(protocol, *frame.shape[:2])
    damaged = frame.copy()
    damaged[mask] = SENTINEL
    out = make_baseline(method)(damaged, mask)
    assert out.shape == frame.shape and out.dtype == np.uint8
    assert np.array_equal(out[~mask], frame[~mask])
    # Every generated pixel got a value from the known content (far from the sentinel).
    assert out[mask].min() >= 30


def test_edge_replication_equals_edge_padding_of_the_known_box():
    frame = _frame(32, 40)
    mask = mask_for("ssv2_opc", 32, 40)
    rows, cols = np.flatnonzero((~mask).any(1)), np.flatnonzero((~mask).any(0))
    crop = frame[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    expected = np.pad(crop, ((rows[0], 31 - rows[-1]), (cols[0], 39 - cols[-1]), (0, 0)), mode="edge")
    assert np.array_equal(edge_replicate_frame(frame, mask), expected)


def test_edge_replication_uses_a_nearest_known_pixel_for_any_shape():
    height, width = 24, 28
    yy, xx = np.mgrid[:height, :width]
    # Each pixel's colour encodes its own coordinates, so the source of a copy is readable.
    frame = np.stack([yy, xx, np.full_like(yy, 100)], axis=-1).astype(np.uint8)
    known = (yy - 12) ** 2 + (xx - 14) ** 2 <= 36  # a disc: not a rectangle
    mask = ~known
    out = edge_replicate_frame(frame, mask)
    assert np.array_equal(out[known], frame[known])
    ky, kx = np.nonzero(known)
    for y, x in zip(*np.nonzero(mask)):
        sy, sx = int(out[y, x, 0]), int(out[y, x, 1])
        assert known[sy, sx]
        nearest = np.sqrt(((ky - y) ** 2 + (kx - x) ** 2).min())
        # OpenCV's 5x5 L2 distance transform is approximate: allow a small slack.
        assert np.hypot(sy - y, sx - x) <= nearest * 1.05 + 1.0


def test_telea_radius_is_configurable():
    frame = _frame()
    mask = mask_for("davis_h0666", *frame.shape[:2])
    small = make_baseline("telea", BaselineConfig(telea_radius=1))(frame, mask)
    large = telea_frame(frame, mask, radius=9)
    assert not np.array_equal(small, large)


def test_streaming_with_per_frame_masks():
    frames = [_frame(seed=s) for s in range(3)]
    masks = [mask_for(p, 40, 48) for p in ("davis_h025", "ssv2_opc", "ssv2_oph")]
    stream = iter_outpaint(iter(frames), masks, "edge_replicate")
    outputs = list(stream)
    assert len(outputs) == 3
    for frame, mask, out in zip(frames, masks, outputs):
        assert np.array_equal(out[~mask], frame[~mask])


def test_outpaint_video_tensor_convenience():
    gen = torch.Generator().manual_seed(0)
    video = torch.rand(4, 3, 40, 48, generator=gen) * 1.6 - 0.8
    mask = torch.from_numpy(mask_for("davis_h0666", 40, 48))
    masked_video = torch.where(mask, torch.full_like(video, -1.0), video)  # masked pixels hold -1
    for method in ("telea", "edge_replicate"):
        out = outpaint_video(masked_video, mask[None, None].expand(4, 1, 40, 48), method)
        assert out.shape == video.shape and out.dtype == video.dtype
        keep = ~mask.expand(4, 3, 40, 48)
        assert torch.equal(out[keep], video[keep])  # exact, no uint8 round trip
        filled = out[~keep]
        assert filled.min() >= -0.85 and filled.max() <= 0.85


def test_bad_inputs_have_clear_messages():
    frame = _frame()
    with pytest.raises(ValueError, match="whole frame"):
        edge_replicate_frame(frame, np.ones(frame.shape[:2], bool))
    with pytest.raises(ValueError, match="uint8"):
        telea_frame(frame.astype(np.float32), np.zeros(frame.shape[:2], bool))
    with pytest.raises(ValueError, match="does not match"):
        telea_frame(frame, np.zeros((4, 4), bool))
    with pytest.raises(KeyError, match="known"):
        make_baseline("lama")
