"""Every YAML in configs/ parses; the paper-scale configs carry the paper's numbers and build their Trainer."""

import contextlib
import io
from pathlib import Path

import pytest
import yaml

from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.plugins.precision import MixedPrecision

from lightning_m3ddm.callbacks import SamplePreviews
from lightning_m3ddm.cli import main as cli_main
from lightning_m3ddm.distributed import M3DDMShardedStrategy, ShardingSettings
from lightning_m3ddm.throughput import TrainingThroughput

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))


def _subcommand(path: Path) -> str:
    if path.stem.startswith("eval_"):
        return "evaluate"
    return "predict" if path.stem.startswith("predict") else "fit"


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_print_config(path):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
        cli_main([_subcommand(path), "--config", str(path), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(out.getvalue())
    assert "model" in printed and "trainer" in printed


def test_a100_config_has_the_papers_numbers():
    cfg = yaml.safe_load((CONFIGS[0].parent / "m3ddm_webvid_a100_fsdp.yaml").read_text())
    trainer, model, data = cfg["trainer"], cfg["model"]["init_args"], cfg["data"]["init_args"]
    gpus = trainer["devices"] * trainer["num_nodes"]
    assert gpus == 24 and data["batch_size"] * gpus == 240  # Appendix C.2
    assert trainer["precision"] == "bf16-mixed" and trainer["max_epochs"] == 4
    assert trainer["strategy"]["class_path"].endswith("M3DDMShardedStrategy")
    assert trainer["strategy"]["init_args"]["param_dtype"] == "bfloat16" and trainer["gradient_clip_val"] == 1.0
    assert model["optimizer"] == {"name": "adam", "lr": 1e-4, "warmup_steps": 1000}
    assert model["init"]["source"] == "stable_diffusion"
    assert (data["resolution"], data["num_frames"], data["num_global_frames"]) == (256, 16, 16)
    finetune = yaml.safe_load((CONFIGS[0].parent / "m3ddm_ecommerce_finetune.yaml").read_text())
    assert finetune["trainer"]["max_epochs"] == 3
    assert finetune["model"]["init_args"]["init"]["source"] == "pretrained"


PAPER_CONFIGS = ["m3ddm_webvid_a100_fsdp.yaml", "m3ddm_ecommerce_finetune.yaml"]


@pytest.mark.parametrize("name", PAPER_CONFIGS)
def test_paper_config_builds_its_trainer_on_cpu(name, tmp_path):
    """The whole config is instantiated, trainer first; only what needs the cluster or the
    Stable Diffusion weights is overridden: the accelerator (cpu; bf16-mixed stays, Lightning
    runs it on CPUs) and the model's weights (a tiny config-initialised UNet and a weight-free
    autoencoder instead of the /path/to placeholders)."""
    cli = cli_main(
        [
            "--config", str(CONFIGS[0].parent / name),
            "--trainer.accelerator=cpu",
            f"--trainer.default_root_dir={tmp_path}",
            f"--trainer.logger.init_args.save_dir={tmp_path}",
            "--model.init_args.init.source=config",
            "--model.init_args.autoencoder=lightning_m3ddm.autoencoders.PixelUnshuffleAutoencoder",
            "--model.init_args.unet={block_out_channels: [32, 32, 32, 32], norm_num_groups: 8, "
            "attention_head_dim: 4, layers_per_block: 1}",
        ],
        run=False,
    )
    trainer = cli.trainer
    strategy = trainer.strategy
    assert isinstance(strategy, M3DDMShardedStrategy)
    assert strategy.sharding == ShardingSettings(param_dtype="bfloat16", reduce_dtype="float32", activation_checkpointing=True)
    assert strategy.num_nodes == 3 and strategy.num_processes == 8 and strategy.world_size == 24
    assert strategy.root_device.type == "cpu" and strategy._save_distributed_checkpoint
    assert isinstance(trainer.precision_plugin, MixedPrecision) and trainer.precision_plugin.precision == "bf16-mixed"
    assert trainer.gradient_clip_val == 1.0 and trainer.gradient_clip_algorithm in (None, "norm")  # None: by norm
    kinds = {type(c) for c in trainer.callbacks}
    assert {TrainingThroughput, SamplePreviews, ModelCheckpoint, LearningRateMonitor} <= kinds
    assert cli.model.ema_unet is None or cli.model.ema_decay
    assert cli.datamodule.batch_size == 10
