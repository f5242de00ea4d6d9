"""benchmarks/bench_predict.py: its planning arithmetic, and a --quick run end to end.

The measured table lives in benchmarks/README.md; this checks that what the benchmark
reports is what ran: every frame generated and written, the UNet calls counted by the hook
equal to what the planner implies, batching that really saves calls.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import bench_predict  # noqa: E402


def test_schedules_are_forced_at_every_length():
    # below the config's dense threshold (50) hybrid must still be hybrid, and dense stays dense above it
    short_hybrid = bench_predict.RunSpec(40, "hybrid", 8, 2).plan_stats()
    long_dense = bench_predict.RunSpec(480, "dense", 8, 2).plan_stats()
    long_hybrid = bench_predict.RunSpec(480, "hybrid", 8, 2).plan_stats()
    assert short_hybrid["mode"] == "hybrid" and short_hybrid["level_strides"] == [1]  # no grid long enough for 5
    assert long_dense["mode"] == "dense" and long_dense["level_strides"] == [1]
    assert long_hybrid["level_strides"] == [15, 5, 1]
    # a dense chain cannot batch: each window is guided by the one before it
    assert long_dense["batches"] == long_dense["windows"]
    assert long_hybrid["batches"] < long_hybrid["windows"]
    unbatched = bench_predict.RunSpec(480, "hybrid", 1, 2).plan_stats()
    assert unbatched["expected_unet_calls"] == 2 * unbatched["windows"]


@pytest.mark.timeout(300)
def test_quick_run_reports_every_configuration(tmp_path):
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "benchmarks/bench_predict.py", "--quick", "--workdir", str(tmp_path / "work"),
         "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=280,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    rows = report["rows"]
    assert {(r["frames"], r["schedule"], r["max_batch"]) for r in rows} == {
        (n, s, b) for n in (20, 80) for s, b in (("dense", 8), ("hybrid", 1), ("hybrid", 8))
    }
    for r in rows:
        # every frame generated once and written out
        assert r["frames_generated"] == r["frames"] == r["output_frames"], r
        # the forward hook saw exactly the calls the plan implies (one per batch per step) ...
        assert r["unet_calls"] == r["expected_unet_calls"], r
        # ... and each window went through the UNet once per step, with its three guidance branches
        assert r["unet_items"] == r["windows"] * r["steps"] * report["guidance_branches"], r
        assert r["s_per_frame"] > 0 and r["cpu_s_per_frame"] > 0
        assert 0 < r["generate_s"] <= r["total_s"]
        assert r["peak_rss_mib"] >= r["rss_before_predict_mib"] > 0
        assert r["unet_calls_per_frame"] == pytest.approx(r["unet_calls"] / r["frames"], abs=1e-3)
    by_key = {(r["frames"], r["schedule"], r["max_batch"]): r for r in rows}
    batched, unbatched = by_key[(80, "hybrid", 8)], by_key[(80, "hybrid", 1)]
    assert batched["level_strides"] == [5, 1] and by_key[(80, "dense", 8)]["level_strides"] == [1]
    assert batched["windows"] == unbatched["windows"]
    assert batched["unet_calls"] < unbatched["unet_calls"] == unbatched["windows"] * unbatched["steps"]
    assert "| frames | schedule |" in done.stdout
