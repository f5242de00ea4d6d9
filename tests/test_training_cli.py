"""`python -m lightning_m3ddm fit|validate` with configs/tiny_cpu.yaml, end to end on CPU.

Overrides shrink the config (32x32 frames, 4-frame clips) so the suite stays fast; the
config itself runs as is from a fresh clone (`make demo`).
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightning_m3ddm.data.datamodule import M3DDMDataModule
from lightning_m3ddm.lit_module import M3DDMLitModule

ROOT = Path(__file__).parent.parent


def _run(args, tmp, timeout=420, extra_config=None):
    cmd = [
        sys.executable, "-m", "lightning_m3ddm", args[0],
        "--config", str(ROOT / "configs" / "tiny_cpu.yaml"),
        *(["--config", str(extra_config)] if extra_config else []),
        *args[1:],
        f"--data.init_args.root={tmp / 'data'}",
        "--data.init_args.num_train_videos=8",
        "--data.init_args.num_val_videos=2",
        "--data.init_args.video_width=48",
        "--data.init_args.video_height=48",
        "--data.init_args.video_frames=24",
        "--data.init_args.resolution=32",
        "--data.init_args.num_frames=4",
        "--data.init_args.num_global_frames=2",
        "--data.init_args.batch_size=2",
        "--data.init_args.num_workers=1",
        f"--trainer.default_root_dir={tmp}",
        f"--trainer.logger.init_args.save_dir={tmp / 'runs'}",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
    ]
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    result = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


FAST_CALLBACKS = """
trainer:
  callbacks:
    - class_path: lightning.pytorch.callbacks.LearningRateMonitor
      init_args: {logging_interval: step}
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {every_n_train_steps: 30, save_last: true}
    - class_path: lightning_m3ddm.throughput.TrainingThroughput
      init_args: {window_size: 5}
    - class_path: lightning_m3ddm.callbacks.SamplePreviews
      init_args: {every_n_steps: 30, num_samples: 1, num_inference_steps: 2}
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fit")
    (tmp / "fast.yaml").write_text(FAST_CALLBACKS)
    _run(
        [
            "fit",
            "--trainer.max_steps=60",
            "--trainer.val_check_interval=30",
            "--trainer.log_every_n_steps=1",
            "--model.init_args.optimizer.warmup_steps=5",
            "--model.init_args.optimizer.lr=1e-3",
        ],
        tmp,
        extra_config=tmp / "fast.yaml",
    )
    return tmp


def _events(tmp):
    files = sorted((tmp / "runs" / "tiny_cpu").glob("version_*/events.out.tfevents.*"))
    assert files, "no TensorBoard event file written"
    acc = EventAccumulator(str(files[0].parent), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    return acc


def test_fit_writes_tensorboard_scalars_images_and_a_checkpoint(trained):
    acc = _events(trained)
    scalars = set(acc.Tags()["scalars"])
    # one device: Lightning's ThroughputMonitor logs the per-device rates only
    for tag in ["train/loss", "train/grad_norm", "train/device/samples_per_sec", "train/device/flops_per_sec",
                "train/skipped_steps", "val/loss"]:
        assert tag in scalars, (tag, scalars)
    assert any(t.startswith("lr-") for t in scalars)
    assert "samples/outpainting_0" in acc.Tags()["images"]
    ckpts = list(trained.rglob("last.ckpt"))
    assert ckpts and torch.load(ckpts[0], weights_only=False)["global_step"] == 60


def _fixed_draw_loss(module: M3DDMLitModule, batches: list[dict]) -> float:
    """The training objective with fixed noise, timesteps and no dropout, 2 draws per batch."""
    module.eval()
    with torch.no_grad():
        losses = [
            float(module.diffusion_loss(b, module.unet, dropout=None, generator=torch.Generator().manual_seed(100 * i + s)))
            for i, b in enumerate(batches) for s in range(2)
        ]
    return sum(losses) / len(losses)


def test_loss_falls(trained):
    """60 steps lower the loss on the training clips, with the same noise and timesteps for the
    trained and a fresh model: logged per-step losses swing with each step's timestep draws,
    too much for a comparison of 10-step means to say whether the model learned."""
    assert len(_events(trained).Scalars("train/loss")) >= 50
    ckpt = torch.load(next(trained.rglob("*step=60.ckpt")), weights_only=False)
    hparams = {k: v for k, v in ckpt["hyper_parameters"].items() if k != "_class_path"}
    torch.manual_seed(0)
    fresh, learned = M3DDMLitModule(**hparams), M3DDMLitModule(**hparams)
    learned.load_state_dict(ckpt["state_dict"])
    # the 8 training clips in one batch: few UNet calls
    clips = M3DDMDataModule(val_shards=str(trained / "data" / "train" / "train-*.tar"), batch_size=8, num_workers=0,
                            resolution=32, num_frames=4, num_global_frames=2, pin_memory=False)
    batches = list(clips.val_dataloader())
    before, after = _fixed_draw_loss(fresh, batches), _fixed_draw_loss(learned, batches)
    assert after < 0.85 * before, (before, after)  # measured: 0.87 -> 0.62


def _newest_checkpoint(root):
    return max(root.rglob("last.ckpt"), key=lambda p: p.stat().st_mtime)


def test_validate_and_resume(trained):
    ckpt = _newest_checkpoint(trained)
    out = _run(["validate", f"--ckpt_path={ckpt}"], trained)
    assert "val/loss" in out.stdout
    _run(
        ["fit", f"--ckpt_path={ckpt}", "--trainer.max_steps=90", "--trainer.val_check_interval=30"],
        trained,
        extra_config=trained / "fast.yaml",
    )
    resumed = torch.load(_newest_checkpoint(trained), weights_only=False)
    assert resumed["global_step"] == 90 and resumed["epoch"] > 0


def test_two_process_ddp_on_cpu(tmp_path):
    out = _run(
        # 8 videos in 4 shards: 2 per rank, so both ranks run the same number of steps
        ["fit", "--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.max_steps=2", "--trainer.limit_val_batches=0"],
        tmp_path,
    )
    log = out.stdout + out.stderr
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in log
    assert torch.load(next(tmp_path.rglob("last.ckpt")), weights_only=False)["global_step"] == 2


def test_predict_with_the_trained_checkpoint(trained):
    """predict takes a framework .ckpt and the autoencoder it was trained with."""
    ckpt = _newest_checkpoint(trained)
    out_dir = trained / "outpainted"
    cmd = [
        sys.executable, "-m", "lightning_m3ddm", "predict", "--config", str(ROOT / "configs" / "predict_tiny.yaml"),
        "--model.init_args.weights.source=pretrained", f"--model.init_args.weights.path={ckpt}",
        "--model.init_args.unet=null", "--model.init_args.autoencoder=null", "--model.init_args.canvas_size=32",
        "--input", str(ROOT / "tests" / "data" / "carphone_176x144_30fps_120f.mp4"),
        "--target_ratio", "1:1", "--output_dir", str(out_dir),
    ]
    result = subprocess.run(cmd, cwd=trained, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    assert (out_dir / "carphone_176x144_30fps_120f_1-1.mp4").stat().st_size > 0
