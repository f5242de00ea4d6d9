"""Which videos a process takes: array-job shares, static rank shares, longest-first order.

Pure functions on job lists (no files, no model), used by the job stream of
:mod:`.batch_job`:

* ``--num_jobs n --job_index i`` (SLURM array jobs, as ``data_prep``): job ``i`` takes the
  videos ``k`` with ``k % n == i`` of the resolved input list, so ``n`` array tasks
  together do every video once whatever else they share;
* ``static`` assignment: rank ``r`` of ``w`` takes every ``w``-th of those (Lightning's
  distributed sampler does the same), and each loader worker every ``n``-th of the rank's;
* ``balanced`` assignment: every rank and worker walks the whole list, longest video first,
  and takes the next one no one has claimed (:mod:`.claims`): the long videos start first
  and the short ones fill the gaps, so ranks finish together (the longest few are dealt
  greedily first, :func:`claim_order`, since a rank takes several at once when it
  prepares ahead). Lengths come from the
  container headers (about 2 ms a file), or from file sizes for lists of more than
  ``HEADER_PROBE_LIMIT`` videos.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Literal, TypeVar

from lightning_m3ddm.video.decode import header_frame_count


Assignment = Literal["balanced", "static"]
T = TypeVar("T")


def array_share(items: Sequence[T], num_jobs: int, job_index: int) -> list[T]:
    """The items of array job ``job_index`` of ``num_jobs`` (round robin over the list)."""
    if num_jobs < 1 or not 0 <= job_index < num_jobs:
        raise ValueError(f"--job_index must be in [0, --num_jobs), got {job_index} of {num_jobs}")
    return [item for k, item in enumerate(items) if k % num_jobs == job_index]


def static_share(items: Sequence[T], rank: int, world_size: int, worker: int = 0, num_workers: int = 1) -> list[T]:
    """Rank ``rank``'s items, then loader worker ``worker``'s part of them."""
    return list(items[rank::world_size][worker::num_workers])


def claim_order(items: Sequence[T], lengths: Sequence[float], rank: int, world_size: int, depth: int = 1) -> list[T]:
    """The order in which rank ``rank`` tries to claim ``items`` (sorted longest first, with their ``lengths``).

    A rank holds up to ``depth`` videos at once (the one sampling and those fetched or
    prepared ahead), so left to race at the start one rank could take several of the
    longest. The first ``world_size x depth`` items are therefore dealt greedily, each to
    the rank with the least frames so far that has room (longest processing time first);
    a rank tries its own of them first, then the whole list in order (another rank's that
    is still unclaimed, say of a rank that is late or gone, included).
    """
    deal = min(len(items), world_size * max(1, depth))
    load, held = [0.0] * world_size, [0] * world_size
    own = []
    for k in range(deal):
        to = min((r for r in range(world_size) if held[r] < max(1, depth)), key=lambda r: (load[r], r))
        load[to] += lengths[k]
        held[to] += 1
        if to == rank:
            own.append(k)
    taken = set(own)
    return [items[k] for k in own] + [item for k, item in enumerate(items) if k not in taken]


def longest_first(items: Sequence[T], length: Callable[[T], float]) -> list[T]:
    """``items`` by decreasing ``length``; ties keep the input order."""
    return sorted(items, key=lambda item: -length(item))


HEADER_PROBE_LIMIT = 5000  # ~2 ms per header: beyond this many videos, order by file size instead


def length_estimates(paths: Sequence[str]) -> list[float]:
    """A length per video to order by: header frame counts, or file sizes for long lists (a stat each)."""
    if len(paths) <= HEADER_PROBE_LIMIT:
        return [header_frame_count(p) for p in paths]
    sizes = []
    for p in paths:
        try:
            sizes.append(float(os.path.getsize(p)))
        except OSError:
            sizes.append(0.0)
    return sizes


