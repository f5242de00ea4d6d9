"""Pack a downloaded WebVid tree into WebDataset shards.

Reads the official WebVid CSV (columns videoid, contentUrl, duration,
page_dir, name) and resolves each row to ``<videos-root>/<page_dir>/<videoid>.mp4``;
the caption is ``name``. Rows whose file is missing are counted in the summary
(reason "missing"), not fatal, and keep their place in the shard layout so a
later run after more downloads rewrites only the shards that changed.

Shards written by video2dataset (mp4 + json + txt per sample) need no
conversion: pass them to M3DDMDataModule as they are.

Example::

    python -m data_prep.webvid --csv results_10M_train.csv --videos-root webvid/videos \\
        --output shards/webvid --resize-short-side 256 --workers 16
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from data_prep.sharding import VideoItem, add_common_arguments, run_job, sample_key

WEBVID_COLUMNS = ("videoid", "contentUrl", "duration", "page_dir", "name")


def read_webvid_csv(csv_path: Path, videos_root: Path, limit: int | None = None) -> list[VideoItem]:
    """One item per CSV row, in file order.

    Raises:
        FileNotFoundError: the CSV does not exist.
        ValueError: a required column (videoid, page_dir, name) is absent.
    """
    if not csv_path.is_file():
        raise FileNotFoundError(f"--csv {csv_path} does not exist")
    items = []
    with csv_path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in ("videoid", "page_dir", "name") if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{csv_path}: missing WebVid column(s) {missing}; found {reader.fieldnames}")
        for i, row in enumerate(reader):
            if limit is not None and i >= limit:
                break
            videoid = (row.get("videoid") or "").strip()
            page_dir = (row.get("page_dir") or "").strip()
            path = videos_root / page_dir / f"{videoid}.mp4"
            meta = {
                "videoid": videoid,
                "page_dir": page_dir,
                "content_url": row.get("contentUrl"),
                "webvid_duration": row.get("duration"),
            }
            items.append(VideoItem(path=str(path), key=sample_key(i, videoid), caption=(row.get("name") or "").strip() or None, meta=meta))
    return items


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m data_prep.webvid", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--csv", required=True, type=Path, help="official WebVid CSV (videoid, contentUrl, duration, page_dir, name)")
    parser.add_argument("--videos-root", required=True, type=Path, help="downloaded tree: ROOT/<page_dir>/<videoid>.mp4")
    parser.add_argument("--limit", type=int, default=None, help="only the first N rows (for trials)")
    add_common_arguments(parser)
    parser.set_defaults(prefix="webvid")
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    return run_job(args, lambda: read_webvid_csv(args.csv, args.videos_root, args.limit), str(args.csv))


if __name__ == "__main__":
    main()
