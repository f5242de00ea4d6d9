"""``evaluate``: outpaint the test videos with every protocol and method, write the tables.

Usage (see ``configs/eval_*.yaml``)::

    python -m lightning_m3ddm evaluate --config configs/eval_davis.yaml --output_dir DIR

The run goes through Lightning's validation loop (``trainer.validate``) with an
:class:`~lightning_m3ddm.evaluation.evaluator.OutpaintingEvaluation` wrapped around the
configured model and an :class:`~lightning_m3ddm.evaluation.datamodule.EvaluationDataModule`
listing the videos, so the trainer's accelerator, precision, progress bar and loggers
apply. It writes ``DIR/results.json`` and ``DIR/results.md`` (atomically) and logs the
scalars ``<protocol>/<method>/<metric>`` and the Markdown table to the trainer's loggers
(TensorBoard under ``DIR/lightning_logs`` unless the config names another logger).
"""

from __future__ import annotations

import logging
import os

import lightning as L

from .config import EvaluationConfig, check_config

log = logging.getLogger(__name__)


class EvaluationConfigError(ValueError):
    """The run cannot start (bad protocol, method, output folder); one line for the user."""


def output_dir_problem(output_dir: str | os.PathLike | None) -> str | None:
    """Why ``output_dir`` cannot take the results, or None (creates it); predict's check."""
    from lightning_m3ddm.predict.errors import PredictConfigError
    from lightning_m3ddm.predict.writer import check_output_dir

    try:
        check_output_dir(output_dir)
    except PredictConfigError as err:
        return str(err)
    return None


def run_evaluation(
    trainer: L.Trainer,
    model: L.LightningModule | None,
    datamodule: L.LightningDataModule,
    config: EvaluationConfig,
    output_dir: str | os.PathLike | None,
) -> dict:
    """Evaluate ``model`` (and the baselines) on ``datamodule``'s videos; write ``results.*``.

    Returns:
        The summary written to ``results.json`` (before the paper's rows are added).

    Raises:
        EvaluationConfigError: a bad configuration or output folder, before any video.
    """
    from .evaluator import OutpaintingEvaluation
    from .results import write_results

    problem = check_config(config) or output_dir_problem(output_dir)
    if problem is None and trainer.world_size > 1:
        problem = (
            f"evaluate runs in one process on one device (trainer.devices=1, num_nodes=1), got {trainer.world_size} "
            "processes; split the inputs across runs instead"
        )
    if problem is None and not callable(getattr(datamodule, "val_dataloader", None)):
        problem = f"data must list the test videos (lightning_m3ddm.evaluation.EvaluationDataModule), got {type(datamodule).__name__}"
    if problem is not None:
        raise EvaluationConfigError(problem)
    evaluation = OutpaintingEvaluation(model, config)
    trainer.validate(evaluation, datamodule=datamodule, verbose=False)
    summary = evaluation.summary
    json_path, md_path = write_results(summary, output_dir)
    log.info("wrote %s and %s", json_path, md_path)
    for failure in summary.get("failures", []):
        log.warning("not evaluated: %s", failure["reason"])
    return summary


def failed_count(summary: dict | None) -> int:
    """Inputs that could not be read plus (protocol, method, clip) runs that failed."""
    if not summary:
        return 0
    count = len(summary.get("failures", []))
    for block in summary.get("protocols", {}).values():
        for entry in block.get("methods", {}).values():
            count += len(entry.get("failures", []))
    return count
