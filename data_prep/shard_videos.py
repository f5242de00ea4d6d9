"""Pack videos into WebDataset shards for M3DDM training.

SRC is one of
  * a folder, searched recursively for video files (.mp4 .mov .mkv .webm .avi ...);
  * a text file with one path per line (blank lines and '#' comments ignored);
  * a CSV / TSV manifest with a header, or a JSONL manifest (one object per
    line), e-commerce style: a path column plus any metadata columns, kept in
    each sample's json. Relative paths are taken relative to the manifest's
    folder (or --root).

Example (256-pixel short side, 8 processes, 2 array jobs)::

    python -m data_prep.shard_videos --input videos/ --output shards/ \\
        --resize-short-side 256 --workers 8 --num-jobs 2 --job-index 0

See data_prep/README.md for the shard layout and the summary file.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
from pathlib import Path

from data_prep.sharding import (
    VideoItem,
    add_common_arguments,
    run_job,
    sample_key,
)
from lightning_m3ddm.video.decode import VIDEO_EXTENSIONS

PATH_COLUMNS = ("path", "video_path", "filepath", "file", "filename", "video", "mp4")
CAPTION_COLUMNS = ("caption", "text", "name", "title", "description")


def _resolve(path: str, base: Path) -> str:
    p = Path(os.path.expanduser(path))
    return str(p if p.is_absolute() else base / p)


def _pick_column(columns: list[str], wanted: str | None, candidates: tuple[str, ...], what: str, source: Path) -> str | None:
    if wanted:
        if wanted not in columns:
            raise ValueError(f"{source}: no column {wanted!r} (columns: {columns})")
        return wanted
    lower = {c.lower(): c for c in columns}
    found = next((lower[c] for c in candidates if c in lower), None)
    if found is None and what == "path":
        raise ValueError(f"{source}: no path column among {columns}; name it with --path-column")
    return found


def _rows_to_items(rows: list[dict], source: Path, base: Path, path_column: str | None, caption_column: str | None) -> list[VideoItem]:
    if not rows:
        return []
    columns = list(rows[0].keys())
    path_col = _pick_column(columns, path_column, PATH_COLUMNS, "path", source)
    caption_col = _pick_column(columns, caption_column, CAPTION_COLUMNS, "caption", source)
    items = []
    for i, row in enumerate(rows):
        raw = row.get(path_col)
        if raw is None or str(raw).strip() == "":
            raw = ""  # kept so the shard layout does not depend on bad rows; skipped as missing
        path = _resolve(str(raw).strip(), base) if raw else f"<row {i + 1}: empty path>"
        caption = str(row[caption_col]).strip() if caption_col and row.get(caption_col) not in (None, "") else None
        meta = {k: v for k, v in row.items() if k not in (path_col, caption_col) and k is not None}
        items.append(VideoItem(path=path, key=sample_key(i, Path(str(raw)).stem), caption=caption, meta=meta))
    return items


def list_videos(source: Path, root: Path | None = None, path_column: str | None = None, caption_column: str | None = None) -> list[VideoItem]:
    """Items in a stable order (sorted for folders, file order for lists and manifests).

    Raises:
        FileNotFoundError: SRC does not exist.
        ValueError: a manifest without a usable path column.
    """
    if not source.exists():
        raise FileNotFoundError(f"--input {source} does not exist")
    if source.is_dir():
        paths = sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)
        return [VideoItem(path=str(p), key=sample_key(i, str(p.relative_to(source).with_suffix("")))) for i, p in enumerate(paths)]
    base = root or source.parent
    suffix = source.suffix.lower()
    if suffix in (".csv", ".tsv"):
        with source.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ","))
        return _rows_to_items(rows, source, base, path_column, caption_column)
    if suffix in (".jsonl", ".ndjson"):
        rows = []
        with source.open(encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as exc:
                        raise ValueError(f"{source}:{n}: not JSON: {exc}") from exc
        return _rows_to_items(rows, source, base, path_column, caption_column)
    lines = [line.strip() for line in source.read_text(encoding="utf-8").splitlines()]
    paths = [line for line in lines if line and not line.startswith("#")]
    return [VideoItem(path=_resolve(p, base), key=sample_key(i, Path(p).stem)) for i, p in enumerate(paths)]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m data_prep.shard_videos", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--input", required=True, type=Path, metavar="SRC", help="folder, path list (.txt) or manifest (.csv/.tsv/.jsonl)")
    parser.add_argument("--root", type=Path, default=None, help="base for relative paths in a list/manifest (default: its folder)")
    parser.add_argument("--path-column", default=None, help=f"manifest column with the video path (default: first of {PATH_COLUMNS})")
    parser.add_argument("--caption-column", default=None, help=f"manifest column with the caption (default: first of {CAPTION_COLUMNS})")
    add_common_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    return run_job(
        args, lambda: list_videos(args.input, args.root, args.path_column, args.caption_column), str(args.input)
    )


if __name__ == "__main__":
    main()
