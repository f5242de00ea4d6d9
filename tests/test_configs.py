"""Every YAML in configs/ parses; the paper-scale configs carry the paper's numbers; FSDP wrapping."""

import contextlib
import io
from pathlib import Path

import pytest
import yaml

from lightning_m3ddm.autoencoders import PixelUnshuffleAutoencoder
from lightning_m3ddm.cli import main
from lightning_m3ddm.distributed import M3DDMFSDPStrategy, wrap_units
from lightning_m3ddm.lit_module import M3DDMLitModule

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))


def _subcommand(path: Path) -> str:
    if path.stem.startswith("eval_"):
        return "evaluate"
    return "predict" if path.stem.startswith("predict") else "fit"


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_print_config(path):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
        main([_subcommand(path), "--config", str(path), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(out.getvalue())
    assert "model" in printed and "trainer" in printed


def test_a100_config_has_the_papers_numbers():
    cfg = yaml.safe_load((CONFIGS[0].parent / "m3ddm_webvid_a100_fsdp.yaml").read_text())
    trainer, model, data = cfg["trainer"], cfg["model"]["init_args"], cfg["data"]["init_args"]
    gpus = trainer["devices"] * trainer["num_nodes"]
    assert gpus == 24 and data["batch_size"] * gpus == 240  # Appendix C.2
    assert trainer["precision"] == "bf16-mixed" and trainer["max_epochs"] == 4
    assert trainer["strategy"]["class_path"].endswith("M3DDMFSDPStrategy")
    assert trainer["strategy"]["init_args"] == {"sharding_strategy": "FULL_SHARD", "activation_checkpointing": True}
    assert model["optimizer"] == {"name": "adam", "lr": 1e-4, "warmup_steps": 1000}
    assert model["init"]["source"] == "stable_diffusion"
    assert (data["resolution"], data["num_frames"], data["num_global_frames"]) == (256, 16, 16)
    finetune = yaml.safe_load((CONFIGS[0].parent / "m3ddm_ecommerce_finetune.yaml").read_text())
    assert finetune["trainer"]["max_epochs"] == 3
    assert finetune["model"]["init_args"]["init"]["source"] == "pretrained"


def test_fsdp_wraps_every_unet_block_and_keeps_frozen_parts_apart():
    module = M3DDMLitModule(
        unet=dict(block_out_channels=(32, 32, 32, 32), norm_num_groups=8, attention_head_dim=4, layers_per_block=1),
        autoencoder=PixelUnshuffleAutoencoder(4),
        ema_decay=0.99,
    )
    units = wrap_units(module)
    for prefix in ("unet", "ema_unet"):
        assert prefix in units
        assert [u for u in units if u.startswith(f"{prefix}.down_blocks.")] == [f"{prefix}.down_blocks.{i}" for i in range(4)]
        assert f"{prefix}.mid_block" in units
        assert [u for u in units if u.startswith(f"{prefix}.up_blocks.")] == [f"{prefix}.up_blocks.{i}" for i in range(4)]
    assert "autoencoder" in units
    strategy = M3DDMFSDPStrategy()
    policy = strategy.kwargs["auto_wrap_policy"]
    assert policy._module_classes == {type(module.unet.mid_block), type(module.unet.down_blocks[0]),
                                      type(module.unet.up_blocks[0]), type(module.unet), type(module.autoencoder).__mro__[1]}
    assert strategy.sharding_strategy.name == "FULL_SHARD"
    assert strategy._activation_checkpointing_kwargs["auto_wrap_policy"]._module_classes == {
        type(module.unet.mid_block), type(module.unet.down_blocks[0]), type(module.unet.up_blocks[0])
    }
    assert "auto_wrap_policy" not in M3DDMFSDPStrategy(activation_checkpointing=False)._activation_checkpointing_kwargs
