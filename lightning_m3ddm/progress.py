"""The training progress bar: optimizer steps of the whole run when the run is bounded by steps.

Lightning's default bars read badly for a run bounded by ``max_steps`` (``max_epochs = -1``):
the Rich bar names the epoch "Epoch 3/-2", and the TQDM bar's per-epoch total is
``min(batches per epoch, steps left in the run)``, which for a loader without a length
(a WebDataset stream) is the steps left: an 8-step epoch shows 100, 92, 84, ... and never
fills. :class:`RunProgressBar` counts the run's steps instead (``Epoch 3: 24/100``); runs
bounded by epochs keep Lightning's per-epoch bar.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar


def counts_run_steps(max_epochs: int | None, max_steps: int | None) -> bool:
    """True for a run bounded by steps only (Lightning sets ``max_epochs = -1`` then)."""
    return max_epochs == -1 and max_steps is not None and max_steps > 0


class RunProgressBar(TQDMProgressBar):
    """TQDM bar whose training total is ``max_steps`` and position the global step, in step-bounded runs."""

    def on_train_epoch_start(self, trainer: L.Trainer, *args: Any) -> None:
        super().on_train_epoch_start(trainer, *args)
        if counts_run_steps(trainer.max_epochs, trainer.max_steps) and self.train_progress_bar is not None:
            bar = self.train_progress_bar
            bar.total = trainer.max_steps
            bar.n = bar.initial = trainer.global_step  # initial: the rate counts this run's steps only
            bar.refresh()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        if not counts_run_steps(trainer.max_epochs, trainer.max_steps):
            return super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        bar = self.train_progress_bar
        step = trainer.global_step
        if bar is not None and not bar.disable and (step % self.refresh_rate == 0 or step == bar.total):
            bar.n = step
            bar.set_postfix(self.get_metrics(trainer, pl_module))  # refreshes the bar
