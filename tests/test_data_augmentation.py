"""Mask and guide-frame augmentation (paper 3.2.1, 3.2.2): geometry, statistics, tensors."""

import math
from collections import Counter

import pytest
import torch
from scipy import stats

from lightning_m3ddm.geometry import Padding

from lightning_m3ddm.data.augmentation import (
    SIDES,
    AugmentationConfig,
    GuideCase,
    GuideFrameConfig,
    MaskConfig,
    MaskStrategy,
    augment,
    band_mask_tensor,
    mask_geometry,
    sample_guide_frames,
    sample_mask,
    snap_to_grid,
)

H = W = 256


def _z(count: int, n: int, p: float) -> float:
    return (count - n * p) / math.sqrt(n * p * (1 - p))


# -- pure geometry ------------------------------------------------------------------------


def test_snap_to_grid_rounds_to_multiples_of_eight_and_keeps_one_cell():
    assert snap_to_grid(38.4, 8) == 40
    assert snap_to_grid(35.9, 8) == 32
    assert snap_to_grid(1.0, 8) == 8


def test_geometry_both_sides_share_the_ratio_equally():
    g = mask_geometry({"left", "right"}, 0.5, 256, 256)
    assert (g.left, g.right, g.top, g.bottom) == (64, 64, 0, 0)
    assert g.band_fraction(256, 256) == pytest.approx(0.5)


def test_geometry_one_side_gets_the_whole_ratio():
    g = mask_geometry({"top"}, 0.25, 256, 128)
    assert (g.top, g.bottom, g.left, g.right) == (64, 0, 0, 0)


def test_geometry_keeps_a_known_cell_on_tiny_frames():
    g = mask_geometry(set(SIDES), 0.75, 32, 32)
    assert g.top + g.bottom <= 32 - 8 and g.left + g.right <= 32 - 8
    assert min(g.top, g.bottom, g.left, g.right) >= 8


def test_geometry_rejects_unknown_side_and_too_small_frames():
    with pytest.raises(ValueError, match="unknown side"):
        mask_geometry({"middle"}, 0.3, 64, 64)
    with pytest.raises(ValueError, match="too small"):
        mask_geometry({"left", "right"}, 0.3, 64, 16)


def test_geometry_tensor_matches_band_widths():
    m = band_mask_tensor(Padding(top=8, bottom=16, left=0, right=24), 64, 48)  # (height, width)
    assert m.shape == (64, 48) and m[:8].eq(1).all() and m[-16:].eq(1).all() and m[:, -24:].eq(1).all()
    assert m[8:48, :24].eq(0).all()
    assert band_mask_tensor(Padding.whole_frame(8, 6), 6, 8).eq(1).all()


def test_configs_reject_probabilities_not_summing_to_one():
    with pytest.raises(ValueError, match="sum to 1"):
        MaskConfig(p_whole_frame=0.5)
    with pytest.raises(ValueError, match="sum to 1"):
        GuideFrameConfig(p_none=0.5)
    with pytest.raises(ValueError, match="ratio"):
        MaskConfig(ratio_min=0.8, ratio_max=0.5)


def test_defaults_are_the_papers():
    m, g = MaskConfig(), GuideFrameConfig()
    assert m.strategy_probabilities() == {
        "all_sides": 0.2, "one_side": 0.1, "both_sides_of_axis": 0.35, "random_sides": 0.1, "whole_frame": 0.25,
    }
    assert (m.ratio_min, m.ratio_max, m.grid) == (0.15, 0.75, 8)
    assert g.p_none == 0.3 and g.p_first + g.p_first_and_last == pytest.approx(0.35)
    assert g.p_random_frames == 0.35 and g.p_frame == 0.5


# -- statistics ---------------------------------------------------------------------------

N_DRAWS = 8000


@pytest.fixture(scope="module")
def mask_draws():
    generator = torch.Generator().manual_seed(1234)
    return [sample_mask(MaskConfig(), H, W, generator) for _ in range(N_DRAWS)]


def test_strategy_proportions_match_config(mask_draws):
    counts = Counter(d.strategy.value for d in mask_draws)
    for name, p in MaskConfig().strategy_probabilities().items():
        assert abs(_z(counts[name], N_DRAWS, p)) < 4.5, (name, counts[name] / N_DRAWS, p)


def test_ratio_is_uniform_on_configured_range(mask_draws):
    ratios = [d.ratio for d in mask_draws]
    assert min(ratios) >= 0.15 and max(ratios) <= 0.75
    assert stats.kstest(ratios, stats.uniform(loc=0.15, scale=0.6).cdf).pvalue > 1e-4


def test_sides_within_each_strategy(mask_draws):
    one = Counter(next(iter(d.sides)) for d in mask_draws if d.strategy is MaskStrategy.ONE_SIDE)
    n_one = sum(one.values())
    assert all(len(d.sides) == 1 for d in mask_draws if d.strategy is MaskStrategy.ONE_SIDE)
    assert set(one) == set(SIDES) and all(abs(_z(c, n_one, 0.25)) < 4.5 for c in one.values())

    axis = [d.sides for d in mask_draws if d.strategy is MaskStrategy.BOTH_SIDES_OF_AXIS]
    assert set(axis) == {frozenset({"left", "right"}), frozenset({"top", "bottom"})}
    horizontal = sum(s == frozenset({"left", "right"}) for s in axis)
    assert abs(_z(horizontal, len(axis), 0.5)) < 4.5

    assert all(d.sides == frozenset(SIDES) for d in mask_draws if d.strategy is MaskStrategy.ALL_SIDES)

    subsets = Counter(d.sides for d in mask_draws if d.strategy is MaskStrategy.RANDOM_SIDES)
    assert len(subsets) == 15 and frozenset() not in subsets
    assert stats.chisquare(list(subsets.values())).pvalue > 1e-4


