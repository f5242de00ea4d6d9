"""``python -m lightning_m3ddm fit|validate|predict --config ...`` through LightningCLI.

Every component is chosen in YAML by ``class_path`` (model, data, autoencoder, callbacks,
logger, strategy) and can be overridden on the command line; ``--print_config`` prints the
resolved configuration.

``predict`` also takes ``--input PATHS --target_ratio 9:16 --output_dir DIR`` (see
:mod:`lightning_m3ddm.predict.cli_args`); it exits with status 1 when some video failed
and 2 on unusable arguments.
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch.cli import LightningCLI


class M3DDMCLI(LightningCLI):
    """LightningCLI with the model and data chosen by class path."""

    # -- predict ------------------------------------------------------------------------

    def _prepare_subcommand_parser(self, klass: type, subcommand: str, **kwargs):
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        if subcommand == "predict":
            from lightning_m3ddm.predict.cli_args import add_predict_arguments

            add_predict_arguments(parser)
        return parser

    def before_instantiate_classes(self) -> None:
        super().before_instantiate_classes()
        if self.subcommand == "predict":
            from lightning_m3ddm.predict import cli_args

            problem = cli_args.check_predict_arguments(self.config["predict"])
            if problem is not None:
                cli_args.exit_on_bad_arguments(problem)
            cli_args.enable_predict_logging()
            self.save_config_callback = None  # predict leaves nothing but its videos behind

    def instantiate_classes(self) -> None:
        if self.subcommand != "predict":
            return super().instantiate_classes()
        from lightning_m3ddm.predict import cli_args

        try:
            super().instantiate_classes()
        except Exception as err:  # unusable weights: one line instead of jsonargparse's nested traceback
            problem = cli_args.weights_problem(err)
            if problem is None:
                raise
            cli_args.exit_on_bad_arguments(problem)

    def after_predict(self) -> None:
        from lightning_m3ddm.predict.cli_args import exit_status_after_predict

        status = exit_status_after_predict(self.trainer)
        if status:
            raise SystemExit(status)


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
