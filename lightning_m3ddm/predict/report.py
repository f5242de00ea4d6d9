"""The run report: ``DIR/predict_report.jsonl``, one JSON line per video and a summary per run.

Video lines: ``{"event": "video", "run_id", "rank", "video", "stem", "status":
"done" | "skipped" | "failed", "reason", "frames", "seconds", "outputs", "padding"}``
(``padding``: per output, the border added in source pixels ``[left, right, top,
bottom]``). Every run appends to the same file, so a requeued job's lines follow the
lines of the runs before it; ``run_id`` tells them apart. At the end of a run (or when
it is preempted) each rank appends ``{"event": "end", ...}`` and rank 0 a
``{"event": "summary", ...}`` with the counts over all ranks.

Each line is written with one ``write`` to a file opened with ``O_APPEND``, so lines
of several processes (ranks, loader workers) never interleave on a local file system
(on NFS, appends of several nodes can collide; give each node its own folder there).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

REPORT_NAME = "predict_report.jsonl"
STATUSES = ("done", "skipped", "failed")


def summarize(lines: Iterable[Mapping[str, Any]], run_id: str) -> dict[str, Any]:
    """Counts of ``run_id``'s video lines by status, with frames and seconds of the done ones."""
    counts: Counter[str] = Counter()
    frames = 0
    seconds = 0.0
    for line in lines:
        if line.get("event") != "video" or line.get("run_id") != run_id:
            continue
        counts[line["status"]] += 1
        if line["status"] == "done":
            frames += int(line.get("frames") or 0)
            seconds += float(line.get("seconds") or 0.0)
    return {
        "videos": sum(counts.values()),
        **{status: counts.get(status, 0) for status in STATUSES},
        "frames_done": frames,
        "video_seconds": round(seconds, 3),
    }


def read_report(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Every complete line of a report (a line cut by a crash is ignored)."""
    lines = []
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return []
    for raw in text.splitlines():
        try:
            lines.append(json.loads(raw))
        except ValueError:
            continue
    return lines


class RunReport:
    """Appends this process's lines to ``output_dir/predict_report.jsonl``."""

    def __init__(self, output_dir: str | os.PathLike, run_id: str, rank: int = 0):
        self.path = Path(output_dir) / REPORT_NAME
        self.run_id = run_id
        self.rank = rank
        self._lock = threading.Lock()

    def append(self, event: str, **fields: Any) -> None:
        line = {"event": event, "run_id": self.run_id, "rank": self.rank,
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **fields}
        data = (json.dumps(line) + "\n").encode()
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)

    def video(self, status: str, video: str, stem: str, reason: str | None = None, frames: int | None = None,
              seconds: float | None = None, outputs: Iterable[str] = (), padding: Iterable[list[int]] = ()) -> None:
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        self.append("video", status=status, video=str(video), stem=stem, reason=reason, frames=frames,
                    seconds=None if seconds is None else round(seconds, 3),
                    outputs=[str(p) for p in outputs], padding=[list(p) for p in padding])

    def summary(self, **extra: Any) -> dict[str, Any]:
        """Append the summary of this run's lines so far (rank 0, once every rank has ended)."""
        counts = summarize(read_report(self.path), self.run_id)
        self.append("summary", **counts, **extra)
        return counts
