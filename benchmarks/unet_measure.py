"""Timing and peak-memory helpers shared by bench_unet.py and official_unet_driver.py.

Standard library and torch only: the official-model driver runs in another Python
environment (the released code's), which has neither this package nor psutil.

Peak memory on CPU is the process's peak resident set size (``getrusage`` ru_maxrss)
minus its resident size right after the imports, so each configuration must run in
a process of its own for the number to be clean. On CUDA it is
``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import threading
import time
from typing import Callable

GIB = 1024**3


def rss_bytes() -> int:
    """Current resident set size of this process."""
    with open("/proc/self/statm") as fh:
        resident_pages = int(fh.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def mem_available_bytes() -> int:
    """MemAvailable from /proc/meminfo (what the kernel can hand out without swapping)."""
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def load_average() -> tuple[float, float, float]:
    return tuple(round(x, 2) for x in os.getloadavg())


class MemoryGuard:
    """Stops the process (exit code 3) before its resident size passes ``limit_bytes``.

    A configuration too large for the machine would otherwise push the shared machine
    into the OOM killer; the parent reports the stop as a skip with this reason.
    """

    EXIT_CODE = 3

    def __init__(self, limit_bytes: int, interval_s: float = 0.02):
        self.limit_bytes = limit_bytes
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.wait(self.interval_s):
            rss = rss_bytes()
            if rss > self.limit_bytes:
                sys.stderr.write(
                    f"MEMORY_GUARD: resident size {rss / GIB:.2f} GiB passed the limit of "
                    f"{self.limit_bytes / GIB:.2f} GiB\n"
                )
                sys.stderr.flush()
                os._exit(self.EXIT_CODE)

    def __enter__(self) -> "MemoryGuard":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def timed_runs(step: Callable[[], dict[str, float]], warmup: int, repeats: int) -> list[dict[str, float]]:
    """Run ``step`` warmup + repeats times; return the per-phase seconds of the timed runs."""
    for _ in range(warmup):
        step()
    return [step() for _ in range(repeats)]


def medians(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


class PhaseClock:
    """Seconds of consecutive phases, synchronising CUDA at each boundary.

    ``times[name]`` is wall-clock; ``times[name + "_cpu"]`` the process's CPU time (all its
    threads). On a machine shared with other jobs the wall clock of a multi-threaded run
    swings widely, while the CPU time of a single-threaded run stays close to the work done.
    """

    def __init__(self, cuda: bool):
        self.cuda = cuda
        self.times: dict[str, float] = {}
        self._sync()
        self._t = time.perf_counter()
        self._c = time.process_time()

    def _sync(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()

    def lap(self, name: str) -> None:
        self._sync()
        now, cpu = time.perf_counter(), time.process_time()
        self.times[name] = now - self._t
        self.times[name.replace("_s", "_cpu_s")] = cpu - self._c
        self._t, self._c = now, cpu

    def total(self, name: str) -> dict[str, float]:
        """The times so far plus their sum as ``name`` (wall) and its CPU twin."""
        wall = sum(v for k, v in self.times.items() if not k.endswith("_cpu_s"))
        cpu = sum(v for k, v in self.times.items() if k.endswith("_cpu_s"))
        return {**self.times, name: wall, name.replace("_s", "_cpu_s"): cpu}


def emit(result: dict) -> None:
    """The worker's answer: one JSON line on stdout, prefixed so the parent finds it among logs."""
    sys.stdout.write("RESULT " + json.dumps(result) + "\n")
    sys.stdout.flush()


def parse_result(stdout: str) -> dict | None:
    for line in reversed(stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    return None
