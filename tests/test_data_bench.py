"""Smoke test of benchmarks/bench_data.py --quick (the measured numbers live in benchmarks/README.md)."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(300)
def test_bench_data_quick_runs_and_reports_every_source(tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, "benchmarks/bench_data.py", "--quick", "--workdir", str(tmp_path / "work"), "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=280,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    import json

    report = json.loads(out.read_text())
    assert [r["source"] for r in report["rows"]] == ["full-size", "short side 256", "short side 256, GOP 16"]
    for row in report["rows"]:
        assert row["pipeline_clips_per_s"] > 0 and row["decode_only_clips_per_s"] > 0
    assert "| source |" in result.stdout
