"""Sharded training (the paper's 24-GPU run): torch FSDP2 driven by Lightning's ModelParallelStrategy.

FSDP2 (``torch.distributed.fsdp.fully_shard``) runs the same code on CPU ranks with gloo (the
test suite) and on GPUs with NCCL. Shard units: every UNet down/mid/up block and the UNet root
(conv_in, embeddings, global-frame encoder, conv_out); the EMA copy is sharded the same way, so
its shards line up with the trained weights' and the average is a local operation. The frozen
autoencoder stays replicated: it is only called through ``encode``/``decode``, never
``forward``, so FSDP would not gather its weights, and it is small next to the UNet.

Checkpoints are ``torch.distributed.checkpoint`` folders (each rank writes its shard, nothing
is gathered on one rank); :func:`consolidate_checkpoint` turns one into an ordinary ``.ckpt``.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from lightning.fabric.utilities.load import _METADATA_FILENAME
from lightning.pytorch.strategies import ModelParallelStrategy
from torch import nn

from lightning_m3ddm.checkpoints import CheckpointError

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class ShardingSettings:
    """How :func:`shard_unet` shards and runs a UNet.

    Args:
        param_dtype: dtype of the gathered weights in forward/backward (``"bfloat16"`` on GPUs:
            bf16 compute, the sharded fp32 weights and the optimizer state stay fp32); None
            computes in the weights' dtype.
        reduce_dtype: dtype of the gradient reduce-scatter (fp32: no precision lost in the sum
            over ranks).
        activation_checkpointing: recompute each block's layers in the backward pass.
        compile_blocks: ``torch.compile`` every down/mid/up block (the repeated units).
        reshard_after_forward: free the gathered weights after each block's forward (ZeRO-3);
            False keeps them until the backward (ZeRO-2: more memory, fewer all-gathers).
    """

    param_dtype: str | None = None
    reduce_dtype: str = "float32"
    activation_checkpointing: bool = True
    compile_blocks: bool = False
    reshard_after_forward: bool = True

    def __post_init__(self):
        for name in ("param_dtype", "reduce_dtype"):
            value = getattr(self, name)
            if value is not None and value not in _DTYPES:
                raise ValueError(f"{name} must be one of {sorted(_DTYPES)} or null, got {value!r}")

    def mp_policy(self, *, full_precision: bool = False):
        """FSDP2's policy; ``full_precision``: compute in fp32 and hand back ``param_dtype`` outputs."""
        from torch.distributed.fsdp import MixedPrecisionPolicy

        dtype = _DTYPES[self.param_dtype] if self.param_dtype else None
        if full_precision:
            return MixedPrecisionPolicy(torch.float32, torch.float32, output_dtype=dtype)
        return MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=_DTYPES[self.reduce_dtype])


def unet_blocks(unet: nn.Module) -> list[nn.Module]:
    """The repeated units of an M3DDMUNet: its down blocks, mid block and up blocks, in order."""
    return [*unet.down_blocks, unet.mid_block, *unet.up_blocks]


