"""Where a rank's training data stream stands within an epoch, so that a resumed run continues it exactly.

A rank's stream is read by W DataLoader workers (W = 1 without worker processes). The
DataLoader takes their batches in turn (worker 0, 1, ..., W-1, 0, ...) and leaves a worker
out once it has run dry. A worker's shards, their sample order and every sample's random
draws are fixed by (seed, epoch, rank, worker), so how far a worker got is two numbers: the
samples it has read (corrupt ones included) and the batches it made from them.

To continue after the batches delivered so far, each worker reads past the samples it had
read when its last delivered batch was made (without decoding them), and the turn order
starts at the worker after the one that made the last batch. The DataLoader always starts
with its worker 0, so workers are renumbered: DataLoader worker p plays the role of worker
(p + first_worker) mod W.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class EpochPlan:
    """What a training stream does in one epoch.

    Args:
        epoch: the epoch index (seeds shard order, shuffling and per-sample draws).
        first_worker: the role of DataLoader worker 0 (see the module docstring).
        samples_read / batches_made: per role, what was already consumed in this epoch
            (empty: the epoch starts from its beginning).
    """

    epoch: int
    first_worker: int = 0
    samples_read: tuple[int, ...] = ()
    batches_made: tuple[int, ...] = ()

    def role(self, worker: int, num_streams: int) -> int:
        return (worker + self.first_worker) % num_streams

    def samples_to_skip(self, role: int) -> int:
        return self.samples_read[role] if role < len(self.samples_read) else 0

    def batches_done(self, role: int) -> int:
        return self.batches_made[role] if role < len(self.batches_made) else 0

    @property
    def resumed(self) -> bool:
        return any(self.samples_read) or any(self.batches_made)


@dataclass
class StreamProgress:
    """The batches of one epoch delivered to training so far, per worker role."""

    epoch: int
    num_streams: int
    samples_read: list[int] = field(default_factory=list)
    batches_made: list[int] = field(default_factory=list)
    next_worker: int = 0

    @classmethod
    def start(cls, plan: EpochPlan, num_streams: int) -> "StreamProgress":
        return cls(
            plan.epoch,
            num_streams,
            [plan.samples_to_skip(r) for r in range(num_streams)],
            [plan.batches_done(r) for r in range(num_streams)],
            plan.first_worker % num_streams,
        )

    def record(self, role: int, samples_read: int, batches_made: int) -> None:
        """A batch reached training: worker ``role`` made it as its ``batches_made``-th of the
        epoch, after reading ``samples_read`` samples."""
        if not 0 <= role < self.num_streams:
            raise ValueError(f"batch from worker {role}, but the stream has {self.num_streams} worker(s)")
        self.samples_read[role] = samples_read
        self.batches_made[role] = batches_made
        self.next_worker = (role + 1) % self.num_streams

    @property
    def batches(self) -> int:
        """Batches of this epoch delivered so far (before and after any resume)."""
        return sum(self.batches_made)

    def plan(self) -> EpochPlan:
        """The plan that continues right after the last recorded batch."""
        return EpochPlan(self.epoch, self.next_worker, tuple(self.samples_read), tuple(self.batches_made))

    def state_dict(self) -> dict:
        return dict(
            epoch=self.epoch,
            num_streams=self.num_streams,
            samples_read=list(self.samples_read),
            batches_made=list(self.batches_made),
            next_worker=self.next_worker,
        )


def continuation_plan(
    saved: dict | None,
    *,
    epoch: int,
    rank: int,
    world_size: int,
    num_streams: int,
    batches_done: int | None = None,
) -> tuple[EpochPlan, str | None]:
    """The plan for ``epoch`` after a resume from ``saved`` (see :meth:`M3DDMDataModule.state_dict`),
    and a warning when the saved position cannot be continued exactly.

    ``batches_done``: the batches of this epoch the trainer counts as done, checked against the
    saved position. A saved position of an earlier epoch means that epoch had ended: the new one
    starts from its beginning, without warning.
    """
    fresh = EpochPlan(epoch)
    ranks = (saved or {}).get("ranks") or []
    if not ranks or all(entry is None for entry in ranks):
        return fresh, None
    if len(ranks) != world_size:
        return fresh, (
            f"the checkpoint's data position was saved with {len(ranks)} rank(s), this run has {world_size}: "
            f"epoch {epoch} restarts from its beginning"
        )
    entry = ranks[rank]
    if entry is None or entry["epoch"] < epoch:
        return fresh, None
    if entry["epoch"] > epoch:
        return fresh, f"the checkpoint's data position is in epoch {entry['epoch']}, the trainer resumes epoch {epoch}"
    if entry["num_streams"] != num_streams:
        return fresh, (
            f"the checkpoint's data position was saved with {entry['num_streams']} data worker(s) per rank, "
            f"this run has {num_streams}: epoch {epoch} restarts from its beginning"
        )
    progress = StreamProgress(
        epoch, num_streams, list(entry["samples_read"]), list(entry["batches_made"]), entry["next_worker"]
    )
    if batches_done is not None and batches_done != progress.batches:
        return fresh, (
            f"the checkpoint's data position ({progress.batches} batches of epoch {epoch}) disagrees with the "
            f"trainer's ({batches_done}): epoch {epoch} restarts from its beginning"
        )
    return progress.plan(), None
