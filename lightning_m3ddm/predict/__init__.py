"""``predict``: long-video outpainting with the hybrid coarse-to-fine pipeline (paper 3.3).

Modules, in the order a video goes through them:

* :mod:`.datamodule` -- inputs (paths, globs, folders, list files) -> one job per video;
* :mod:`lightning_m3ddm.video.stream` -- probing, streaming decode, H.264 writing with the audio;
* :mod:`.canvas` -- a source frame drawn on the model canvas (context, inpainted start);
* :mod:`.latent_store` -- per-frame latents on disk (memory bounded by design);
* :mod:`.pipeline` -- :class:`OutpaintingPipeline`: prepare, generate level by level, decode;
* :mod:`.tiling` -- a canvas larger than the model's as overlapping windows (:class:`TilingConfig`);
* :mod:`.composite` -- native-resolution (or canvas) output frames per target;
* :mod:`.predictor` -- :class:`M3DDMPredictor`, the LightningModule;
* :mod:`.writer` -- :class:`OutpaintingWriter`, the prediction-writer callback.

A run over a catalogue (many videos, processes, nodes, preemptions):

* :mod:`.batch_job` -- one process's part: the videos it takes, its records and report lines;
* :mod:`.assignment` -- array-job and rank shares, longest-first order;
* :mod:`.claims` -- leases and atomic claim files: who does which video;
* :mod:`.preparation` -- decoding and painting ahead in loader workers;
* :mod:`.encode_queue` -- writing finished videos on a background thread;
* :mod:`.resume` -- records of finished videos, skipped by later runs;
* :mod:`.report` -- ``predict_report.jsonl``;
* :mod:`.preemption` -- stop signals;
* :mod:`.leftovers` -- what killed runs left behind, removed at start.
"""

from lightning_m3ddm.predict.datamodule import VideoJob, VideoPredictDataModule, resolve_jobs
from lightning_m3ddm.predict.errors import PredictConfigError, PredictError, VideoInputError
from lightning_m3ddm.predict.pipeline import (
    GlobalFramesConfig,
    OutpaintedVideo,
    OutpaintingPipeline,
    SamplingConfig,
)
from lightning_m3ddm.predict.predictor import M3DDMPredictor, VideoPrediction
from lightning_m3ddm.predict.tiling import TilingConfig
from lightning_m3ddm.predict.writer import OutpaintingWriter

__all__ = [
    "GlobalFramesConfig",
    "M3DDMPredictor",
    "OutpaintedVideo",
    "OutpaintingPipeline",
    "OutpaintingWriter",
    "PredictConfigError",
    "PredictError",
    "SamplingConfig",
    "TilingConfig",
    "VideoInputError",
    "VideoJob",
    "VideoPrediction",
    "VideoPredictDataModule",
    "resolve_jobs",
]
