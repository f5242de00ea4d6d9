"""Metrics against independent computations (NumPy / SciPy / scikit-image), FVD plumbing, results files."""

import json
import math

import numpy as np
import pytest
import scipy.linalg
import torch
from skimage.metrics import structural_similarity

from lightning_m3ddm.evaluation.fvd import (
    FeatureStats,
    FVDAccumulator,
    I3DFeatureExtractor,
    frechet_distance,
    load_i3d,
    uniform_frame_indices,
)
from lightning_m3ddm.evaluation.metrics import (
    LPIPSScorer,
    MetricAccumulator,
    MetricConfig,
    load_lpips_network,
    region_boxes,
    ssim_map,
    video_metrics,
)
from lightning_m3ddm.evaluation.protocols import mask_for, masked_fraction
from lightning_m3ddm.evaluation.results import write_results


# The I3D port is TorchScript, which torch now marks as deprecated.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")


def _video(frames=3, height=40, width=48, seed=0, low=0.0, high=1.0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return low + (high - low) * torch.rand(frames, 3, height, width, generator=gen)


# --------------------------------------------------------------------------- MSE / PSNR


def test_psnr_of_a_known_mse_whole_frame_and_region():
    target = _video(low=0.2, high=0.8)
    mask = torch.from_numpy(mask_for("davis_h0666", 40, 48))
    delta = 0.05
    pred = target + delta * mask  # error only in the generated region
    scores = video_metrics(pred, target, mask[None, None].expand(3, 1, 40, 48)).values
    fraction = masked_fraction(mask.numpy())
    assert scores["region_mse"] == pytest.approx(delta**2, rel=1e-5)
    assert scores["mse"] == pytest.approx(delta**2 * fraction, rel=1e-5)
    assert scores["region_psnr"] == pytest.approx(10 * math.log10(1 / delta**2), rel=1e-6)
    assert scores["psnr"] == pytest.approx(10 * math.log10(1 / (delta**2 * fraction)), rel=1e-6)


def test_mse_and_psnr_are_means_of_per_frame_values():
    pred, target = _video(seed=1), _video(seed=2)
    p, t = pred.double().numpy(), target.double().numpy()
    per_frame = ((p - t) ** 2).reshape(3, -1).mean(1)
    scores = video_metrics(pred, target).values
    assert scores["mse"] == pytest.approx(per_frame.mean(), rel=1e-9)
    assert scores["psnr"] == pytest.approx(np.mean(10 * np.log10(1 / per_frame)), rel=1e-9)
    assert scores["region_mse"] is None  # no mask given


def test_identical_videos_psnr_capped_ssim_one():
    video = _video()
    scores = video_metrics(video, video, torch.from_numpy(mask_for("ssv2_opc", 40, 48))).values
    assert scores["mse"] == 0 and scores["region_mse"] == 0
    assert scores["psnr"] == MetricConfig().psnr_max_db == scores["region_psnr"]
    assert scores["ssim"] == pytest.approx(1.0, abs=1e-12)
    assert scores["region_ssim"] == pytest.approx(1.0, abs=1e-12)


# --------------------------------------------------------------------------- SSIM vs scikit-image


def _skimage_map(pred: torch.Tensor, target: torch.Tensor) -> np.ndarray:
    """scikit-image SSIM maps (F, H, W, 3), Gaussian window as Wang et al. / torchmetrics."""
    maps = []
    for p, t in zip(pred.double().numpy(), target.double().numpy()):
        _, full = structural_similarity(
            np.moveaxis(p, 0, -1), np.moveaxis(t, 0, -1), channel_axis=-1, data_range=1.0,
            gaussian_weights=True, sigma=1.5, use_sample_covariance=False, full=True,
        )
        maps.append(full)
    return np.stack(maps)


def test_ssim_map_matches_scikit_image_away_from_the_border():
    target = _video(seed=3)
    pred = (target + 0.15 * torch.randn(target.shape, generator=torch.Generator().manual_seed(4))).clamp(0, 1)
    ours = np.moveaxis(ssim_map(pred, target).numpy(), 1, -1)
    theirs = _skimage_map(pred, target)
    pad = 5  # (11 - 1) // 2: only the border depends on the padding rule
    np.testing.assert_allclose(ours[:, pad:-pad, pad:-pad], theirs[:, pad:-pad, pad:-pad], atol=1e-6)
    # scikit-image's mean SSIM is the mean of the interior.
    for frame in range(3):
        mssim = structural_similarity(
            np.moveaxis(pred[frame].double().numpy(), 0, -1), np.moveaxis(target[frame].double().numpy(), 0, -1),
            channel_axis=-1, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
        )
        assert ours[frame, pad:-pad, pad:-pad].mean() == pytest.approx(mssim, abs=1e-6)


def test_region_ssim_is_the_map_mean_over_the_region():
    target = _video(seed=5)
    pred = (target + 0.2 * torch.randn(target.shape, generator=torch.Generator().manual_seed(6))).clamp(0, 1)
    region = np.zeros((40, 48), bool)
    region[12:30, 10:37] = True  # interior: scikit-image's map is valid there
    scores = video_metrics(pred, target, torch.from_numpy(region)).values
    expected = _skimage_map(pred, target)[:, region, :].mean(axis=(1, 2)).mean()
    assert scores["region_ssim"] == pytest.approx(expected, abs=1e-6)


# --------------------------------------------------------------------------- LPIPS


def _l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (pred - target).abs().mean(dim=(1, 2, 3))


def test_region_lpips_plumbing_with_a_stand_in_distance():
    target = _video(frames=2, height=64, width=64, seed=7)
    pred = _video(frames=2, height=64, width=64, seed=8)
    mask = mask_for("davis_h025", 64, 64)  # bands of 8 px, left and right
    scorer = LPIPSScorer(_l1, min_crop=16)
    scores = video_metrics(pred, target, torch.from_numpy(mask), lpips=scorer).values
    p, t = pred.double().numpy() * 2 - 1, target.double().numpy() * 2 - 1  # LPIPS sees [-1, 1]
    assert scores["lpips"] == pytest.approx(np.abs(p - t).mean(), rel=1e-6)
    # Each 8-px band widened to 16 px inside the frame: left [0, 16), right [48, 64); equal weights.
    left, right = np.abs(p - t)[..., :16].mean(axis=(1, 2, 3)), np.abs(p - t)[..., 48:].mean(axis=(1, 2, 3))
    assert scores["region_lpips"] == pytest.approx(((left + right) / 2).mean(), rel=1e-6)


def test_lpips_skipped_on_frames_too_small_for_the_network():
    scorer = LPIPSScorer(_l1, min_crop=32)
    small = _video(height=16, width=48)
    scores = video_metrics(small, small, torch.from_numpy(mask_for("davis_h025", 16, 48)), lpips=scorer)
    assert scores.values["lpips"] is None and "16x48" in scores.reasons["lpips"]
    assert scores.values["ssim"] == pytest.approx(1.0)


def test_region_boxes_split_bands_and_components():
    opc = region_boxes(mask_for("ssv2_opc", 128, 128))
    assert sorted((b.y0, b.y1, b.x0, b.x1) for b in opc) == sorted(
        [(0, 32, 0, 128), (96, 128, 0, 128), (32, 96, 0, 32), (32, 96, 96, 128)]
    )
    assert sum(b.weight for b in opc) == int(mask_for("ssv2_opc", 128, 128).sum())
    blobs = np.zeros((20, 20), bool)
    blobs[2:5, 3:6] = True
    blobs[10:18, 12:14] = True
    boxes = sorted((b.y0, b.y1, b.x0, b.x1, b.weight) for b in region_boxes(blobs))
    assert boxes == [(2, 5, 3, 6, 9), (10, 18, 12, 14, 16)]


def test_lpips_unavailable_gives_none_with_a_reason_and_never_downloads(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))

    def no_download(*args, **kwargs):
        raise AssertionError("LPIPS tried to download weights")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    net, reason = load_lpips_network("alex")
    assert net is None and "allow_download" in reason
    net, reason = load_lpips_network("alex", backbone_weights=tmp_path / "missing.pth")
    assert net is None and "not found" in reason
    scorer = LPIPSScorer.from_config(MetricConfig())
    assert not scorer.available
    video = _video()
    scores = video_metrics(video, video, torch.from_numpy(mask_for("davis_h025", 40, 48)), lpips=scorer)
    assert scores.values["lpips"] is None and scores.values["region_lpips"] is None
    assert scores.reasons["lpips"] == scores.reasons["region_lpips"] == scorer.reason
    assert "allow_download" in scorer.reason and "\n" not in scorer.reason
    assert scores.values["psnr"] is not None  # the other metrics still run


