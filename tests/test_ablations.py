"""benchmarks/ablations.py: the Table-2 variants differ only in what the paper ablates, the
guide cases reach the model, and the whole harness runs (--quick)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import ablations  # noqa: E402
import convergence  # noqa: E402

from lightning_m3ddm.data.augmentation import AugmentationConfig  # noqa: E402


def tiny_config() -> dict:
    return yaml.safe_load((ROOT / "configs" / "tiny_cpu.yaml").read_text())


def test_variants_change_only_what_the_paper_ablates():
    base = tiny_config()
    full = ablations.variant_config(base, "full")
    assert full == base
    no_global = ablations.variant_config(base, "no_global")
    assert no_global["model"]["init_args"]["condition_dropout"]["global_frames"] == 1.0
    assert "augmentation" not in no_global["data"]["init_args"]  # the paper's mask-modeling mix
    sdm = ablations.variant_config(base, "sdm")
    assert sdm["model"]["init_args"]["condition_dropout"]["global_frames"] == 1.0
    guide = sdm["data"]["init_args"]["augmentation"].guide
    assert guide.case_probabilities() == {"none": 0.0, "first": 0.0, "first_and_last": 1.0, "random_frames": 0.0}
    assert sdm["data"]["init_args"]["augmentation"].mask == AugmentationConfig().mask
    assert base["model"]["init_args"].get("condition_dropout") is None  # not modified in place
    with pytest.raises(ValueError, match="unknown variant"):
        ablations.variant_config(base, "nope")


def test_guide_frames_are_given_whole_and_scored_nowhere():
    video = torch.rand(2, 6, 3, 16, 16) * 2 - 1
    mask = torch.zeros(16, 16)
    mask[:, :4] = 1
    batch = {"video": video, "masked_video": torch.where(mask.bool(), -1.0, video), "mask": mask.expand(2, 6, 1, 16, 16).clone()}
    guided = ablations.with_guides(batch, ablations.GUIDE_CASES["first_and_last"])
    for f in (0, -1):
        assert guided["mask"][:, f].sum() == 0
        assert torch.equal(guided["masked_video"][:, f], video[:, f])
    assert torch.equal(guided["mask"][:, 1:-1], batch["mask"][:, 1:-1])
    assert batch["mask"][:, 0].sum() > 0  # the input is not changed
    assert ablations.scored_frames(6) == [1, 2, 3, 4]


def test_paired_differences():
    out = ablations.paired(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0.0, 0.0, 4.0]))
    assert out["mean_db"] == pytest.approx(2 / 3, abs=1e-3)
    assert out["stderr_db"] == pytest.approx(float(torch.tensor([1.0, 2.0, -1.0]).std()) / math.sqrt(3), abs=1e-3)
    assert out["clips_higher"] == 2
    assert ablations.paired(torch.tensor([1.0]), torch.tensor([0.0]))["stderr_db"] is None


def test_sideways_pans_alternate_direction():
    clips, globals_, fps = ablations.clip_set(2, 96, 4, 2, 1, seed=5, video_frames=24, heading=0.0)
    assert clips.shape == (2, 4, 3, 96, 96) and globals_.shape == (2, 2, 3, 96, 96) and fps == 24

    def shift(first, last):  # where the middle of the first frame is found in the last one
        errors = [float((first[:, 20:76, 40:56] - last[:, 20:76, s : s + 16]).abs().mean()) for s in range(0, 81)]
        return errors.index(min(errors)) - 40

    # 23 frames at 2 px per frame: the camera moving right moves the scene left, by ~46 px
    # (less the wobble); the second clip pans the other way
    assert shift(*globals_[0]) < -10 and shift(*globals_[1]) > 10


def test_quick_run_measures_every_mechanism(tmp_path):
    results = ablations.main(["--quick", "--out", str(tmp_path)])
    table = results["guide_and_mask_modeling"]
    for row in ("telea", "edge", "full/estimate", "full/sample", "no_global/estimate", "sdm/sample"):
        assert set(table["rows"][row]) == set(ablations.GUIDE_CASES)
    assert "mask modeling (MSDM w/o prompt vs SDM-like), none, estimate" in table["effects"]
    assert "guide frames (first vs none), full, sample" in table["effects"]
    sweep = results["global_frames"]
    assert {"full/estimate s2=0", "full/estimate s2=4", "no_global/estimate", "global-frame copy (registered)"} <= set(sweep["rows"])
    assert "global-frame copy vs full estimate (s2=1)" in sweep["effects"]
    # the global frames reach the UNet: replacing them moves the prediction
    assert all(v["null_vs_real"] > 0 for v in sweep["sensitivity"].values())
    c2f = results["coarse_to_fine"]
    assert set(c2f["rows"]) == {"telea", *ablations.PLANS}
    assert all(len(r["psnr_by_segment"]) == 2 for r in c2f["rows"].values())
    assert set(results["budgets"]) == set(ablations.VARIANTS)
    assert (tmp_path / "results.json").exists()
    text = ablations.report(results)  # the tables benchmarks/README.md quotes
    assert "| SDM-like (first/last guides only, no global frames), estimate |" in text
    assert "| 30,15,1 |" in text and "null_vs_real" in text
    # a stopped run continues from its last checkpoint and says so in its budget
    assert ablations.main(["train", "--quick", "--variant", "sdm", "--out", str(tmp_path), "--resume"]) is None
    budget = json.loads((tmp_path / "sdm" / "budget.json").read_text())
    assert budget["resumed_from_step"] == 3 and budget["steps"] == 3


def test_resume_without_a_checkpoint_names_the_missing_file(tmp_path):
    with pytest.raises(SystemExit, match=r"sdm/checkpoints/last\.ckpt does not exist"):
        ablations.main(["train", "--quick", "--variant", "sdm", "--out", str(tmp_path), "--resume"])


def test_registered_global_copy_recovers_a_pan_from_the_global_frames():
    # a smooth texture seen by a camera moving 1.5 px right and 0.5 px down per frame; the
    # clip's bands are where the global frames (8 frames before, 11 after) saw them, so the
    # copy must find each translation's sign and size, to a fraction of a pixel
    width, height, frames = 48, 24, 4

    def view(t: float) -> torch.Tensor:  # (3, H, W): the scene seen at time t
        xs = torch.arange(width, dtype=torch.float32)[None] + 1.5 * t
        ys = torch.arange(height, dtype=torch.float32)[:, None] + 0.5 * t
        return torch.stack([0.5 * torch.sin(xs / 3.0 + c) * torch.cos(xs / 7.0) + 0.3 * torch.sin(ys / 4.0 + c) for c in range(3)])

    clips = torch.stack([view(t) for t in range(frames)])[None]  # (1, F, 3, H, W)
    global_frames = torch.stack([view(-8.0), view(11.0)])[None]
    mask = torch.zeros(height, width)
    mask[:, :8] = 1
    mask[:, -8:] = 1
    batch = convergence.masked_batch(clips, global_frames, 24, mask)
    copy = ablations.registered_global_copy(batch, max_shift=(20, 6), min_overlap=64)
    telea = ablations.baseline("telea", batch)
    m = mask.bool().expand(1, frames, 3, height, width).clone()
    m[..., :6, :] = m[..., -6:, :] = False  # rows a 5.5 px vertical shift brings from outside the global frames
    assert (copy - clips).abs()[m].max() < 0.02  # every band pixel was seen by a global frame
    known = ~mask.bool().expand(1, frames, 3, height, width)
    assert (copy - clips).abs()[known].max() <= 1 / 127.5  # the known pixels are kept (to 8 bits)
    assert (telea - clips).abs()[m].mean() > 10 * (copy - clips).abs()[m].mean()
