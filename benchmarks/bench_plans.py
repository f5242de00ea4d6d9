"""Cost of the two coarse-to-fine plans (``schedule.compat``): framework and released.

For each video length: windows (UNet calls per sampling step when run one by one), batches
(calls per step with ``max_batch`` windows per call, as predict runs them), and the window
slots spent on copies of a frame already in the same window (the released loop pads a short
window with the video's last frame; each copy costs a slot that generates nothing new).
Exact counts from the planner, no model: the same on any machine.

    python benchmarks/bench_plans.py
"""

from __future__ import annotations

import argparse

from lightning_m3ddm.coarse_to_fine import ScheduleConfig, batch_plan

LENGTHS = (16, 49, 50, 64, 100, 150, 225, 226, 300, 1000)


def plan_cost(num_frames: int, compat: str, max_batch: int = 4) -> dict:
    """Windows, batches, repeated slots and levels of one plan."""
    schedule = ScheduleConfig(compat=compat, max_batch=max_batch)
    plan = schedule.plan(num_frames)
    return dict(
        windows=len(plan.windows),
        batches=sum(len(level) for level in batch_plan(plan, max_batch)),
        repeated_slots=sum(len(w.frames) - len(set(w.frames)) for w in plan.windows),
        levels=[level.stride for level in plan.levels],
    )


def table(lengths=LENGTHS, max_batch: int = 4) -> str:
    rows = [
        "| frames | framework: windows / batches / repeated slots (levels) | released: windows / batches / repeated slots (levels) |",
        "|---:|---|---|",
    ]
    for n in lengths:
        cells = []
        for compat in ("framework", "released"):
            c = plan_cost(n, compat, max_batch)
            cells.append(f"{c['windows']} / {c['batches']} / {c['repeated_slots']} ({', '.join(map(str, c['levels']))})")
        rows.append(f"| {n} | {cells[0]} | {cells[1]} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-batch", type=int, default=4, help="windows per UNet call (configs/predict.yaml: 4)")
    args = parser.parse_args(argv)
    print(table(max_batch=args.max_batch))


if __name__ == "__main__":
    main()
