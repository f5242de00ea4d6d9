"""Checkpoint files that a save killed midway cannot destroy, and a clear error for a damaged one.

Lightning's default writer stages a checkpoint in the system's temporary folder and moves it
into place; when that folder is on another filesystem the move is a copy over the target, so
a ``kill -9`` during it leaves a truncated ``last.ckpt`` (and the resume then fails with a raw
``EOFError``). :class:`AtomicCheckpointIO` writes the temporary copy next to the target and
renames it over the target, which is atomic on a POSIX filesystem: the target is always
either the previous checkpoint or the new one, whole.
"""

from __future__ import annotations

import logging
import os
import zipfile
from pathlib import Path
from typing import Any, Callable

import torch
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.plugins.io import TorchCheckpointIO
from fsspec.implementations.local import LocalFileSystem

from lightning_m3ddm.checkpoints import CheckpointError

log = logging.getLogger(__name__)

PARTIAL_SUFFIX = ".partial"


def partial_path(path: str | Path) -> Path:
    """Where a checkpoint is written before it is renamed to ``path`` (same folder, hidden)."""
    path = Path(path)
    return path.with_name(f".{path.name}{PARTIAL_SUFFIX}")


def write_atomically(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call ``write(temporary_path)``, flush it to disk, then rename it over ``path``.

    On any failure the temporary file is removed and ``path`` is left as it was. A process
    killed outright leaves the temporary file behind; the next save to ``path`` overwrites it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(path)
    try:
        write(partial)
        fd = os.open(partial, os.O_RDONLY)
        try:
            os.fsync(fd)  # the data must be on disk before the rename makes it the checkpoint
        finally:
            os.close(fd)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:  # some filesystems cannot fsync a folder; the rename is still atomic
        pass


def checkpoint_file_problem(path: str | Path) -> str | None:
    """Why the file at ``path`` cannot be a whole ``torch.save`` checkpoint, or None.

    Only cheap checks (size, and the archive directory that ``torch.save`` writes last, so a
    truncated file lacks it); folders and missing paths are left to the loader.
    """
    path = Path(path)
    if not path.is_file():
        return None
    size = path.stat().st_size
    if size == 0:
        return f"{path}: the checkpoint file is empty (0 bytes), probably from an interrupted save; use an earlier one"
    if not zipfile.is_zipfile(path):
        return (
            f"{path}: not a readable checkpoint ({size} bytes without the archive directory that torch.save "
            "writes at the end): truncated by an interrupted save or copy, or not a checkpoint; use an earlier one"
        )
    return None


def _is_local(path: Any) -> bool:
    return isinstance(get_filesystem(path), LocalFileSystem)


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` that writes local checkpoints through :func:`write_atomically` and
    turns a truncated or corrupt file into one :class:`CheckpointError` naming it.

    Remote paths (``s3://`` ...) keep Lightning's writer: object stores publish an upload whole.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None or not _is_local(path):
            return super().save_checkpoint(checkpoint, path, storage_options=storage_options)
        write_atomically(path, lambda partial: torch.save(checkpoint, partial))

    def load_checkpoint(self, path, map_location: Any | None = lambda storage, loc: storage, weights_only: bool | None = None):
        if _is_local(path):
            problem = checkpoint_file_problem(path)
            if problem is not None:
                raise CheckpointError(problem)
        try:
            return super().load_checkpoint(path, map_location=map_location, weights_only=weights_only)
        except (EOFError, zipfile.BadZipFile) as err:
            raise CheckpointError(f"{path}: not a readable checkpoint, truncated or corrupt ({type(err).__name__}: {err})") from err
        except RuntimeError as err:
            if "PytorchStreamReader" not in str(err):
                raise
            raise CheckpointError(f"{path}: not a readable checkpoint, corrupt ({err})") from err


def use_atomic_checkpoint_io(trainer) -> None:
    """Give ``trainer`` an :class:`AtomicCheckpointIO` unless a custom CheckpointIO was chosen."""
    if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
        trainer.strategy.checkpoint_io = AtomicCheckpointIO()
