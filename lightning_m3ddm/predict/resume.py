"""Finished videos recognised across runs: a small record written after the outputs are in place.

When every output of a video has been renamed into place, the writer records
``DIR/.m3ddm/done/<stem>.json``: the source (path, size, modification time), a
fingerprint of the settings that shape the output (targets, model and sampling
settings, weights file, writer settings), the frame count and the output names. A
later run skips the video when the record matches (same source file, same settings,
every output still there); ``--overwrite`` redoes it. A video whose record is missing
or does not match is done again, so a changed source or a new setting never serves a
stale output.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lightning_m3ddm.predict.claims import STATE_DIR


def settings_fingerprint(settings: Mapping[str, Any]) -> str:
    """A short stable hash of ``settings`` (values by ``repr``, so dataclasses count field by field)."""
    text = json.dumps({k: repr(settings[k]) for k in sorted(settings)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_identity(path: str | os.PathLike) -> dict[str, Any] | None:
    """Size and modification time of ``path`` (None when it cannot be read)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def record_path(output_dir: str | os.PathLike, stem: str) -> Path:
    return Path(output_dir) / STATE_DIR / "done" / f"{stem}.json"


def mismatch(record: Mapping[str, Any], source: Mapping[str, Any] | None, fingerprint: str,
             targets: Sequence[str], outputs_present: Sequence[bool]) -> str | None:
    """Why a finished-video record does not cover this run's video (None: it does).

    Pure: ``source`` is the source's :func:`file_identity` now, ``targets`` this run's
    target labels, ``outputs_present`` whether each recorded output file exists.
    """
    if source is None:
        return "source unreadable"
    if record.get("size") != source["size"] or record.get("mtime_ns") != source["mtime_ns"]:
        return "source changed"
    if record.get("settings") != fingerprint:
        return "settings changed"
    if list(record.get("targets", [])) != list(targets):
        return "targets changed"
    if not all(outputs_present) or not outputs_present:
        return "an output is missing"
    return None


def read_record(output_dir: str | os.PathLike, stem: str) -> dict[str, Any] | None:
    try:
        return json.loads(record_path(output_dir, stem).read_text())
    except (OSError, ValueError):
        return None


def finished_record(output_dir: str | os.PathLike, stem: str, source: str | os.PathLike, fingerprint: str,
                    targets: Sequence[str]) -> dict[str, Any] | None:
    """The record of ``stem`` when it covers this video with these settings, else None."""
    record = read_record(output_dir, stem)
    if record is None:
        return None
    present = [(Path(output_dir) / name).is_file() for name in record.get("outputs", [])]
    if mismatch(record, file_identity(source), fingerprint, targets, present) is not None:
        return None
    return record


def write_record(output_dir: str | os.PathLike, stem: str, source: str | os.PathLike, fingerprint: str,
                 targets: Sequence[str], frames: int, outputs: Sequence[str | os.PathLike], run_id: str) -> Path:
    """Record ``stem`` as finished (atomically: a reader sees the old record or the whole new one)."""
    path = record_path(output_dir, stem)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "source": os.path.abspath(source),
        **(file_identity(source) or {}),
        "settings": fingerprint,
        "targets": list(targets),
        "frames": frames,
        "outputs": [Path(p).name for p in outputs],
        "run_id": run_id,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, path)
    return path


def forget(output_dir: str | os.PathLike, stem: str) -> None:
    """Drop the record of ``stem`` (its outputs are about to be rewritten)."""
    record_path(output_dir, stem).unlink(missing_ok=True)
