"""Preemption: SIGTERM, SIGINT and SIGUSR1 stop a predict run within seconds, leaving nothing half done.

SLURM (before a preemption or at the time limit, ``--signal``), ``timeout``, container
stops and Ctrl-C send one of these. The handler raises :class:`Preempted` in the main
thread at once: the video being sampled is dropped (its latents deleted by the
pipeline's cleanup, its partial outputs by the writers'), no new video starts, the
report gets its last lines, claims are released, and the process exits with status
``128 + signal`` (143 for SIGTERM) so that the scheduler sees it did not finish. A
requeued job skips what was finished (:mod:`.resume`) and goes on with the rest.

Short steps that must not be cut in half (a claim file, a report line) run inside
:func:`critical`: a signal arriving then takes effect when the step ends.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Iterator

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


class Preempted(BaseException):
    """Raised in the main thread by a stop signal.

    A ``BaseException`` (like ``KeyboardInterrupt``): the per-video ``except Exception``
    that keeps a batch going past a bad file must not swallow it.
    """

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


class PreemptionGuard:
    """Installs the stop-signal handler (main thread only) until :meth:`restore`.

    Args:
        forward: called with the signal number first, e.g. to pass it on to child ranks.
    """

    def __init__(self, forward: Callable[[int], None] | None = None):
        self.forward = forward
        self.signum: int | None = None
        self._raised = False
        self._depth = 0
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def install(self) -> "PreemptionGuard":
        global _active
        if threading.current_thread() is not threading.main_thread():
            return self  # signals are only delivered to the main thread
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        _active = self
        return self

    def restore(self) -> None:
        global _active
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}
        if _active is self:
            _active = None

    def _handle(self, signum: int, frame) -> None:
        first = self.signum is None
        if first:
            self.signum = signum
            log.warning("%s received: stopping; the video in progress is dropped, finished ones are kept",
                        signal.Signals(signum).name)
            if self.forward is not None:
                self.forward(signum)
        if self._depth == 0:
            self._raise()

    def _raise(self) -> None:
        if not self._raised and self.signum is not None:
            self._raised = True  # once: a second signal must not cut the cleanup short
            raise Preempted(self.signum)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
        if self._depth == 0:
            self._raise()


_active: PreemptionGuard | None = None


@contextlib.contextmanager
def critical() -> Iterator[None]:
    """A step a stop signal must not interrupt (no-op without a guard or off the main thread)."""
    guard = _active
    if guard is None or threading.current_thread() is not threading.main_thread():
        yield
        return
    with guard.deferred():
        yield