def test_lpips_loads_a_local_backbone_like_torchmetrics(tmp_path, monkeypatch):
    import torchvision
    from torchmetrics.functional.image import lpips as tm_lpips

    backbone = torchvision.models.alexnet(weights=None).features
    path = tmp_path / "alexnet_features.pth"
    torch.save({f"features.{k}": v for k, v in backbone.state_dict().items()}, path)
    net, reason = load_lpips_network("alex", backbone_weights=path)
    assert reason is None
    # Reference: torchmetrics' own LPIPS with the same backbone handed in where it would download it.
    monkeypatch.setattr(tm_lpips, "_get_tv_model_features", lambda name, pretrained=False: backbone)
    reference = tm_lpips._NoTrainLpips(net="alex")
    a, b = _video(frames=2, height=64, width=64, seed=9) * 2 - 1, _video(frames=2, height=64, width=64, seed=10) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(net(a, b).reshape(-1), reference(a, b).reshape(-1))
    # A file without the backbone tensors is reported, not raised.
    torch.save({"something": torch.zeros(1)}, tmp_path / "bad.pth")
    net, reason = load_lpips_network("alex", backbone_weights=tmp_path / "bad.pth")
    assert net is None and "unusable" in reason


def test_out_of_range_input_is_rejected_with_its_range():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        video_metrics(_video() * 2 - 1, _video())
    with pytest.raises(ValueError, match="shape"):
        video_metrics(_video(), _video(frames=2))


