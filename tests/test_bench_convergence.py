"""benchmarks/convergence.py --quick: the proof-of-learning harness runs end to end."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


def test_convergence_quick(tmp_path):
    out = tmp_path / "conv"
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "convergence.py"), "--quick", "--out", str(out)],
        capture_output=True, text=True, timeout=400,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    for method in ("model", "model_estimate", "telea"):
        assert set(res[method]) == {"psnr_region", "temporal_error"}
    assert set(res["model_beats_telea"]) == {"model", "model_estimate"}
    gain = res["psnr_gain_over_telea"]["model"]
    assert gain["clips"] == 2 and 0 <= gain["clips_better"] <= 2
    assert abs(gain["mean_db"] - (res["model"]["psnr_region"] - res["telea"]["psnr_region"])) < 1e-3
    # the baseline is a real fill: far better than black, worse than perfect
    assert 10 < res["telea"]["psnr_region"] < 40 and 0 < res["telea"]["temporal_error"] < 0.5
    assert res["budget"]["steps"] == 3 and res["budget"]["anneal_steps"] == 1 and res["eval"]["mask_ratio"] == 0.5
    assert res["eval"]["estimate_guidance"] == [1.0, 1.0]
    sweep = res["validation_sweep"]
    assert sweep["clips"] == 2 and sweep["seed"] != 10_000_000
    assert set(sweep["estimate_by_guidance"]) >= {"1,1", "2,4"}
    assert all(v["gain"]["clips"] == 2 for v in sweep["estimate_by_guidance"].values())
    assert (out / "preview.png").stat().st_size > 0 and (out / "model.ckpt").exists()
    # evaluate only: the budget reported is the checkpoint's, not the command's defaults
    again = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "convergence.py"), "--quick", "--validation-clips", "0",
         "--checkpoint", str(out / "model.ckpt"), "--out", str(tmp_path / "eval")],
        capture_output=True, text=True, timeout=400,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    budget = json.loads((tmp_path / "eval" / "results.json").read_text())["budget"]
    assert (budget["steps"], budget["anneal_steps"], budget["train_seconds"]) == (3, 1, None)
    assert budget["checkpoint"].endswith("model.ckpt")


@pytest.mark.parametrize("flags", [["--eval-clips", "0"], ["--validation-clips", "-1"], ["--anneal-steps", "3300"]])
def test_bad_counts_are_refused_before_any_work(tmp_path, flags):
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "convergence.py"), *flags, "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode != 0 and flags[0] in result.stderr
    assert not (tmp_path / "out").exists()  # nothing written


def test_anneal_holds_the_rate_then_decays_to_zero_at_the_budget():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import convergence

    config = {"model": {"init_args": {"optimizer": {"lr": 1e-3, "warmup_steps": 100}}}}
    optimizer = convergence.with_anneal(config, 3300, 900)["model"]["init_args"]["optimizer"]
    assert optimizer == {"lr": 1e-3, "warmup_steps": 100, "decay": "cosine", "decay_start": 2400, "decay_steps": 3300}
    assert "decay" not in config["model"]["init_args"]["optimizer"]  # the loaded config is not changed
    assert convergence.with_anneal(config, 3300, 0) is config
    with pytest.raises(SystemExit, match="--anneal-steps"):
        convergence.with_anneal(config, 3300, 3250)  # would start inside the warm-up
    with pytest.raises(SystemExit, match=r"warmup_steps \(1000\)"):  # the training's default warm-up
        convergence.with_anneal({"model": {"init_args": {}}}, 3300, 2500)
    # and read back from a run's settings, as --checkpoint reports it
    assert convergence.annealed_steps(optimizer, 3300) == 900
    assert convergence.annealed_steps(optimizer, 3000) == 600  # stopped early: only the steps it ran
    assert convergence.annealed_steps({"warmup_steps": 100}, 3300) == 0  # constant rate
    assert convergence.annealed_steps({"warmup_steps": 100, "decay": "cosine"}, 3300) == 3200  # whole-run cosine
