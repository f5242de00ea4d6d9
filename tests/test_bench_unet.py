"""benchmarks/bench_unet.py: the --quick smoke run and its pure helpers (measured tables: benchmarks/README.md)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import bench_unet  # noqa: E402


@pytest.mark.timeout(120)
def test_quick_run_reports_every_setting(tmp_path):
    out_json, out_md = tmp_path / "bench.json", tmp_path / "bench.md"
    result = subprocess.run(
        [sys.executable, "benchmarks/bench_unet.py", "--quick", "--threads", "1",
         "--json", str(out_json), "--markdown", str(out_md)],
        cwd=REPO, capture_output=True, text=True, timeout=110,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out_json.read_text())
    assert report["settings"]["frames"] == 4 and report["settings"]["configs"] == ["tiny"]
    rows = report["scaling"]["rows"]
    assert [(r["config"], r["checkpointing"]) for r in rows] == [("tiny", False), ("tiny", True)]
    for row in rows:
        assert row["forward"]["status"] == row["train"]["status"] == "ok"
        assert row["forward"]["median"]["forward_s"] > 0
        train = row["train"]["median"]
        assert train["forward_s"] > 0 and train["backward_s"] > 0
        assert train["forward_backward_s"] == pytest.approx(train["forward_s"] + train["backward_s"], rel=1e-6)
        assert row["train"]["peak_mem_bytes"] > 0
        # a training step does about three forwards' work: forward, and twice that backward
        assert 2.5 * row["flops"]["forward_flops"] < row["flops"]["train_step_flops"] < 3.5 * row["flops"]["forward_flops"]
        assert row["achieved_tflops"] > 0
    # every worker builds the same network
    assert rows[0]["train"]["parameters"] == rows[1]["train"]["parameters"] == rows[0]["forward"]["parameters"]
    assert report["compare"]["status"] == "skipped" and "--official-src" in report["compare"]["reason"]
    table = out_md.read_text()
    assert "| tiny (32, 64, 64, 64) |" in table and "GFLOP/step" in table
    assert "no released implementation given" in table
    assert table in result.stdout


def test_known_cards_have_their_dense_bf16_peak():
    assert bench_unet.peak_tflops_for("NVIDIA H100 80GB HBM3") == 989
    assert bench_unet.peak_tflops_for("NVIDIA H100 PCIe") == 756
    assert bench_unet.peak_tflops_for("NVIDIA H200") == 989
    assert bench_unet.peak_tflops_for("NVIDIA A100-SXM4-80GB") == 312
    assert bench_unet.peak_tflops_for("NVIDIA GeForce RTX 4090") is None


def test_mfu_is_achieved_over_peak():
    # 495 TFLOP in one second on a 989 TFLOP/s card is half its peak
    assert bench_unet.model_flops_utilisation(495e12, 1.0, 989) == pytest.approx(495 / 989)
    with pytest.raises(ValueError):
        bench_unet.model_flops_utilisation(1e12, 0.0, 989)


def test_official_config_holds_only_the_released_keys():
    cfg = bench_unet.official_config((64, 128, 128, 128))
    assert cfg["_class_name"] == "UNet3DConditionModel"
    assert cfg["block_out_channels"] == [64, 128, 128, 128]
    assert cfg["in_channels"] == 9 and cfg["cross_attention_dim"] == 320
    # what load_official_unet reads back is the same architecture
    from lightning_m3ddm.checkpoints import official_config_to_kwargs

    kwargs = official_config_to_kwargs(cfg)
    assert tuple(kwargs["block_out_channels"]) == (64, 128, 128, 128)


def test_release_comparison_is_optional_but_both_paths_are_needed():
    with pytest.raises(SystemExit):
        bench_unet.parse_args(["--official-src", "/somewhere"])
    assert bench_unet.parse_args(["--quick"]).configs == ["tiny"]