# --------------------------------------------------------------------------- Fréchet distance / FVD


def test_frechet_distance_of_diagonal_gaussians_closed_form():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    var1, var2 = rng.uniform(0.1, 3, size=6), rng.uniform(0.1, 3, size=6)
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(var1) - np.sqrt(var2)) ** 2).sum()
    assert frechet_distance(mu1, np.diag(var1), mu2, np.diag(var2)) == pytest.approx(expected, rel=1e-12)
    assert frechet_distance(mu1, np.diag(var1), mu1, np.diag(var1)) == pytest.approx(0.0, abs=1e-12)


def test_frechet_distance_matches_scipy_sqrtm_for_full_covariances():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(8, 8)), rng.normal(size=(8, 8))
    s1, s2 = a @ a.T + 0.1 * np.eye(8), b @ b.T + 0.1 * np.eye(8)
    mu1, mu2 = rng.normal(size=8), rng.normal(size=8)
    root = scipy.linalg.sqrtm(s1 @ s2)
    expected = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * np.real(root))
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)


def test_feature_stats_accumulate_like_numpy():
    rng = np.random.default_rng(2)
    features = rng.normal(size=(20, 5))
    stats = FeatureStats()
    for chunk in np.array_split(features, 3):
        stats.update(torch.from_numpy(chunk).float() if len(chunk) % 2 else chunk)
    np.testing.assert_allclose(stats.mean(), features.mean(0), atol=1e-6)
    np.testing.assert_allclose(stats.covariance(), np.cov(features, rowvar=False), atol=1e-5)


def test_uniform_frame_indices():
    indices = uniform_frame_indices(40)
    assert len(indices) == 16 and indices[0] == 0 and indices[-1] == 39
    assert np.all(np.diff(indices) >= 2) and np.all(np.diff(indices) <= 3)
    assert uniform_frame_indices(16) == list(range(16))
    short = uniform_frame_indices(5)
    assert len(short) == 16 and sorted(set(short)) == [0, 1, 2, 3, 4]


class _FrameProbe(torch.nn.Module):
    """Stand-in I3D: checks the StyleGAN-V call and returns the first pixel of every frame."""

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False, return_features: bool = False) -> torch.Tensor:
        if x.dtype != torch.uint8:
            raise RuntimeError("expected uint8 videos")
        if not (rescale and resize and return_features):
            raise RuntimeError("expected rescale=True, resize=True, return_features=True")
        return x[:, 0, :, 0, 0].float()  # (B, T): layout b c t h w


class _TinyI3D(torch.nn.Module):
    """Stand-in I3D with 4 features: per-channel means and the last-minus-first frame brightness."""

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False, return_features: bool = False) -> torch.Tensor:
        v = x.float() / 127.5 - 1.0
        channels = v.mean(dim=(2, 3, 4))
        motion = (v[:, :, -1] - v[:, :, 0]).mean(dim=(1, 2, 3))
        return torch.cat([channels, motion[:, None]], dim=1)


def test_i3d_call_convention_and_frame_sampling():
    probe = I3DFeatureExtractor(torch.jit.script(_FrameProbe()))
    accumulator = FVDAccumulator(probe)
    video = (torch.arange(40, dtype=torch.float32) / 255)[:, None, None, None].expand(40, 3, 8, 8)
    features = accumulator._features(video)
    assert features.tolist() == [[float(i) for i in uniform_frame_indices(40)]]


def _np_features(videos: np.ndarray) -> np.ndarray:
    """Independent NumPy version of _TinyI3D on uniformly sampled, uint8-quantized frames."""
    index = np.rint(np.linspace(0, videos.shape[1] - 1, 16)).astype(int)
    v = np.round(videos[:, index] * 255) / 127.5 - 1.0  # (B, T, C, H, W)
    channels = v.mean(axis=(1, 3, 4))
    motion = (v[:, -1] - v[:, 0]).mean(axis=(1, 2, 3))
    return np.concatenate([channels, motion[:, None]], axis=1)


