"""benchmarks/gpu_check.sh --dry-run: the GPU acceptance script runs end to end on CPU (tiny configuration)."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_check  # noqa: E402


def test_dry_run_writes_json_and_a_markdown_row(tmp_path):
    out = tmp_path / "gpu_check.json"
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1")
    result = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run", "--output", str(out)],
                            env=env, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(out.read_text())
    assert report["dry_run"] and report["flops_per_sample"] > 0
    kinds = {r["name"] for r in report["train"]}
    assert kinds == {"eager", "eager+ac"}
    for row in report["train"]:
        assert row["step_s"] > 0 and row["samples_per_s"] == row["batch"] / row["step_s"]
    assert [p["dtype"] for p in report["predict"]] == ["float32"] and report["predict"][0]["s_per_frame"] > 0
    header, row = result.stdout.strip().splitlines()[-3], result.stdout.strip().splitlines()[-1]
    assert header.startswith("| date") and row.startswith(f"| {report['date']} | cpu (dry run) |")
    assert row.count("|") == header.count("|")


def test_extrapolation_and_mfu():
    # 0.2 s per step, 50 steps, 16 frames -> 0.625 s per frame
    assert gpu_check.extrapolated_seconds_per_frame([0.3, 0.2, 0.1], 16) == 0.2 * 50 / 16
    assert gpu_check.mfu(1e12, 4, 0.5, 16e12) == 0.5
    assert gpu_check.mfu(1e12, 4, 0.5, None) is None