def is_sharded(module: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(module, FSDPModule)


def shard_unet(unet: nn.Module, mesh, settings: ShardingSettings, *, trainable: bool = True) -> nn.Module:
    """Make every block and then the root of ``unet`` an FSDP2 unit over ``mesh`` (in place).

    ``trainable=False`` (the EMA copy) skips activation checkpointing and compilation: the copy
    only runs forward, in validation and previews.
    """
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    if trainable and settings.activation_checkpointing:
        unet.enable_gradient_checkpointing()
    reshard = settings.reshard_after_forward
    if settings.param_dtype:
        # its BatchNorms keep fp32 running statistics, which a bf16 weight cannot be used with;
        # the encoder is small, so it computes in fp32 (its own unit) and hands back bf16 tokens
        fully_shard(unet.global_img_encoder, mesh=mesh, mp_policy=settings.mp_policy(full_precision=True),
                    reshard_after_forward=reshard)
    policy = settings.mp_policy()
    for block in unet_blocks(unet):
        if trainable and settings.compile_blocks:
            block.compile()  # in place: parameter names (and checkpoints) stay those of the plain model
        fully_shard(block, mesh=mesh, mp_policy=policy, reshard_after_forward=reshard)
    fully_shard(unet, mesh=mesh, mp_policy=policy, reshard_after_forward=reshard)
    # the previews and the sampler call this outside forward; it must gather the root's weights too
    register_fsdp_forward_method(unet, "encode_global_frames")
    return unet


def local(tensor: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a DTensor (sharded parameter or gradient); a plain tensor as is."""
    from torch.distributed.tensor import DTensor

    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def full(tensor: torch.Tensor) -> torch.Tensor:
    """The whole value of a DTensor (e.g. a norm reduced across ranks); a plain tensor as is."""
    from torch.distributed.tensor import DTensor

    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


@torch.no_grad()
def average_buffers(module: nn.Module) -> None:
    """Average ``module``'s floating-point buffers over all ranks (no-op in one process).

    The global-frame encoder's BatchNorm running statistics come from each rank's own clips,
    while a sharded checkpoint stores a replicated tensor once: averaged after every step,
    all ranks hold the same statistics, and a resumed run gets back what every rank had.
    """
    import torch.distributed as dist

    buffers = [b for b in module.buffers() if b.is_floating_point()]
    if not buffers or not dist.is_initialized() or dist.get_world_size() == 1:
        return
    flat = torch.cat([b.reshape(-1) for b in buffers])
    dist.all_reduce(flat)  # a sum: gloo has no average
    flat /= dist.get_world_size()
    torch._foreach_copy_(buffers, [v.view_as(b) for v, b in zip(flat.split([b.numel() for b in buffers]), buffers)])


class M3DDMShardedStrategy(ModelParallelStrategy):
    """``ModelParallelStrategy`` as plain sharded data parallelism over all ranks, with M3DDM's units.

    Lightning's default mesh puts one node's GPUs on the tensor-parallel axis and gives them
    all the same data; here every rank is a data-parallel rank (tensor-parallel size 1), and
    the model is sharded over all of them. The LightningModule's ``configure_model`` calls
    :meth:`shard` (see ``M3DDMLitModule.configure_model``).

    Args:
        param_dtype, reduce_dtype, activation_checkpointing, compile_blocks,
        reshard_after_forward: see :class:`ShardingSettings`.
        tf32: TensorFloat-32 for fp32 matmuls and convolutions on GPUs.
        save_distributed_checkpoint: True: checkpoints are folders, one shard per rank
            (:func:`consolidate_checkpoint` makes one file); False: gathered on rank 0.
        **kwargs: ``process_group_backend``, ``timeout`` of ``ModelParallelStrategy``.
    """

    def __init__(
        self,
        param_dtype: str | None = None,
        reduce_dtype: str = "float32",
        activation_checkpointing: bool = True,
        compile_blocks: bool = False,
        reshard_after_forward: bool = True,
        tf32: bool = False,
        save_distributed_checkpoint: bool = True,
        **kwargs: Any,
    ):
        super().__init__(
            data_parallel_size="auto",
            tensor_parallel_size=1,
            save_distributed_checkpoint=save_distributed_checkpoint,
            **kwargs,
        )
        self.sharding = ShardingSettings(
            param_dtype, reduce_dtype, activation_checkpointing, compile_blocks, reshard_after_forward
        )
        self.tf32 = tf32

    def setup_environment(self) -> None:
        if self._data_parallel_size == "auto":
            self._data_parallel_size = self.num_nodes * self.num_processes
        super().setup_environment()
        if self.tf32 and self.root_device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True

    def optimizer_step(self, optimizer, closure, model=None, **kwargs: Any) -> Any:
        output = super().optimizer_step(optimizer, closure, model, **kwargs)
        average_buffers(self.lightning_module.unet)
        return output

    def shard(self, module: nn.Module) -> None:
        """Shard ``module.unet`` and ``module.ema_unet`` (if any); a second call does nothing."""
        mesh = self.device_mesh["data_parallel"]
        if not is_sharded(module.unet):
            shard_unet(module.unet, mesh, self.sharding)
        if getattr(module, "ema_unet", None) is not None and not is_sharded(module.ema_unet):
            shard_unet(module.ema_unet, mesh, self.sharding, trainable=False)


# -- checkpoints ------------------------------------------------------------------------------


def is_distributed_checkpoint(path: str | Path) -> bool:
    """A folder written by a sharded save (``torch.distributed.checkpoint`` plus Lightning's metadata)."""
    path = Path(path)
    return path.is_dir() and (path / ".metadata").is_file() and (path / _METADATA_FILENAME).is_file()


def read_distributed_checkpoint(path: str | Path, *, prefixes: Sequence[str] | None = None) -> dict[str, Any]:
    """A sharded checkpoint folder as one Lightning checkpoint dict, on CPU in this process.

    ``prefixes``: load only the ``state_dict`` tensors whose names start with one of them
    (e.g. ``("ema_unet.",)`` for inference weights) and no optimizer state; None loads all,
    with the optimizer states as ``optimizer_states`` (keyed by parameter name, as
    ``torch.distributed.checkpoint`` stores them).
    """
    import torch.distributed.checkpoint as dcp
    from lightning.fabric.utilities.load import _load_distributed_checkpoint

    path = Path(path)
    if not is_distributed_checkpoint(path):
        raise CheckpointError(f"{path}: not a sharded checkpoint folder (needs .metadata and {_METADATA_FILENAME})")
    if prefixes is None:
        checkpoint = _load_distributed_checkpoint(path)
    else:
        reader = dcp.FileSystemReader(str(path))
        weights = {
            key[len("state_dict."):]: torch.empty(meta.size, dtype=meta.properties.dtype)
            for key, meta in reader.read_metadata().state_dict_metadata.items()
            if key.startswith("state_dict.") and key[len("state_dict."):].startswith(tuple(prefixes))
        }
        checkpoint = {"state_dict": weights}
        dcp.load(checkpoint, storage_reader=reader, no_dist=True)
        checkpoint.update(torch.load(path / _METADATA_FILENAME, map_location="cpu", weights_only=True))
    optimizers = sorted((k for k in checkpoint if re.fullmatch(r"optimizer_\d+", k)), key=lambda k: int(k[10:]))
    if optimizers:
        checkpoint["optimizer_states"] = [checkpoint.pop(k) for k in optimizers]
    return checkpoint


def consolidate_checkpoint(folder: str | Path, output: str | Path, *, weights_only: bool = False) -> Path:
    """Write a sharded checkpoint folder as one ordinary ``.ckpt`` file (what
    ``init.source: pretrained`` and ``load_pretrained_unet`` read).

    ``weights_only``: keep the UNet and EMA weights, hyperparameters and configs, not the
    optimizer state (a third of the size with Adam). Written to a temporary file in the
    target folder and renamed, so an interrupted run leaves no half-written output.
    """
    folder, output = Path(folder), Path(output)
    checkpoint = read_distributed_checkpoint(folder, prefixes=("unet.", "ema_unet.") if weights_only else None)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp")
    torch.save(checkpoint, tmp)
    tmp.replace(output)
    return output


def main(argv: list[str] | None = None) -> None:
    """``python -m lightning_m3ddm.distributed consolidate FOLDER OUTPUT.ckpt [--weights-only]``."""
    parser = argparse.ArgumentParser(prog="python -m lightning_m3ddm.distributed")
    sub = parser.add_subparsers(dest="command", required=True)
    cons = sub.add_parser("consolidate", help="a sharded checkpoint folder -> one .ckpt file")
    cons.add_argument("folder")
    cons.add_argument("output")
    cons.add_argument("--weights-only", action="store_true", help="UNet and EMA weights without optimizer state")
    args = parser.parse_args(argv)
    try:
        out = consolidate_checkpoint(args.folder, args.output, weights_only=args.weights_only)
    except CheckpointError as err:
        parser.exit(2, f"error: {err}\n")
    print(out)


if __name__ == "__main__":
    main()
