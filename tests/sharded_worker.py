"""Sharded training on CPU ranks (gloo), run by test_sharded.py as ``python sharded_worker.py OUT DEVICES``.

Lightning's launcher starts the other ranks by running this script again, so it is a script,
not a test. Under the paper configs' strategy and settings (``M3DDMShardedStrategy`` with
activation checkpointing, gradient clipping at the paper configs' norm, EMA, validation, previews, throughput, sharded
checkpoints), it:

1. trains 4 steps on 1 clip per rank, validating, previewing and saving a sharded checkpoint at step 4, and records
   per rank the first step's batch, loss and random-draw seed, the gathered gradients before
   clipping, the logged ``train/grad_norm``, and the gathered final weights (``rank{r}.pt``);
2. resumes from the step-4 checkpoint with ``fit --ckpt_path`` for 1 more step in bf16 compute
   (the paper configs' ``param_dtype``), and records the gathered weights, EMA and Adam state
   as loaded (``resumed.pt``).
"""

import sys
from pathlib import Path

import lightning as L
import torch
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger

from lightning_m3ddm.callbacks import SamplePreviews
from lightning_m3ddm.distributed import M3DDMShardedStrategy, full
from lightning_m3ddm.lit_module import M3DDMLitModule, OptimizerConfig
from lightning_m3ddm.throughput import TrainingThroughput

sys.path.insert(0, str(Path(__file__).parent))
from test_lit_module import TINY, PixelUnshuffleAutoencoder, make_batch  # noqa: E402

PAPER = yaml.safe_load((Path(__file__).parent.parent / "configs" / "m3ddm_webvid_a100_fsdp.yaml").read_text())["trainer"]
# The paper run's strategy settings and clipping; its bf16 compute (param_dtype and the
# bf16-mixed precision) is left out of the training checked to 1e-5 against fp32, and used in
# the resumed run, which checks that it runs.
STRATEGY = PAPER["strategy"]["init_args"]
CLIP = PAPER["gradient_clip_val"]


class Clips(torch.utils.data.Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, i):
        return {k: v[0] for k, v in make_batch(b=1, seed=i).items()}


def make_module():
    torch.manual_seed(0)
    return M3DDMLitModule(
        unet=TINY, autoencoder=PixelUnshuffleAutoencoder(4), ema_decay=0.9, optimizer=OptimizerConfig(warmup_steps=2)
    )


def gathered(module, name):
    return {n: full(p.detach()).clone() for n, p in getattr(module, name).named_parameters()}


class Recorder(L.Callback):
    """The first step's inputs, draws, loss and unclipped gradients, on every rank."""

    def __init__(self):
        self.record = {"seeds": [], "grad_norms": [], "clipped_norms": []}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == 0:
            self.record["batch"] = {k: v.clone() for k, v in batch.items()}

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if trainer.global_step == 0:
            self.record["grads"] = {n: full(p.grad).clone() for n, p in pl_module.unet.named_parameters()}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == 1:
            self.record["loss"] = outputs["loss"].detach().clone()
        # the logged norm (before clipping) and the norm of the gradients the optimizer used
        self.record["grad_norms"].append(float(trainer.callback_metrics["train/grad_norm"]))
        grads = [p.grad for p in pl_module.unet.parameters()]
        self.record["clipped_norms"].append(float(full(torch.nn.utils.get_total_norm(grads))))


def adam_state(optimizer, module):
    """Adam's moments per UNet parameter name, gathered."""
    return {
        n: {k: full(v).clone() for k, v in optimizer.state[p].items() if torch.is_tensor(v) and v.ndim}
        for n, p in module.unet.named_parameters()
    }


def recording_draws(module, seeds):
    original = module.step_generator

    def step_generator(*args, **kwargs):
        generator = original(*args, **kwargs)
        seeds.append(generator.initial_seed())
        return generator

    module.step_generator = step_generator


def trainer(out, max_steps, callbacks, param_dtype=None):
    return L.Trainer(
        accelerator="cpu",
        devices=int(sys.argv[2]),
        strategy=M3DDMShardedStrategy(**{**STRATEGY, "param_dtype": param_dtype}),
        max_steps=max_steps,
        gradient_clip_val=CLIP,
        val_check_interval=4,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
        logger=TensorBoardLogger(out, name="runs"),
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=out,
    )


def loader():
    return torch.utils.data.DataLoader(Clips(), batch_size=1, shuffle=False)


def main():
    out = Path(sys.argv[1])
    module = make_module()
    initial = {k: v.clone() for k, v in module.unet.state_dict().items()}
    recorder = Recorder()
    recording_draws(module, recorder.record["seeds"])
    checkpoints = ModelCheckpoint(
        dirpath=out / "ckpt", filename="{step}", every_n_train_steps=4, save_top_k=-1
    )
    previews = SamplePreviews(every_n_steps=4, num_samples=1, max_frames=2, num_inference_steps=2)
    run = trainer(out, 4, [recorder, checkpoints, previews, TrainingThroughput(window_size=2)])
    run.fit(module, loader(), loader())
    record = recorder.record
    record["initial"] = initial
    record["final_unet"] = gathered(module, "unet")
    record["final_ema"] = gathered(module, "ema_unet")
    record["final_buffers"] = {n: b.clone() for n, b in module.unet.named_buffers()}
    record["adam"] = adam_state(run.optimizers[0], module)
    record["metrics"] = {k: float(v) for k, v in run.callback_metrics.items()}
    record["sharded"] = type(module.unet).__name__
    torch.save(record, out / f"rank{run.global_rank}.pt")

    resumed = make_module()

    class AfterLoad(L.Callback):
        def on_train_start(self, trainer, pl_module):
            loaded = {
                "unet": gathered(pl_module, "unet"),
                "ema": gathered(pl_module, "ema_unet"),
                "adam": adam_state(trainer.optimizers[0], pl_module),
            }
            loaded["step"] = trainer.global_step
            if trainer.is_global_zero:
                torch.save(loaded, out / "resumed.pt")

    run = trainer(out / "resume", 5, [AfterLoad()], param_dtype=STRATEGY["param_dtype"])
    run.fit(resumed, loader(), loader(), ckpt_path=out / "ckpt" / "step=4.ckpt")


if __name__ == "__main__":
    main()