def test_band_widths_follow_ratio_on_the_latent_grid(mask_draws):
    for d in mask_draws:
        g = d.geometry
        if d.strategy is MaskStrategy.WHOLE_FRAME:
            assert g == Padding.whole_frame(W, H) and g.band_fraction(W, H) == 1.0
            continue
        for first, second, length in (("top", "bottom", H), ("left", "right", W)):
            widths = [getattr(g, s) for s in (first, second) if s in d.sides]
            assert all(getattr(g, s) == 0 for s in (first, second) if s not in d.sides)
            if not widths:
                continue
            assert all(w % 8 == 0 and w >= 8 for w in widths)
            assert len(set(widths)) == 1  # both sides of an axis get the same band
            assert abs(sum(widths) - d.ratio * length) <= 4 * len(widths) + 1e-6
            assert sum(widths) <= length - 8


def test_guide_case_proportions_and_frames():
    cfg = GuideFrameConfig()
    generator = torch.Generator().manual_seed(99)
    f = 16
    draws = [sample_guide_frames(cfg, f, generator) for _ in range(N_DRAWS)]
    counts = Counter(case.value for case, _ in draws)
    for name, p in cfg.case_probabilities().items():
        assert abs(_z(counts[name], N_DRAWS, p)) < 4.5, (name, counts[name] / N_DRAWS, p)
    for case, guide in draws:
        if case is GuideCase.NONE:
            assert not any(guide)
        elif case is GuideCase.FIRST:
            assert guide == [True] + [False] * (f - 1)
        elif case is GuideCase.FIRST_AND_LAST:
            assert guide == [True] + [False] * (f - 2) + [True]
    random_frames = [g for case, guide in draws if case is GuideCase.RANDOM_FRAMES for g in guide]
    assert abs(_z(sum(random_frames), len(random_frames), cfg.p_frame)) < 4.5


# -- tensors ------------------------------------------------------------------------------


def _video(shape, seed=0):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) * 1.8 - 0.9


def test_augment_single_clip_shapes_and_semantics():
    video, globals_ = _video((16, 3, 64, 64)), _video((8, 3, 64, 64), 1)
    out = augment(video, torch.Generator().manual_seed(0), global_frames=globals_)
    assert out.masked_video.shape == video.shape and out.mask.shape == (16, 1, 64, 64)
    assert out.global_frames.shape == globals_.shape and out.guide.shape == (16,)
    assert set(out.mask.unique().tolist()) <= {0.0, 1.0}
    hidden = out.mask.bool().expand_as(video)
    assert out.masked_video[hidden].eq(-1).all()
    assert torch.equal(out.masked_video[~hidden], video[~hidden])
    # guide frames whole, other frames carry the spatial mask
    assert out.mask[out.guide].eq(0).all()
    assert torch.equal(out.mask[~out.guide], out.spatial_mask.expand(int((~out.guide).sum()), -1, -1, -1))


def test_augment_batch_masks_global_frames_like_context_frames():
    generator = torch.Generator().manual_seed(5)
    video, globals_ = _video((64, 4, 3, 32, 48)), _video((64, 6, 3, 32, 48), 2)
    out = augment(video, generator, global_frames=globals_)
    assert out.mask.shape == (64, 4, 1, 32, 48) and out.global_frames.shape == (64, 6, 3, 32, 48)
    for b in range(64):
        region = out.spatial_mask[b].bool().expand(6, 3, -1, -1)
        assert out.global_frames[b][region].eq(-1).all()
        assert torch.equal(out.global_frames[b][~region], globals_[b][~region])
        if out.mask_samples[b].strategy is MaskStrategy.WHOLE_FRAME:
            assert out.global_frames[b].eq(-1).all()
    assert len({s.strategy for s in out.mask_samples}) > 1  # clips draw independently


def test_augment_is_deterministic_under_a_seed():
    video = _video((2, 16, 3, 32, 32))
    a = augment(video, torch.Generator().manual_seed(7))
    b = augment(video, torch.Generator().manual_seed(7))
    assert torch.equal(a.mask, b.mask) and torch.equal(a.masked_video, b.masked_video)
    masks = {augment(video, torch.Generator().manual_seed(s)).mask.sum().item() for s in range(8)}
    assert len(masks) > 1


def test_augment_rejects_bad_shapes():
    with pytest.raises(ValueError, match="video must be"):
        augment(torch.zeros(16, 4, 32, 32), torch.Generator())
    with pytest.raises(ValueError, match="global_frames"):
        augment(torch.zeros(16, 3, 32, 32), torch.Generator(), global_frames=torch.zeros(4, 3, 16, 16))


def test_custom_config_is_honoured():
    cfg = AugmentationConfig(
        mask=MaskConfig(p_all_sides=0, p_one_side=0, p_both_sides_of_axis=0, p_random_sides=0, p_whole_frame=1),
        guide=GuideFrameConfig(p_none=0, p_first=1, p_first_and_last=0, p_random_frames=0),
    )
    out = augment(_video((8, 3, 16, 16)), torch.Generator().manual_seed(0), cfg)
    assert out.mask[0].eq(0).all() and out.mask[1:].eq(1).all()
