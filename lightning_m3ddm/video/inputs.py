"""Input entries of a run -> the videos they name (predict and evaluate alike; no decoding).

An entry is one of:

* a video path;
* a glob (``videos/*.mp4``, ``**`` recursive), sorted;
* a folder: the video files directly inside it, natural name order (``v2`` before ``v10``);
* a list file (``.txt``, ``.list``, ``.lst``): one entry per line, relative to the list
  file's folder (list files do not nest); blank lines and ``#`` comments skipped. A line
  may carry, after a TAB, that video's own settings (``clip.mp4<TAB>9:16,1:1``): they
  come back as :attr:`InputItem.spec`, for the command to parse.

With ``frame_folders`` (evaluate: DAVIS / YouTube-VOS) a folder of frame images
(``.jpg``/``.jpeg``/``.png``, natural name order) is one video, and a folder or glob
also yields the frame folders directly inside it / matched by it.

An entry that names no video becomes one item with :attr:`InputItem.error` set (missing
path, empty folder, pattern matching nothing, list file naming nothing): the command
reports it, naming the path, and goes on with the others.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from lightning_m3ddm.video.decode import VIDEO_EXTENSIONS

FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png")
LIST_SUFFIXES = (".txt", ".list", ".lst")
_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class InputItem:
    """One video named by an input entry.

    Attributes:
        path: the file or frame folder (resolved against a list file's folder).
        kind: ``"file"`` or ``"frames"`` (a folder of frame images).
        spec: the list-file line's text after a TAB, or ``None``.
        error: why this entry names no usable video (without the path), or ``None``.
    """

    path: Path
    kind: Literal["file", "frames"] = "file"
    spec: str | None = None
    error: str | None = None

    @property
    def name(self) -> str:
        """Output / result name before de-duplication: a file's stem, a frame folder's name."""
        return (self.path.name if self.kind == "frames" else self.path.stem) or "video"


def natural_key(name: str) -> tuple:
    """Sort key that orders ``frame2`` before ``frame10``."""
    return tuple(int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name))


def frame_files(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, natural order."""
    return sorted(
        (p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in FRAME_EXTENSIONS),
        key=lambda p: natural_key(p.name),
    )


def _is_video_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in VIDEO_EXTENSIONS


def _is_frame_folder(path: Path) -> bool:
    return path.is_dir() and bool(frame_files(path))


def expand_inputs(entries: str | os.PathLike | Sequence[str | os.PathLike], frame_folders: bool = False) -> list[InputItem]:
    """The videos named by ``entries`` (module docstring), in the order given."""
    if isinstance(entries, (str, os.PathLike)):
        entries = [entries]
    return [item for entry in entries for item in _expand(os.fspath(entry), None, True, frame_folders)]


def _expand(entry: str, base: Path | None, allow_lists: bool, frame_folders: bool) -> list[InputItem]:
    text = entry.strip()
    path = Path(text).expanduser()
    if base is not None and not path.is_absolute():
        path = base / path
    # A file whose name holds "[" is taken as it is; only a path that does not exist is a pattern.
    if _GLOB_CHARS & set(text) and not path.exists():
        items = []
        for match in map(Path, sorted(glob.glob(str(path), recursive=True))):
            if not match.is_dir():
                items.append(InputItem(match))
            elif frame_folders and _is_frame_folder(match):
                items.append(InputItem(match, "frames"))
        what = "file or frame folder" if frame_folders else "file"
        return items or [InputItem(path, error=f"no {what} matches this pattern")]
    if path.is_dir():
        if frame_folders and frame_files(path):
            return [InputItem(path, "frames")]
        children = sorted(path.iterdir(), key=lambda p: natural_key(p.name))
        items = [
            InputItem(child, "frames") if child.is_dir() else InputItem(child)
            for child in children
            if _is_video_file(child) or (frame_folders and _is_frame_folder(child))
        ]
        if items:
            return items
        if frame_folders:
            return [InputItem(path, "frames", error=(
                f"folder holds no frame images ({', '.join(FRAME_EXTENSIONS)}), no video file and no frame folder"))]
        return [InputItem(path, error=f"folder holds no video file ({', '.join(VIDEO_EXTENSIONS)})")]
    if allow_lists and path.suffix.lower() in LIST_SUFFIXES and path.is_file():
        items = []
        for line in path.read_text().splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            name, _, spec = line.partition("\t")
            for item in _expand(name, path.parent, False, frame_folders):
                items.append(InputItem(item.path, item.kind, spec.strip() or None, item.error))
        return items or [InputItem(path, error="list file names no video")]
    if not path.exists():
        # Said here, before any worker opens it, in the same words for every command.
        return [InputItem(path, error="no such file or folder")]
    return [InputItem(path)]
