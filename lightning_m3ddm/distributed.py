"""Multi-GPU training: FSDP sharding at the UNet block level (the paper's 24 A100 run)."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.strategies import FSDPStrategy
from torch import nn

from lightning_m3ddm.autoencoders import Autoencoder
from lightning_m3ddm.models.blocks import DownBlock3D, MidBlock3D, UpBlock3D
from lightning_m3ddm.models.unet_3d import M3DDMUNet

# Block-level units: each down/mid/up block is sharded and gathered on its own, so at most a
# block's full weights live on a GPU at once. The UNet (conv_in, embeddings, global encoder,
# conv_out) and the frozen autoencoder are their own units, which keeps trainable and frozen
# parameters (EMA copy, VAE) out of one flat parameter.
UNET_BLOCKS: set[type[nn.Module]] = {DownBlock3D, MidBlock3D, UpBlock3D}
WRAP_UNITS: set[type[nn.Module]] = UNET_BLOCKS | {M3DDMUNet, Autoencoder}


def wrap_units(model: nn.Module) -> list[str]:
    """Names of the submodules that become FSDP units (for inspection and tests)."""
    return [name for name, m in model.named_modules() if any(isinstance(m, cls) for cls in WRAP_UNITS)]


class M3DDMFSDPStrategy(FSDPStrategy):
    """``FSDPStrategy`` with M3DDM's wrap policy and block-level activation checkpointing.

    Args:
        sharding_strategy: FULL_SHARD (paper-scale default), SHARD_GRAD_OP, HYBRID_SHARD, NO_SHARD.
        activation_checkpointing: recompute each UNet block's activations in the backward pass.
        **kwargs: any other ``FSDPStrategy`` argument (e.g. ``cpu_offload``, ``limit_all_gathers``).
    """

    def __init__(
        self,
        sharding_strategy: str = "FULL_SHARD",
        activation_checkpointing: bool = True,
        use_orig_params: bool = True,
        **kwargs: Any,
    ):
        super().__init__(
            auto_wrap_policy=set(WRAP_UNITS),
            activation_checkpointing_policy=set(UNET_BLOCKS) if activation_checkpointing else None,
            sharding_strategy=sharding_strategy,
            use_orig_params=use_orig_params,
            **kwargs,
        )
