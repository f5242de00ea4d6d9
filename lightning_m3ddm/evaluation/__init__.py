"""Evaluation of outpainted videos: the paper's metrics and protocols, baselines, reference numbers.

* :mod:`.protocols`: mask protocols as data, :func:`mask_for`.
* :mod:`.metrics`: MSE / PSNR / SSIM / LPIPS per video, whole frame and generated region; means per protocol and method.
* :mod:`.fvd`: FVD from a local I3D TorchScript file.
* :mod:`.baselines`: OpenCV Telea inpainting and edge replication.
* :mod:`.paper_results`: Tables 1-3 of the paper.
* :mod:`.results`: ``results.json`` / ``results.md``.
* ``evaluate`` (``python -m lightning_m3ddm evaluate``): :mod:`.config` (settings),
  :mod:`.inputs` and :mod:`.datamodule` (test videos, DAVIS / YouTube-VOS frame folders),
  :mod:`.model_runner` (the model through predict's pipeline), :mod:`.evaluator` (the
  LightningModule run by the validation loop), :mod:`.runner` (the command).
"""

from importlib import import_module
from typing import Any

# Resolved lazily: importing the package must not pull in torchmetrics or OpenCV.
_EXPORTS = {
    "MaskProtocol": "protocols",
    "PROTOCOLS": "protocols",
    "get_protocol": "protocols",
    "mask_for": "protocols",
    "long_video_protocol": "protocols",
    "MetricConfig": "metrics",
    "LPIPSScorer": "metrics",
    "VideoScores": "metrics",
    "VideoMetricAccumulator": "metrics",
    "video_metrics": "metrics",
    "MetricAccumulator": "metrics",
    "FVDAccumulator": "fvd",
    "I3DFeatureExtractor": "fvd",
    "load_i3d": "fvd",
    "frechet_distance": "fvd",
    "BaselineConfig": "baselines",
    "make_baseline": "baselines",
    "outpaint_video": "baselines",
    "iter_outpaint": "baselines",
    "paper_rows": "paper_results",
    "write_results": "results",
    "EvaluationConfig": "config",
    "EvaluationDataModule": "datamodule",
    "SyntheticInputs": "datamodule",
    "EvalVideo": "inputs",
    "resolve_videos": "inputs",
    "read_video": "inputs",
    "PipelineOutpainter": "model_runner",
    "OutpaintingEvaluation": "evaluator",
    "run_evaluation": "runner",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