def test_fvd_plumbing_with_a_scripted_stand_in(tmp_path):
    path = tmp_path / "tiny_i3d.pt"
    torch.jit.save(torch.jit.script(_TinyI3D()), str(path))
    extractor, reason = load_i3d(path)
    assert reason is None
    gen = torch.Generator().manual_seed(11)
    real = torch.rand(12, 20, 3, 16, 16, generator=gen)
    ramp = torch.linspace(0, 0.3, 20)[None, :, None, None, None]
    fake = (torch.rand(12, 20, 3, 16, 16, generator=gen) * 0.7 + ramp).clamp(0, 1)
    accumulator = FVDAccumulator(extractor)
    for video in real:
        accumulator.add_real("p", video)
    accumulator.add_fake("p", "m", fake[:5])  # batches and single videos mix
    for video in fake[5:]:
        accumulator.add_fake("p", "m", video)
    accumulator.add_fake("p", "same", real)
    value, reason = accumulator.compute("p", "m")
    assert reason is None
    fr, ff = _np_features(real.double().numpy()), _np_features(fake.double().numpy())
    expected_mean = ((fr.mean(0) - ff.mean(0)) ** 2).sum()
    s1, s2 = np.cov(fr, rowvar=False), np.cov(ff, rowvar=False)
    expected = expected_mean + np.trace(s1 + s2 - 2 * np.real(scipy.linalg.sqrtm(s1 @ s2)))
    assert value == pytest.approx(expected, rel=1e-6)
    assert accumulator.compute("p", "same")[0] == pytest.approx(0.0, abs=1e-9)


def test_fvd_unavailable_reasons(tmp_path):
    extractor, reason = load_i3d(tmp_path / "i3d_torchscript.pt")
    assert extractor is None and "not found" in reason
    accumulator = FVDAccumulator(extractor, reason)
    accumulator.add_real("p", _video())
    assert accumulator.compute("p", "m") == (None, reason)
    (tmp_path / "broken.pt").write_bytes(b"not a torchscript file")
    extractor, reason = load_i3d(tmp_path / "broken.pt")
    assert extractor is None and "unusable" in reason
    one = FVDAccumulator(I3DFeatureExtractor(torch.jit.script(_TinyI3D())))
    one.add_real("p", _video(frames=4))
    one.add_fake("p", "m", _video(frames=4))
    value, reason = one.compute("p", "m")
    assert value is None and "at least 2" in reason


# --------------------------------------------------------------------------- aggregation and results files


def test_accumulator_means_and_results_files(tmp_path):
    accumulator = MetricAccumulator()
    mask = torch.from_numpy(mask_for("davis_h025", 40, 48))
    target = _video(low=0.2, high=0.8)
    for delta in (0.02, 0.06):
        scores = video_metrics(target + delta * mask, target, mask)
        accumulator.add_video("davis_h025", "telea", scores, video_id=f"v{delta}")
    accumulator.set_metric("davis_h025", "telea", "fvd", None, "I3D TorchScript file not found: x")
    accumulator.add_failure("davis_h025", "telea", "broken_clip", "cannot decode")
    summary = accumulator.summary()
    entry = summary["protocols"]["davis_h025"]["methods"]["telea"]
    assert entry["num_videos"] == 2
    assert entry["metrics"]["region_mse"] == pytest.approx((0.02**2 + 0.06**2) / 2, rel=1e-5)
    assert entry["metrics"]["lpips"] is None and entry["reasons"]["lpips"] == "LPIPS not requested"
    assert entry["metrics"]["fvd"] is None and "I3D" in entry["reasons"]["fvd"]

    json_path, md_path = write_results(summary, tmp_path / "run")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["results.json", "results.md"]  # no temp files left
    data = json.loads(json_path.read_text())
    block = data["protocols"]["davis_h025"]
    assert block["methods"]["telea"]["metrics"]["region_mse"] == pytest.approx(entry["metrics"]["region_mse"])
    assert [row["method"] for row in block["paper"]] == ["Dehan [6]", "SDM [28]", "Ours"]
    markdown = md_path.read_text()
    assert "## davis_h025" in markdown
    assert "| paper Table 1: Ours | — | 0.0149 | 20.26 | 0.7082 | 0.2026 | 300.0 |" in markdown
    telea_row = next(line for line in markdown.splitlines() if line.startswith("| telea |"))
    assert f"{entry['metrics']['region_mse']:.5f}" in telea_row and "n/a" in telea_row
    assert "telea / fvd: I3D TorchScript file not found: x" in markdown
    assert "broken_clip: cannot decode" in markdown
    with pytest.raises(ValueError, match="protocols"):
        write_results({"davis_h025": {}}, tmp_path / "bad")
