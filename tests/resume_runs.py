"""Multi-rank runs for tests/test_resume.py: 6 uninterrupted steps that also save a checkpoint at
step 3, then a new trainer, model and datamodule resumed from that checkpoint to step 6.

Run as a script (``python tests/resume_runs.py SHARDS OUT STRATEGY``): multi-process
strategies start the other ranks by running this file again, and every rank runs the two
fits in the same order. Rank 0 writes the UNet and EMA weights after each run to
``OUT/<run>.pt``, and every rank writes the batch keys it trained on, step by step, to
``OUT/<run>_keys_rank<r>.json``. One uninterrupted run serves as the reference and as the
run that stopped: the step-3 checkpoint is written by the same hook, at the same point, as
that of a run stopped after 3 steps, and saves a third multi-process launch.

STRATEGY is a Lightning strategy name ("ddp") or the class path of a strategy built without
arguments.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_m3ddm.autoencoders import PixelUnshuffleAutoencoder
from lightning_m3ddm.cli import M3DDMTrainer
from lightning_m3ddm.data.datamodule import M3DDMDataModule
from lightning_m3ddm.lit_module import M3DDMLitModule, OptimizerConfig

# Two blocks of 16 channels: the smallest UNet with cross-attention and both block kinds.
UNET = dict(
    block_out_channels=(16, 16),
    down_block_types=("CrossAttnDownBlock3D", "DownBlockP3D"),
    up_block_types=("UpBlockP3D", "CrossAttnUpBlock3D"),
    layers_per_block=1,
    norm_num_groups=8,
    attention_head_dim=4,
    cross_attention_dim=16,
    temporal_position_embed_dim=16,
)
DEVICES = 2


class KeysSeen(L.Callback):
    """The keys of every batch this rank trained on."""

    def __init__(self):
        self.keys: list[list[str]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.keys.append(list(batch["key"]))


def _strategy(spec: str):
    if "." not in spec:
        return spec
    module, _, name = spec.rpartition(".")
    return getattr(importlib.import_module(module), name)()


def _run(name: str, shards: str, out: Path, strategy: str, max_steps: int, ckpt_path=None, callbacks=()):
    torch.manual_seed(0)
    model = M3DDMLitModule(
        unet=UNET, autoencoder=PixelUnshuffleAutoencoder(4), ema_decay=0.9, optimizer=OptimizerConfig(lr=1e-3, warmup_steps=3)
    )
    data = M3DDMDataModule(
        train_shards=shards, batch_size=1, num_workers=2, persistent_workers=True, shuffle_buffer=4,
        resolution=32, num_frames=4, num_global_frames=2, pin_memory=False, seed=7,
    )
    seen = KeysSeen()
    trainer = M3DDMTrainer(
        accelerator="cpu", devices=DEVICES, strategy=_strategy(strategy), max_steps=max_steps, logger=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=out / name,
        enable_checkpointing=bool(callbacks), callbacks=[seen, *callbacks], limit_val_batches=0,
    )
    trainer.fit(model, datamodule=data, ckpt_path=ckpt_path)
    (out / f"{name}_keys_rank{trainer.global_rank}.json").write_text(json.dumps(seen.keys))
    # sharded strategies hold DTensors: gather each whole on every rank (a collective)
    state = {
        k: (v.full_tensor() if hasattr(v, "full_tensor") else v).detach().cpu()
        for k, v in model.state_dict().items()
        if k.startswith(("unet.", "ema_unet."))
    }
    if trainer.is_global_zero:
        torch.save({"state": state, "global_step": trainer.global_step, "epoch": trainer.current_epoch}, out / f"{name}.pt")
    return trainer


def main(shards: str, out: str, strategy: str) -> None:
    out = Path(out)
    every_3 = ModelCheckpoint(dirpath=out / "ckpt", filename="{step}", every_n_train_steps=3, save_top_k=-1)
    _run("straight", shards, out, strategy, max_steps=6, callbacks=[every_3])
    _run("resumed", shards, out, strategy, max_steps=6, ckpt_path=out / "ckpt" / "step=3.ckpt")


if __name__ == "__main__":
    main(*sys.argv[1:4])
