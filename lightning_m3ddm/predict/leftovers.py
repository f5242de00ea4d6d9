"""Leftovers of killed predict runs: found by the name their owner gave them, removed at start.

A process killed without warning (``kill -9``, out of memory, a lost node) leaves

* ``.<name>.<pid>.partial.mp4`` files in the output folder (outputs being written,
  :func:`~lightning_m3ddm.video.stream.partial_path`);
* ``m3ddm-predict-<pid>@<host>-*`` folders of per-frame latents and
  ``m3ddm-prepared-<pid>@<host>-*`` folders of prepared canvases in the work folder
  (the system temp folder by default), tens of MB per video;
* claim files and a lease under ``.m3ddm/`` (:mod:`.claims`).

Each name carries its owner's pid (and host), so a new run removes exactly those whose
owner is gone and leaves alone what a live process, here or on another node sharing the
folder, is writing.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from lightning_m3ddm.predict.claims import ClaimBook, host_name, pid_alive, read_claim

log = logging.getLogger(__name__)

WORK_PREFIXES = ("m3ddm-predict-", "m3ddm-prepared-")
_PARTIAL = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.partial(?P<suffix>\.[^.]+)$")
_WORK = re.compile(r"^m3ddm-(?:predict|prepared)-(?P<pid>\d+)@(?P<host>.+)-[A-Za-z0-9_]+$")


def owner_tag(pid: int | None = None) -> str:
    """``<pid>@<host>``: the part of a work folder's name that says whose it is."""
    return f"{os.getpid() if pid is None else pid}@{host_name()}"


def partial_owner(name: str) -> int | None:
    """The pid in a partial output's name, None when ``name`` is not one."""
    match = _PARTIAL.match(name)
    return int(match["pid"]) if match else None


def work_folder_owner(name: str) -> tuple[str, int] | None:
    """(host, pid) in a latent / prepared folder's name, None when ``name`` is not one."""
    match = _WORK.match(name)
    return (match["host"], int(match["pid"])) if match else None


@dataclass
class Removed:
    partial_files: list[Path]
    work_folders: list[Path]
    claims: list[Path]
    leases: list[Path]

    @property
    def count(self) -> int:
        return len(self.partial_files) + len(self.work_folders) + len(self.claims) + len(self.leases)


def remove_leftovers(output_dir: str | os.PathLike, work_dir: str | os.PathLike | None, book: ClaimBook) -> Removed:
    """Remove what dead processes left in ``output_dir`` and ``work_dir``; returns what went.

    Args:
        output_dir: the run's output folder (partial outputs, claims, leases).
        work_dir: where latents go (None: the system temp folder).
        book: this process's claims (tells live owners from dead ones).
    """
    here = host_name()
    live = book.live_pids()
    removed = Removed([], [], [], [])
    for path in Path(output_dir).iterdir():
        pid = partial_owner(path.name)
        # no host in the name: only a pid that runs nowhere (here or with a fresh lease) is dead
        if pid is not None and pid not in live and not pid_alive(pid):
            path.unlink(missing_ok=True)
            removed.partial_files.append(path)
    work = Path(work_dir) if work_dir is not None else Path(tempfile.gettempdir())
    if work.is_dir():
        for path in work.iterdir():
            owner = work_folder_owner(path.name)
            if owner is not None and owner[0] == here and not pid_alive(owner[1]) and path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
                removed.work_folders.append(path)
    if book.claims_dir.is_dir():
        for path in book.claims_dir.iterdir():
            holder = read_claim(path)
            if holder is not None and holder != book.owner and book.owner_is_gone(holder.host, holder.pid):
                path.unlink(missing_ok=True)
                removed.claims.append(path)
    for host, pid in book.leases():
        if (host, pid) != (book.owner.host, book.owner.pid) and book.owner_is_gone(host, pid):
            lease = book.leases_dir / f"{host}.{pid}"
            lease.unlink(missing_ok=True)
            removed.leases.append(lease)
    if removed.count:
        log.info(
            "removed leftovers of stopped runs: %d partial output(s), %d latent folder(s), %d claim(s)",
            len(removed.partial_files), len(removed.work_folders), len(removed.claims),
        )
    return removed
