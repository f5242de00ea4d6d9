"""Writes an evaluation run: ``results.json`` (everything) and ``results.md`` (one table per protocol).

Input: the structure of :meth:`MetricAccumulator.summary
<lightning_m3ddm.evaluation.metrics.MetricAccumulator.summary>`::

    {"protocols": {protocol: {"methods": {method: {"num_videos": int,
        "metrics": {"mse": float | None, "region_mse": ..., "fvd": ...},
        "reasons": {key: str}, ...}}}},
     "meta": {...}}                       # optional, copied to the JSON

The Markdown table of a protocol has one row per method, whole-frame columns
(MSE, PSNR, SSIM, LPIPS, FVD: the paper's) then generated-region columns, and
below them the paper's rows for that protocol (:func:`paper_rows`), values as
printed. A missing value is ``n/a`` with its reason listed under the table.

Optional parts written by ``evaluate`` (:mod:`.evaluator`): a protocol block's
``"protocol"`` record (its description, and ``matches_paper: false`` when the run
changed the protocol, e.g. a smaller frame size: then the paper's rows are left
out, since they were measured under another protocol), per-method ``"notes"``,
and the run's top-level ``"failures"`` (inputs that could not be read).
Both files are written to temporary names in ``output_dir`` first and renamed
into place, so a crash never leaves a half-written result.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from .metrics import HIGHER_IS_BETTER, METRICS, metric_key
from .paper_results import paper_rows
from .protocols import PROTOCOLS

# Whole-frame (paper) columns, then generated-region ones.
FRAME_COLUMNS: tuple[str, ...] = (*METRICS, "fvd")
REGION_COLUMNS: tuple[str, ...] = tuple(metric_key(m, "region") for m in METRICS)
_LABELS = {"mse": "MSE", "psnr": "PSNR", "ssim": "SSIM", "lpips": "LPIPS", "fvd": "FVD"}
# Decimals as the paper prints them (Table 1).
_FORMATS = {"mse": "{:.5f}", "psnr": "{:.2f}", "ssim": "{:.4f}", "lpips": "{:.4f}", "fvd": "{:.1f}"}


def _base(key: str) -> str:
    return key.removeprefix("region_")


def column_label(key: str) -> str:
    """``"PSNR ↑"`` or ``"PSNR (gen.) ↑"``."""
    base = _base(key)
    arrow = "↑" if HIGHER_IS_BETTER[base] else "↓"
    scope = " (gen.)" if key.startswith("region_") else ""
    return f"{_LABELS[base]}{scope} {arrow}"


def format_value(key: str, value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return _FORMATS[_base(key)].format(value)


def _finite(value):
    """JSON-safe copy: non-finite floats become null (JSON has no NaN/inf)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _matches_paper(block: Mapping) -> bool:
    return (block.get("protocol") or {}).get("matches_paper", True) is not False


def with_paper(results: Mapping) -> dict:
    """JSON-safe copy of ``results`` with the paper's rows of each protocol under ``"paper"``.

    A protocol the run changed (``block["protocol"]["matches_paper"] is False``) gets no
    paper rows and a ``"paper_omitted"`` line saying why.
    """
    out = _finite(dict(results))
    for protocol, block in out.get("protocols", {}).items():
        rows = paper_rows(protocol)
        if not _matches_paper(block):
            changes = (block.get("protocol") or {}).get("changes") or {}
            if rows:
                text = ", ".join(f"{k}={v}" for k, v in changes.items())
                block["paper_omitted"] = f"this run changed the protocol ({text}); the paper's numbers were measured under the original"
            rows = []
        block["paper"] = [
            {"table": r.table, "table_id": r.table_id, "dataset": r.dataset, "method": r.method, "values": r.values, "printed": r.printed, "notes": r.notes}
            for r in rows
        ]
    return out


def _missing_lines(missing: Mapping[str, Mapping[str, list[str]]]) -> list[str]:
    """``methods / columns: reason``, columns sharing a reason and the same methods on one line."""
    lines = []
    for reason, columns in missing.items():
        groups: dict[tuple[str, ...], list[str]] = {}
        for column, methods in columns.items():
            groups.setdefault(tuple(methods), []).append(column)
        for methods, cols in groups.items():
            lines.append(f"{', '.join(methods)} / {', '.join(cols)}: {reason}")
    return lines


