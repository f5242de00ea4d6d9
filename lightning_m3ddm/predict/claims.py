"""Who works on which video: process leases and atomic claim files in the output folder.

Every process of a predict run (each rank, on any node) holds a *lease*: a file
``DIR/.m3ddm/leases/<host>.<pid>`` whose modification time a heartbeat thread renews.
A video is taken by creating ``DIR/.m3ddm/claims/<stem>`` with ``O_CREAT | O_EXCL``,
which succeeds for exactly one process even across nodes sharing the folder; the
claim names its owner's lease. Ranks and loader workers claim the next free video
when they are ready for one, so they finish together whatever the mix of lengths
(dynamic load balancing without a coordinator).

A claim stays until its owner's run ends (so no other rank of the same run takes a
video that was finished or failed, and the report names each video once); the owner
removes its claims when it ends, preempted or not. The claim of a process that died
(``kill -9``, a lost node) is *stale* and taken over: its owner is on this host and
no longer running, or its lease was not renewed for ``lease_timeout_s``.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

STATE_DIR = ".m3ddm"
HEARTBEAT_S = 30.0
LEASE_TIMEOUT_S = 300.0  # ten missed heartbeats: the node is gone
UNREADABLE_GRACE_S = 10.0  # a claim still empty after this was cut short by a kill


def host_name() -> str:
    return socket.gethostname().replace("/", "_") or "host"


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host (a zombie counts as gone)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True  # no /proc (macOS): kill(0) said it exists


@dataclass(frozen=True)
class Owner:
    """A process of a run: where it runs, its pid, its run and rank."""

    host: str
    pid: int
    run_id: str = ""
    rank: int = 0

    @property
    def lease_name(self) -> str:
        return f"{self.host}.{self.pid}"

    @classmethod
    def current(cls, run_id: str = "", rank: int = 0) -> "Owner":
        return cls(host_name(), os.getpid(), run_id, rank)


def is_stale(owner_host: str, owner_pid: int, lease_age_s: float | None, here: str, alive, timeout_s: float) -> bool:
    """Whether a claim (or leftover) of ``owner_host``/``owner_pid`` may be taken over.

    Pure: ``lease_age_s`` is the age of the owner's lease (None: no lease), ``alive`` a
    pid -> bool check valid on host ``here``.
    """
    if owner_host == here and not alive(owner_pid):
        return True
    return lease_age_s is None or lease_age_s > timeout_s


class ClaimBook:
    """Leases and claims under ``folder/.m3ddm`` for one process (``owner``).

    Args:
        folder: the output folder, shared by every process of the run.
        owner: this process.
        lease_timeout_s: a lease older than this belongs to a dead process.
        heartbeat_s: how often the lease is renewed.
    """

    def __init__(self, folder: str | os.PathLike, owner: Owner, lease_timeout_s: float = LEASE_TIMEOUT_S,
                 heartbeat_s: float = HEARTBEAT_S):
        self.root = Path(folder) / STATE_DIR
        self.claims_dir = self.root / "claims"
        self.leases_dir = self.root / "leases"
        self.owner = owner
        self.lease_timeout_s = lease_timeout_s
        self.heartbeat_s = heartbeat_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __getstate__(self) -> dict:  # loader workers (spawn) get a copy without the heartbeat thread
        state = dict(self.__dict__)
        state["_stop"], state["_thread"] = None, None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._stop = threading.Event()

    # -- leases ------------------------------------------------------------------------

    @property
    def lease_path(self) -> Path:
        return self.leases_dir / self.owner.lease_name

    def start(self) -> None:
        """Take the lease and renew it in the background until :meth:`stop`."""
        self.claims_dir.mkdir(parents=True, exist_ok=True)
        self.leases_dir.mkdir(parents=True, exist_ok=True)
        self.lease_path.write_text(json.dumps(asdict(self.owner)))
        self._stop.clear()
        self._thread = threading.Thread(target=self._renew, name="m3ddm-lease", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                os.utime(self.lease_path)
            except FileNotFoundError:  # removed by hand or by a confused peer: take it again
                self.lease_path.write_text(json.dumps(asdict(self.owner)))
            except OSError:
                pass  # a hiccup of a network folder; the next beat retries

    def stop(self) -> None:
        """Release every claim of this process and the lease (idempotent)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        for claim in self.own_claims():
            claim.unlink(missing_ok=True)
        self.lease_path.unlink(missing_ok=True)

    def lease_age(self, host: str, pid: int) -> float | None:
        try:
            return max(0.0, time.time() - (self.leases_dir / f"{host}.{pid}").stat().st_mtime)
        except OSError:
            return None

    def owner_is_gone(self, host: str, pid: int) -> bool:
        return is_stale(host, pid, self.lease_age(host, pid), host_name(), pid_alive, self.lease_timeout_s)

    def live_pids(self) -> set[int]:
        """Pids with a fresh lease (any host), minus this host's dead ones."""
        pids = {os.getpid()}
        for host, pid in self.leases():
            if not self.owner_is_gone(host, pid):
                pids.add(pid)
        return pids

    def leases(self) -> list[tuple[str, int]]:
        """(host, pid) of every lease file."""
        found = []
        for lease in self.leases_dir.iterdir() if self.leases_dir.is_dir() else ():
            host, _, pid = lease.name.rpartition(".")
            if host and pid.isdigit():
                found.append((host, int(pid)))
        return found

    # -- claims ------------------------------------------------------------------------

    def claim_path(self, stem: str) -> Path:
        return self.claims_dir / stem

    def claim(self, stem: str) -> bool:
        """Take video ``stem`` for this process; False when a live process holds it."""
        path = self.claim_path(stem)
        record = json.dumps(asdict(self.owner)).encode()
        for _ in range(2):
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                if not self._take_over(path):
                    return False
                continue
            try:
                os.write(fd, record)
            finally:
                os.close(fd)
            return True
        return False

    def _take_over(self, path: Path) -> bool:
        """Remove a stale claim (only one of several contenders succeeds); True if it is gone."""
        holder = read_claim(path)
        if holder is None:  # vanished, being written this instant, or left empty by a kill in between
            try:
                if time.time() - path.stat().st_mtime < UNREADABLE_GRACE_S:
                    return False
            except FileNotFoundError:
                return True
        elif holder == self.owner:
            return False  # ours already (a loader worker of this process took it)
        elif not self.owner_is_gone(holder.host, holder.pid):
            return False
        grave = path.with_name(f".{path.name}.stale.{host_name()}.{os.getpid()}")
        try:
            os.rename(path, grave)  # atomic: one contender wins the stale claim
        except FileNotFoundError:
            return True
        grave.unlink(missing_ok=True)
        return True

    def own_claims(self) -> list[Path]:
        if not self.claims_dir.is_dir():
            return []
        return [p for p in self.claims_dir.iterdir() if not p.name.startswith(".") and read_claim(p) == self.owner]

    def release(self, stem: str) -> None:
        """Give a claim back before the run ends (a video this process will not do)."""
        if read_claim(self.claim_path(stem)) == self.owner:
            self.claim_path(stem).unlink(missing_ok=True)


def read_claim(path: Path) -> Owner | None:
    try:
        data = json.loads(path.read_text())
        return Owner(str(data["host"]), int(data["pid"]), str(data.get("run_id", "")), int(data.get("rank", 0)))
    except (OSError, ValueError, KeyError, TypeError):
        return None
