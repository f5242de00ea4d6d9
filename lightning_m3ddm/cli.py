"""``python -m lightning_m3ddm fit|validate|predict --config ...`` through LightningCLI.

Every component is chosen in YAML by ``class_path`` (model, data, autoencoder, callbacks,
logger, strategy) and can be overridden on the command line; ``--print_config`` prints the
resolved configuration.

``predict`` also takes ``--input PATHS --target_ratio 9:16 --output_dir DIR`` (see
:mod:`lightning_m3ddm.predict.cli_args`); it exits with status 1 when some video failed
and 2 on unusable arguments. ``predict --ckpt_path run.ckpt`` outpaints with a training
checkpoint's (EMA) weights, autoencoder and sampling defaults (the model is
:class:`~lightning_m3ddm.predict.M3DDMPredictor` unless a config says otherwise).

``export --ckpt_path run.ckpt --output_dir model/`` writes a training checkpoint as a
folder that :meth:`OutpaintingPipeline.from_pretrained` loads
(:func:`lightning_m3ddm.weights.export_checkpoint`).

``evaluate --config configs/eval_X.yaml --output_dir DIR`` scores the model and the
baselines under the paper's protocols (:mod:`lightning_m3ddm.evaluation.runner`): a
Trainer method (:class:`M3DDMTrainer`), so it takes the trainer, ``model`` and ``data``
groups like the other subcommands, plus ``evaluation`` (:class:`EvaluationConfig`). Exit
status 1 when some input or method failed (results are written all the same), 2 on
unusable arguments.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

import lightning as L
from lightning.pytorch.cli import LightningCLI

from lightning_m3ddm.checkpoint_io import checkpoint_file_problem, use_atomic_checkpoint_io
from lightning_m3ddm.evaluation.config import EvaluationConfig


class M3DDMTrainer(L.Trainer):
    """Lightning's Trainer plus :meth:`evaluate` (the ``evaluate`` subcommand), writing checkpoints
    through :class:`~lightning_m3ddm.checkpoint_io.AtomicCheckpointIO` unless another
    CheckpointIO is configured."""

    evaluation_results: dict | None = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        use_atomic_checkpoint_io(self)

    def predict(self, *args, **kwargs):
        """Lightning's predict; a stop signal (:mod:`~lightning_m3ddm.predict.preemption`) exits 128 + signal."""
        from lightning_m3ddm.predict.preemption import Preempted

        try:
            return super().predict(*args, **kwargs)
        except Preempted as stop:
            # the loader workers are gone now: what they had prepared ahead goes too
            for callback in self.callbacks:
                if getattr(callback, "batch_job", None) is not None:
                    callback.batch_job.remove_own_work_folders()
            raise SystemExit(stop.exit_status) from None

    def evaluate(
        self,
        model: L.LightningModule,
        datamodule: Optional[L.LightningDataModule] = None,
        evaluation: EvaluationConfig = EvaluationConfig(),
        output_dir: Optional[str] = None,
    ) -> dict:
        """Score outpainting methods under the paper's protocols; write results.json and results.md.

        Args:
            model: the model behind the ``m3ddm`` methods (e.g. ``M3DDMPredictor``).
            datamodule: the test videos (``EvaluationDataModule``).
            evaluation: protocols, methods, FVD / LPIPS weights.
            output_dir: folder for results.json, results.md and (by default) the TensorBoard logs.
        """
        from lightning_m3ddm.evaluation.runner import run_evaluation

        self.evaluation_results = run_evaluation(self, model, datamodule, evaluation, output_dir)
        return self.evaluation_results


