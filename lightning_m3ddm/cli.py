"""``python -m lightning_m3ddm fit|validate|predict --config ...`` through LightningCLI.

Every component is chosen in YAML by ``class_path`` (model, data, autoencoder, callbacks,
logger, strategy) and can be overridden on the command line; ``--print_config`` prints the
resolved configuration.
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch.cli import LightningCLI


class M3DDMCLI(LightningCLI):
    """LightningCLI with the model and data chosen by class path."""


def main(args: list[str] | None = None) -> M3DDMCLI:
    return M3DDMCLI(
        L.LightningModule,
        L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        args=args,
        auto_configure_optimizers=False,
    )