def render_markdown(results: Mapping) -> str:
    """The Markdown report of ``results`` (see module docstring)."""
    columns = (*FRAME_COLUMNS, *REGION_COLUMNS)
    lines = ["# Evaluation results", ""]
    lines.append(
        "Whole-frame columns are the paper's metrics (4.1: MSE, PSNR, SSIM on [0, 1], LPIPS on [-1, 1], "
        "FVD on 16 uniformly sampled frames); (gen.) columns are computed on the generated region only. "
        "Means over videos."
    )
    lines.append("")
    failures = results.get("failures") or []
    if failures:
        lines += ["## Inputs not evaluated", ""]
        lines += [f"- {f.get('video')}: {f.get('reason')}" for f in failures]
        lines.append("")
    for protocol, block in results.get("protocols", {}).items():
        lines += [f"## {protocol}", ""]
        description = (block.get("protocol") or {}).get("description")
        if description is None and protocol in PROTOCOLS:
            description = PROTOCOLS[protocol].description
        if description:
            lines += [description + ".", ""]
        lines.append("| Method | Videos | " + " | ".join(column_label(c) for c in columns) + " |")
        lines.append("|---|---:|" + "---:|" * len(columns))
        missing: dict[str, dict[str, list[str]]] = {}  # reason -> column -> methods
        for method, entry in block.get("methods", {}).items():
            metrics = entry.get("metrics", {})
            reasons = entry.get("reasons", {})
            cells = []
            for column in columns:
                value = metrics.get(column)
                cells.append(format_value(column, value))
                if cells[-1] == "n/a":
                    reason = reasons.get(column, "not computed")
                    missing.setdefault(reason, {}).setdefault(column, []).append(method)
            lines.append(f"| {method} | {entry.get('num_videos', 0)} | " + " | ".join(cells) + " |")
        rows = paper_rows(protocol) if _matches_paper(block) else []
        for row in rows:
            cells = [row.printed.get(column, "—") for column in columns]
            lines.append(f"| paper {row.table}: {row.method} | — | " + " | ".join(cells) + " |")
        lines.append("")
        if missing:
            lines.append("n/a:")
            lines += [f"- {text}" for text in _missing_lines(missing)]
            lines.append("")
        notes = [(m, n) for m, e in block.get("methods", {}).items() for n in e.get("notes", [])]
        if notes:
            lines.append("Notes:")
            lines += [f"- {m}: {n}" for m, n in notes]
            lines.append("")
        if block.get("paper_omitted"):
            lines += [f"Paper rows not shown: {block['paper_omitted']}.", ""]
        failures = [(m, f) for m, e in block.get("methods", {}).items() for f in e.get("failures", [])]
        if failures:
            lines.append("Failed videos:")
            lines += [f"- {m} / {f.get('video')}: {f.get('reason')}" for m, f in failures]
            lines.append("")
        for note in dict.fromkeys(r.notes for r in rows if r.notes):
            lines += [f"Paper: {note}", ""]
    return "\n".join(lines).rstrip() + "\n"


def new_file_mode() -> int:
    """The mode ``open()`` gives a new file: 0o666 less the process umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _atomic_write_all(files: Mapping[Path, str]) -> None:
    """Write every file to a temporary name first, then rename them all into place."""
    staged: list[tuple[str, Path]] = []
    mode = new_file_mode()
    try:
        for path, text in files.items():
            handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            staged.append((temp, path))
            os.chmod(temp, mode)  # mkstemp's 0600 would keep the results from everyone else
            with os.fdopen(handle, "w", encoding="utf-8") as stream:
                stream.write(text)
        for temp, path in staged:
            os.replace(temp, path)
    finally:
        for temp, _ in staged:
            if os.path.exists(temp):
                os.remove(temp)


def write_results(results: Mapping, output_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``results.json`` and ``results.md`` into ``output_dir`` (created if needed).

    Returns:
        The paths of the JSON and the Markdown file.
    """
    if "protocols" not in results:
        raise ValueError("write_results: expected a mapping with a 'protocols' key (MetricAccumulator.summary())")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    data = with_paper(results)
    json_path, md_path = output_dir / "results.json", output_dir / "results.md"
    _atomic_write_all({
        json_path: json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n",
        md_path: render_markdown(data),
    })
    return json_path, md_path
