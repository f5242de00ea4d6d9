"""benchmarks/tiling.py: its scores measure what they say, and --quick runs end to end."""

import json

import cv2
import numpy as np
import pytest
import torch

from benchmarks import tiling


@pytest.fixture()
def _restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def noise_video(seed=0, size=64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (1, 2, size, size, 3), dtype=np.uint8)


def test_seam_ratio_sees_a_step_on_a_window_border_and_nothing_elsewhere():
    video = cv2.GaussianBlur(noise_video()[0, 0], (0, 0), 3)[None, None].repeat(2, 1)
    mask = tiling.generated_mask(64)
    borders = ([(0, 8), (8, 16)], [(0, 64)])  # one inner vertical border, at x = 8
    smooth = tiling.seam_ratio(video, mask, borders, 4)
    stepped = video.copy()
    stepped[..., 8:, :] = np.clip(stepped[..., 8:, :].astype(int) + 40, 0, 255).astype(np.uint8)
    assert 0.5 < smooth < 1.5 and tiling.seam_ratio(stepped, mask, borders, 4) > 3 * smooth
    blocky = video.copy()  # every 4-px cell border an edge, as a per-cell decoder leaves it: no seam
    blocky[..., 4::8, :] = np.clip(blocky[..., 4::8, :].astype(int) + 40, 0, 255).astype(np.uint8)
    blocky[..., 0::8, :] = np.clip(blocky[..., 0::8, :].astype(int) + 40, 0, 255).astype(np.uint8)
    assert 0.5 < tiling.seam_ratio(blocky, mask, borders, 4) < 1.5


def test_sharpness_of_a_blurred_or_upscaled_border_is_below_one():
    truth = noise_video(1)
    blurred = np.stack([[cv2.GaussianBlur(f, (0, 0), 1.5) for f in clip] for clip in truth])
    small = np.stack([[cv2.resize(cv2.resize(f, (16, 16), interpolation=cv2.INTER_AREA), (64, 64), interpolation=cv2.INTER_CUBIC) for f in clip] for clip in truth])
    mask = tiling.generated_mask(64)
    same = tiling.high_frequency_energy(truth, mask) / tiling.high_frequency_energy(truth, mask)
    assert same == pytest.approx(1.0)
    for worse in (blurred, small):
        assert (tiling.high_frequency_energy(worse, mask) / tiling.high_frequency_energy(truth, mask) < 0.5).all()


def test_methods_cover_upscaled_and_tiled_with_and_without_coherence():
    names = [m.name for m in tiling.methods_for([128, 256])]
    assert names[0] == "model@64" and len(names) == 1 + 2 * 4
    assert {"upscaled@256", "tiled-resize@256", "tiled-crop@256", "tiled-resize+coherence@256"} <= set(names)
    assert "tiled-crop@256" not in [m.name for m in tiling.methods_for([128, 256], crop_sizes=[128])]
    assert tiling.Method(256, 4.0, coherence=True).tiling(0.5, 0.3).start_step(10) == 7


def test_quick_harness_end_to_end(tmp_path, _restore_threads):
    report = tiling.main(["--quick", "--out", str(tmp_path)])
    results = report["results"]
    assert set(results) == {"model@64", "upscaled@128", "tiled-resize@128", "tiled-crop@128", "tiled-resize+coherence@128"}
    for name, r in results.items():
        assert 0 < r["psnr_region"] < 60 and r["sharpness"] > 0 and 0 <= r["temporal_error"] < 1
        assert r["seconds_per_frame"] > 0 and r["unet_latent_sizes"] == [[16, 16]]  # the model's canvas
        assert ("seam_ratio" in r) == (name != "model@64")
    # 3 branches x (one window, or the 6 windows of the 128-px canvas that hold border: 3 x 3 minus the
    # middle column, inside the source), within max_batch 8
    assert results["upscaled@128"]["largest_unet_batch"] == 3 and results["tiled-resize@128"]["largest_unet_batch"] == 18
    assert json.loads((tmp_path / "results.json").read_text())["results"] == results
    table = (tmp_path / "results.md").read_text().splitlines()
    assert len(table) == 2 + len(results) and table[2].startswith("| model@64 |")
    picture = cv2.imread(report["pictures"][0])
    assert picture.shape == (128, 4 * 128 + 3 * 4, 3)