class M3DDMCLI(LightningCLI):
    """LightningCLI with the model and data chosen by class path."""

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {**LightningCLI.subcommands(), "evaluate": {"model", "datamodule"}}

    # -- predict ------------------------------------------------------------------------

    def _prepare_subcommand_parser(self, klass: type, subcommand: str, **kwargs):
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        if subcommand == "predict":
            from lightning_m3ddm.predict.cli_args import add_predict_arguments

            add_predict_arguments(parser)
            # `predict --ckpt_path run.ckpt --input ...` needs no config file
            parser.set_defaults(
                {
                    "model": {"class_path": "lightning_m3ddm.predict.M3DDMPredictor"},
                    "data": {"class_path": "lightning_m3ddm.predict.VideoPredictDataModule"},
                }
            )
        return parser

    def _parse_ckpt_path(self) -> None:
        # LightningCLI reads --ckpt_path's hyperparameters here, first of all: a damaged file
        # gets one line instead of torch.load's EOFError
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if isinstance(ckpt_path, str):
            problem = checkpoint_file_problem(ckpt_path)
            if problem is not None:
                from lightning_m3ddm.predict import cli_args

                cli_args.exit_on_bad_arguments(f"--ckpt_path {problem}")
        # Lightning would rebuild the training module from the checkpoint's class path, which
        # cannot predict; predict instead takes the checkpoint as the predictor's weights
        if subcommand != "predict":
            return super()._parse_ckpt_path()
        if not ckpt_path:
            return None
        from importlib import import_module

        from lightning_m3ddm.predict import M3DDMPredictor, cli_args

        config = self.config["predict"]
        model = config["model"]
        module, _, name = str(model.get("class_path")).rpartition(".")
        if getattr(import_module(module), name, None) is not M3DDMPredictor:
            cli_args.exit_on_bad_arguments(f"--ckpt_path needs the M3DDMPredictor model, got {model.get('class_path')}")
        init_args = model["init_args"]
        init_args["weights"] = {"source": "pretrained", "path": str(ckpt_path)}
        init_args["unet"] = None  # the checkpoint's architecture and autoencoder
        init_args["autoencoder"] = None
        config["ckpt_path"] = None
        return None

    def before_instantiate_classes(self) -> None:
        super().before_instantiate_classes()
        if self.subcommand == "evaluate":
            self._before_evaluate_instantiation()
        if self.subcommand == "predict":
            from lightning_m3ddm.predict import cli_args

            problem = cli_args.check_predict_arguments(self.config["predict"])
            if problem is not None:
                cli_args.exit_on_bad_arguments(problem)
            cli_args.enable_predict_logging()
            self.save_config_callback = None  # predict leaves nothing but its videos behind

    def instantiate_trainer(self, **kwargs):
        """fit: :class:`~lightning_m3ddm.progress.RunProgressBar` unless a progress bar is configured
        or disabled (Lightning's default reads "Epoch 3/-2" or shrinks per epoch in step-bounded runs)."""
        if self.subcommand in ("fit", None):  # None: run=False, which builds a trainer for fitting
            from lightning.pytorch.callbacks import ProgressBar

            from lightning_m3ddm.progress import RunProgressBar

            trainer = (self.config_init[self.subcommand] if self.subcommand else self.config_init)["trainer"]
            callbacks = trainer.get("callbacks") or []
            callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
            if trainer.get("enable_progress_bar") is not False and not any(isinstance(c, ProgressBar) for c in callbacks):
                trainer["callbacks"] = [*callbacks, RunProgressBar()]
        return super().instantiate_trainer(**kwargs)

    def instantiate_classes(self) -> None:
        if self.subcommand not in ("predict", "evaluate"):
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

    # -- evaluate -----------------------------------------------------------------------

    def _before_evaluate_instantiation(self) -> None:
        """Check the evaluation arguments before any weights load; logs go to --output_dir."""
        from lightning_m3ddm.evaluation.config import check_config
        from lightning_m3ddm.evaluation.runner import output_dir_problem
        from lightning_m3ddm.predict import cli_args

        config = self.config["evaluate"]
        evaluation = config["evaluation"]
        if not isinstance(evaluation, EvaluationConfig):  # a jsonargparse Namespace before instantiation
            evaluation = EvaluationConfig(**(evaluation.as_dict() if hasattr(evaluation, "as_dict") else dict(evaluation)))
        problem = check_config(evaluation) or output_dir_problem(config.get("output_dir"))
        if problem is not None:
            cli_args.exit_on_bad_arguments(problem)
        if config["trainer"].get("default_root_dir") is None:
            config["trainer"]["default_root_dir"] = config["output_dir"]  # TensorBoard under DIR/lightning_logs
        cli_args.enable_predict_logging()

    def after_evaluate(self) -> None:
        from lightning_m3ddm.evaluation.runner import failed_count

        if failed_count(getattr(self.trainer, "evaluation_results", None)):
            raise SystemExit(1)


def export_command(args: list[str]) -> None:
    """``export --ckpt_path run.ckpt --output_dir model/ [--dtype float16] [--notes notes.md]``."""
    from lightning_m3ddm.checkpoints import CheckpointError
    from lightning_m3ddm.weights import export_checkpoint

    parser = argparse.ArgumentParser(
        prog="python -m lightning_m3ddm export",
        description="Write a training checkpoint as a folder that OutpaintingPipeline.from_pretrained loads.",
    )
    parser.add_argument("--ckpt_path", required=True, help="a .ckpt of this framework's training")
    parser.add_argument("--output_dir", required=True, help="the folder to write (must not exist, or be empty)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"],
                        help="of the stored UNet weights (float16 halves the size)")
    parser.add_argument("--notes", type=Path, help="a Markdown file appended to the model card (provenance)")
    parsed = parser.parse_args(args)
    try:
        notes = parsed.notes.read_text() if parsed.notes is not None else None
        folder = export_checkpoint(parsed.ckpt_path, parsed.output_dir, parsed.dtype, notes=notes)
    except (CheckpointError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"wrote {folder}")


def main(args: list[str] | None = None, **kwargs) -> M3DDMCLI | None:
    """The command line; ``kwargs`` go to LightningCLI (e.g. ``run=False`` to only build)."""
    argv = sys.argv[1:] if args is None else list(args)
    if argv[:1] == ["export"]:
        return export_command(argv[1:])
    return M3DDMCLI(
        L.LightningModule,
        L.LightningDataModule,
        trainer_class=M3DDMTrainer,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        args=args,
        auto_configure_optimizers=False,
        **kwargs,
    )
