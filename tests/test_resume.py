"""fit --ckpt_path continues exactly: optimizer, LR schedule, EMA and counters (2 + 2 steps == 4 steps
on one fixed clip), and the data stream (2 ranks over real shards, 3 + 3 steps == 6 steps)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from lightning_m3ddm.distributed import read_distributed_checkpoint
from lightning_m3ddm.lit_module import M3DDMLitModule, OptimizerConfig
from lightning_m3ddm.synthetic_shards import ensure_synthetic_shards

from resume_runs import UNET
from test_lit_module import PixelUnshuffleAutoencoder, make_batch

ROOT = Path(__file__).parent.parent


class _Clips(torch.utils.data.Dataset):
    """The same clip at every step: which batch a resumed epoch starts at (a data-loader
    matter) cannot change the result, so the test sees optimizer, LR schedule, EMA and the
    per-step noise alone."""

    def __len__(self):
        return 2

    def __getitem__(self, i):
        return {k: v[0] for k, v in make_batch(b=1, seed=0).items()}


def _module():
    torch.manual_seed(0)
    return M3DDMLitModule(
        unet=UNET, autoencoder=PixelUnshuffleAutoencoder(4), ema_decay=0.9, optimizer=OptimizerConfig(warmup_steps=3)
    )


def _trainer(root, max_steps):
    return L.Trainer(
        max_steps=max_steps, accelerator="cpu", logger=False, enable_progress_bar=False,
        enable_checkpointing=False, default_root_dir=root, enable_model_summary=False,
    )


def _loader():
    return torch.utils.data.DataLoader(_Clips(), batch_size=1, shuffle=False)


def test_resume_continues_exactly(tmp_path):
    straight = _module()
    _trainer(tmp_path / "a", 4).fit(straight, _loader())

    first = _module()
    trainer = _trainer(tmp_path / "b", 2)
    trainer.fit(first, _loader())
    ckpt = tmp_path / "half.ckpt"
    trainer.save_checkpoint(ckpt)
    saved = torch.load(ckpt, weights_only=False)
    assert saved["global_step"] == 2 and any(k.startswith("ema_unet.") for k in saved["state_dict"])
    assert saved["optimizer_states"][0]["state"] and saved["lr_schedulers"][0]["last_epoch"] == 2

    resumed = _module()
    trainer = _trainer(tmp_path / "c", 4)
    trainer.fit(resumed, _loader(), ckpt_path=ckpt)
    assert trainer.global_step == 4
    assert trainer.optimizers[0].param_groups[0]["lr"] == straight.trainer.optimizers[0].param_groups[0]["lr"]
    for name, (a, b) in {
        "unet": (straight.unet, resumed.unet),
        "ema": (straight.ema_unet, resumed.ema_unet),
    }.items():
        for (n, p), q in zip(a.named_parameters(), b.parameters()):
            torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=f"{name}.{n}")
    # and training did move the weights
    assert not torch.equal(_module().unet.conv_in.weight, resumed.unet.conv_in.weight)


# The strategy of the multi-rank resume test: a Lightning strategy name or the class path of a
# strategy built without arguments (e.g. the sharded strategy of the paper configs).
RESUME_STRATEGY = "lightning_m3ddm.distributed.M3DDMShardedStrategy"


@pytest.mark.timeout(600)
def test_two_ranks_stopped_and_resumed_equal_an_uninterrupted_run(tmp_path):
    """2 ranks x (3 steps, stop, resume for 3 more) == 6 steps, over real shards read by 2 workers
    per rank: 4 shards of 2 videos give each rank 4 batches an epoch, so the stop falls inside
    epoch 0 and the resumed part crosses into epoch 1 (see tests/resume_runs.py)."""
    shards = ensure_synthetic_shards(tmp_path / "data", "train", 8, width=32, height=32, num_frames=12, shard_size=2)
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, str(ROOT / "tests" / "resume_runs.py"), shards, str(tmp_path), RESUME_STRATEGY]
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=580)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    assert "not an exact resume" not in result.stderr

    keys = {(run, r): json.loads((tmp_path / f"{run}_keys_rank{r}.json").read_text())
            for run in ("straight", "resumed") for r in (0, 1)}
    epoch_0 = []
    for r in (0, 1):
        straight = keys["straight", r]
        epoch_0.append({k for batch in straight[:4] for k in batch})
        assert len(straight) == 6 and len(epoch_0[-1]) == 4  # 4 clips in epoch 0, then epoch 1
        assert keys["resumed", r] == straight[3:], r
    assert epoch_0[0].isdisjoint(epoch_0[1])  # the ranks read different shards

    straight, resumed = (torch.load(tmp_path / f"{run}.pt", weights_only=True) for run in ("straight", "resumed"))
    assert straight["global_step"] == resumed["global_step"] == 6 and resumed["epoch"] == straight["epoch"]
    assert set(straight["state"]) == set(resumed["state"]) and any(k.startswith("ema_unet.") for k in straight["state"])
    for name, value in straight["state"].items():
        torch.testing.assert_close(resumed["state"][name], value, rtol=0, atol=1e-6, msg=name)
    at_stop = read_distributed_checkpoint(tmp_path / "ckpt" / "step=3.ckpt", prefixes=("unet.", "ema_unet."))["state_dict"]
    assert any(not torch.equal(at_stop[k], v) for k, v in straight["state"].items())  # steps 4-6 did train
