"""benchmarks/bench_plans.py: the cost table of the two coarse-to-fine plans."""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import bench_plans  # noqa: E402


def test_the_plans_differ_only_where_the_coarse_pass_or_padding_differs():
    for n in (50, 100, 225):  # framework skips the stride-15 pass; released pads it
        framework, released = bench_plans.plan_cost(n, "framework"), bench_plans.plan_cost(n, "released")
        assert framework["levels"] != released["levels"] and framework["repeated_slots"] == 0 < released["repeated_slots"]
    assert bench_plans.plan_cost(226, "framework") == bench_plans.plan_cost(226, "released")  # 16 key frames exactly


def test_table_has_a_row_per_length():
    rows = bench_plans.table((16, 100)).splitlines()
    assert len(rows) == 4 and rows[3].startswith("| 100 |")
