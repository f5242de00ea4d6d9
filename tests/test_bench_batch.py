"""benchmarks/bench_batch.py --quick: the catalogue benchmark runs end to end and reports what ran."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(200)
def test_quick_run_reports_videos_per_hour(tmp_path):
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "benchmarks/bench_batch.py", "--quick", "--workdir", str(tmp_path / "work"), "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    (row,) = report["rows"]
    assert row["config"] == {"processes": 1, "assignment": "balanced", "workers": 2}
    assert row["cpu_s"] > row["rank_busy_s"][0] * 0.2
    assert row["videos_done"] == row["outputs"] == report["videos"] == 2  # every video written, none skipped
    assert 0 < row["rank_busy_s"][0] < row["wall_s"]
    assert row["videos_per_hour"] == pytest.approx(2 / row["wall_s"] * 3600, rel=0.01)
    assert "| processes | assignment |" in done.stdout
    assert not list((tmp_path / "work").glob("out-*"))  # outputs removed after measuring
