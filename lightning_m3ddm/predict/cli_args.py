"""The ``predict`` subcommand's own arguments and checks, used by :class:`lightning_m3ddm.cli.M3DDMCLI`.

Contract::

    python -m lightning_m3ddm predict --config configs/predict.yaml \\
        --input PATHS --target_ratio 9:16 --output_dir DIR

``--input`` (one or more paths, globs, folders or list files), ``--target_ratio``
(``9:16`` or ``9:16,1:1``; or ``--padding L,R,T,B``) are linked into the data module
(``data.init_args``), ``--output_dir`` into the :class:`OutpaintingWriter` callback,
which the predict subcommand always has (configurable under ``writer:``). Bad
arguments stop the run before any model is loaded, with one line on stderr and exit
status 2; a run in which some videos failed ends with exit status 1.
"""

from __future__ import annotations

import logging
import sys
from typing import Optional

import lightning as L

from lightning_m3ddm.checkpoints import CheckpointError
from lightning_m3ddm.predict.datamodule import resolve_jobs
from lightning_m3ddm.predict.errors import PredictConfigError
from lightning_m3ddm.predict.writer import OutpaintingWriter, check_output_dir

EXIT_BAD_ARGUMENTS = 2
EXIT_SOME_FAILED = 1


def add_predict_arguments(parser) -> None:
    """Add ``--input``, ``--target_ratio``, ``--padding``, ``--output_dir`` and the writer to ``parser``."""
    parser.add_argument(
        # [] rather than None: jsonargparse cannot check a None list while linking it (it
        # would say "'NoneType' object is not iterable"); check_predict_arguments names it
        "--input", type=str, nargs="+", default=[],
        help="Input videos: paths, globs ('videos/*.mp4'), folders or list files (.txt, one per line).",
    )
    parser.add_argument(
        "--target_ratio", type=Optional[str], default=None,
        help="Aspect ratio(s) to outpaint to, e.g. 9:16 or 9:16,1:1.",
    )
    parser.add_argument(
        "--padding", type=Optional[str], default=None,
        help="Explicit border in source pixels LEFT,RIGHT,TOP,BOTTOM (instead of or besides --target_ratio).",
    )
    parser.add_argument("--output_dir", type=Optional[str], default=None, help="Folder for <stem>_<ratio>.mp4.")
    parser.add_argument(
        "--overwrite", type=bool, default=False,
        help="Redo videos that an earlier run finished with the same source and settings (default: skip them).",
    )
    parser.add_argument("--num_jobs", type=int, default=1, help="Array jobs sharing the inputs (e.g. SLURM_ARRAY_TASK_COUNT).")
    parser.add_argument("--job_index", type=int, default=0, help="This array job's index in [0, num_jobs).")
    parser.add_lightning_class_args(OutpaintingWriter, "writer")
    parser.link_arguments("overwrite", "writer.overwrite")
    parser.link_arguments("num_jobs", "data.init_args.num_jobs")
    parser.link_arguments("job_index", "data.init_args.job_index")
    parser.link_arguments("input", "data.init_args.inputs")
    parser.link_arguments("target_ratio", "data.init_args.target_ratio")
    parser.link_arguments("padding", "data.init_args.padding")
    parser.link_arguments("output_dir", "writer.output_dir")
    # Predictions are written by the callback; keeping them would only hold memory.
    parser.set_defaults({"return_predictions": False})


def check_predict_arguments(config) -> str | None:
    """The first problem with the predict arguments (one line), or None.

    Resolves the inputs (globs, list files) and parses every target, and makes sure
    the output folder can be written, before any weights are loaded.
    """
    if not config.get("input"):
        return "no input video given: --input PATHS (videos, globs, folders or list files)"
    num_jobs, job_index = config.get("num_jobs", 1), config.get("job_index", 0)
    if num_jobs < 1 or not 0 <= job_index < num_jobs:
        return f"--job_index must be in [0, --num_jobs), got {job_index} of {num_jobs}"
    # the datamodule resolves the inputs again and warns then (e.g. about duplicate stems):
    # warning here too would print every warning twice
    resolver_log = logging.getLogger(resolve_jobs.__module__)
    was_disabled, resolver_log.disabled = resolver_log.disabled, True
    try:
        resolve_jobs(config["input"], config.get("target_ratio"), config.get("padding"))
        check_output_dir(config.get("output_dir"))
    except PredictConfigError as err:
        return str(err)
    finally:
        resolver_log.disabled = was_disabled
    return None


def weights_problem(error: BaseException) -> str | None:
    """The message of a :class:`CheckpointError` (missing or unusable weights) behind ``error``, if any."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, CheckpointError):
            return f"cannot load the model: {error}"
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def exit_on_bad_arguments(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(EXIT_BAD_ARGUMENTS)


def predict_failures(trainer: L.Trainer) -> list[str]:
    """Failure messages recorded by this rank's writers."""
    return [msg for cb in trainer.callbacks if isinstance(cb, OutpaintingWriter) for msg in cb.failures]


def exit_status_after_predict(trainer: L.Trainer) -> int:
    """1 when any video failed on any rank, else 0."""
    failed = len(predict_failures(trainer)) > 0
    if trainer.world_size > 1:
        failed = trainer.strategy.reduce_boolean_decision(failed, all=False)
    return EXIT_SOME_FAILED if failed else 0


def enable_predict_logging() -> None:
    """One line per written file / failed video on stderr, unless logging is configured already."""
    logger = logging.getLogger("lightning_m3ddm")
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
