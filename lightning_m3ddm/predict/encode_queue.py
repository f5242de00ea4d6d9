"""Finished videos written on a background thread while the next one is sampled.

Writing a video (decoding its latents, compositing, H.264 with the audio) takes about
as long on the CPU as sampling it takes on an accelerator; done in the sampling thread,
it leaves the accelerator idle. :class:`BackgroundWrites` runs the writes on one thread
in order, with at most ``depth`` finished videos waiting (their latents are on disk, so
the bound is on disk space, not memory). PyAV and libx264 release the GIL while they
encode, and the decoding of latents is a separate (small) autoencoder call.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

_STOP = object()


class WriteAborted(BaseException):
    """Raised inside a write when the run stops: the output in progress is dropped."""


class BackgroundWrites:
    """One writer thread fed through a bounded queue.

    Args:
        write: called with each item, on the thread, in order; must not raise (record failures).
        discard: called with each item dropped by :meth:`abort` (e.g. delete its latents).
        depth: items that may wait while one is written.
    """

    def __init__(self, write: Callable[[Any], None], discard: Callable[[Any], None], depth: int = 1):
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.write = write
        self.discard = discard
        self.aborting = threading.Event()
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._thread = threading.Thread(target=self._run, name="m3ddm-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is _STOP:
                    return
                if self.aborting.is_set():
                    self.discard(item)
                else:
                    self.write(item)
            except WriteAborted:
                pass
            except Exception:  # write() records its own failures; this is a bug, keep the thread alive
                log.exception("writing a video failed unexpectedly")
            finally:
                self._queue.task_done()

    def put(self, item: Any) -> None:
        """Queue ``item`` (blocks while ``depth`` items wait)."""
        self._queue.put(item)

    def drain(self) -> None:
        """Wait until everything queued is written, then stop the thread."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()

    def abort(self, timeout: float = 20.0) -> None:
        """Drop what waits, stop the write in progress (it sees :attr:`aborting`), stop the thread."""
        self.aborting.set()
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP:
                self.discard(item)
            self._queue.task_done()
        if self._thread.is_alive():
            try:
                self._queue.put(_STOP, timeout=timeout)
            except queue.Full:
                pass
            self._thread.join(timeout)
