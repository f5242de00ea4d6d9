"""The training bar of a step-bounded run counts the run's steps (not "Epoch 3/-2", not 100, 92, 84, ...)."""

import lightning as L
import torch
from torch.utils.data import DataLoader, IterableDataset

from lightning_m3ddm.progress import RunProgressBar, counts_run_steps


class EightBatches(IterableDataset):
    """A stream without a length, like a WebDataset: Lightning cannot know the epoch's size."""

    def __iter__(self):
        for _ in range(8):
            yield torch.randn(2)


class Linear(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class BarSpy(L.Callback):
    def __init__(self):
        self.seen = []

    def on_train_epoch_end(self, trainer, pl_module):
        bar = next(c for c in trainer.callbacks if isinstance(c, RunProgressBar)).train_progress_bar
        self.seen.append((trainer.current_epoch, bar.total, bar.n))


def test_step_bounded_run_shows_its_steps_across_epochs(tmp_path):
    spy = BarSpy()
    trainer = L.Trainer(
        max_steps=20, callbacks=[RunProgressBar(), spy], logger=False, enable_checkpointing=False,
        enable_model_summary=False, accelerator="cpu", default_root_dir=tmp_path,
    )
    trainer.fit(Linear(), DataLoader(EightBatches(), batch_size=None))
    assert spy.seen == [(0, 20, 8), (1, 20, 16), (2, 20, 20)]  # Lightning's own: totals 20, 12, 4 from 0 each


def test_only_step_bounded_runs_count_steps():
    assert counts_run_steps(-1, 100)
    assert not counts_run_steps(5, -1) and not counts_run_steps(-1, -1) and not counts_run_steps(3, 100)


def test_fit_cli_installs_the_bar_unless_disabled_or_configured(tmp_path, monkeypatch):
    from pathlib import Path

    from lightning_m3ddm.cli import M3DDMCLI, M3DDMTrainer

    config = str(Path(__file__).parents[1] / "configs" / "tiny_cpu.yaml")

    def bars(*extra):
        cli = M3DDMCLI(
            L.LightningModule, L.LightningDataModule, trainer_class=M3DDMTrainer, subclass_mode_model=True,
            subclass_mode_data=True, run=False, auto_configure_optimizers=False,
            args=["--config", config, f"--trainer.default_root_dir={tmp_path}", "--trainer.logger=false", *extra],
        )
        return [type(c).__name__ for c in cli.trainer.callbacks if isinstance(c, L.pytorch.callbacks.ProgressBar)]

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["lightning_m3ddm"])
    assert bars() == ["RunProgressBar"]
    assert bars("--trainer.callbacks=lightning.pytorch.callbacks.TQDMProgressBar") == ["TQDMProgressBar"]
    assert bars("--trainer.enable_progress_bar=false") == []
