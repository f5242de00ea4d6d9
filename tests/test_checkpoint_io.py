"""Checkpoint saves that a failure or a kill cannot turn into a damaged last.ckpt; damaged files named clearly."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import lightning as L
import pytest
import torch

from lightning_m3ddm.checkpoint_io import AtomicCheckpointIO, checkpoint_file_problem, partial_path
from lightning_m3ddm.checkpoints import CheckpointError
from lightning_m3ddm.cli import M3DDMTrainer, main

ROOT = Path(__file__).parent.parent
GOOD = {"state_dict": {"w": torch.arange(6.0)}, "global_step": 3}


def _half_written_then(error: BaseException):
    """A torch.save that writes part of the file, then fails."""

    def save(obj, f):
        Path(f).write_bytes(b"PK\x03\x04" + b"\x00" * 1000)
        raise error

    return save


def test_a_failed_save_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    target = tmp_path / "ckpts" / "last.ckpt"
    io.save_checkpoint(GOOD, target)
    monkeypatch.setattr(torch, "save", _half_written_then(OSError(28, "No space left on device")))
    with pytest.raises(OSError, match="No space left"):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(6)}, "global_step": 4}, target)
    monkeypatch.undo()
    assert sorted(p.name for p in target.parent.iterdir()) == ["last.ckpt"]  # no temporary file left
    loaded = io.load_checkpoint(target)
    assert loaded["global_step"] == 3 and torch.equal(loaded["state_dict"]["w"], GOOD["state_dict"]["w"])


@pytest.mark.timeout(120)
def test_kill_9_during_a_save_keeps_the_last_good_checkpoint(tmp_path):
    """The reported case: TMPDIR elsewhere (on another filesystem when /dev/shm exists), kill -9 mid-save."""
    target = tmp_path / "last.ckpt"
    other = Path("/dev/shm") if Path("/dev/shm").is_dir() and os.access("/dev/shm", os.W_OK) else tmp_path / "tmp"
    other.mkdir(exist_ok=True)
    script = textwrap.dedent(f"""
        import sys, time, torch
        from lightning_m3ddm.checkpoint_io import AtomicCheckpointIO
        io = AtomicCheckpointIO()
        io.save_checkpoint({{"global_step": 3, "w": torch.arange(6.0)}}, {str(target)!r})
        def slow_save(obj, f):
            with open(f, "wb") as out:
                out.write(b"\\0" * 100000)
                out.flush()
                print("writing", flush=True)
                time.sleep(60)
        torch.save = slow_save
        io.save_checkpoint({{"global_step": 4}}, {str(target)!r})
    """)
    env = dict(os.environ, TMPDIR=str(other), PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.strip() == "writing", proc.stderr.read()
        assert partial_path(target).stat().st_size == 100000  # the new checkpoint is being written beside it
        proc.kill()
    finally:
        proc.wait(timeout=30)
    assert checkpoint_file_problem(target) is None
    assert torch.load(target, weights_only=True)["global_step"] == 3
    AtomicCheckpointIO().save_checkpoint({"global_step": 5}, target)  # the leftover is simply overwritten
    assert not partial_path(target).exists() and torch.load(target, weights_only=True)["global_step"] == 5


class _Tiny(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(2))

    def training_step(self, batch, batch_idx):
        return (self.w - batch).square().sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _damaged(tmp_path) -> dict[str, Path]:
    good = tmp_path / "good.ckpt"
    torch.save({"global_step": 1, "w": torch.arange(100.0)}, good)
    data = good.read_bytes()
    empty, truncated = tmp_path / "empty.ckpt", tmp_path / "truncated.ckpt"
    empty.write_bytes(b"")
    truncated.write_bytes(data[: len(data) // 2])
    return {"empty": empty, "truncated": truncated}


def test_trainer_resuming_from_a_damaged_checkpoint_names_it(tmp_path):
    for kind, path in _damaged(tmp_path).items():
        problem = checkpoint_file_problem(path)
        assert problem and str(path) in problem
        trainer = M3DDMTrainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                               enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
        assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)
        with pytest.raises(CheckpointError, match="empty|truncated") as err:
            trainer.fit(_Tiny(), torch.utils.data.DataLoader(torch.ones(2, 2)), ckpt_path=path)
        assert str(path) in str(err.value), kind


def test_cli_fit_from_a_damaged_checkpoint_prints_one_line(tmp_path, capsys, monkeypatch):
    path = _damaged(tmp_path)["empty"]
    monkeypatch.setattr(sys, "argv", ["lightning_m3ddm"])
    with pytest.raises(SystemExit) as stop:
        main(["fit", "--config", str(ROOT / "configs" / "tiny_cpu.yaml"), "--ckpt_path", str(path)])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: --ckpt_path {path}: the checkpoint file is empty (0 bytes), probably from an interrupted save; use an earlier one"]


def test_ddp_trainer_gets_the_atomic_writer_unless_another_is_configured():
    from lightning.pytorch.plugins.io import TorchCheckpointIO

    class Custom(TorchCheckpointIO):
        pass

    assert isinstance(M3DDMTrainer(strategy="ddp", devices=2, accelerator="cpu", logger=False).strategy.checkpoint_io, AtomicCheckpointIO)
    custom = M3DDMTrainer(accelerator="cpu", logger=False, plugins=[Custom()])
    assert type(custom.strategy.checkpoint_io) is Custom
