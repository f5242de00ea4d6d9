"""OutpaintingEvaluation: the LightningModule that ``evaluate`` runs through Lightning's validation loop.

One validation batch = test videos. For each video and each protocol:

1. the ground truth: the video at the protocol's square frame size
   (:func:`~lightning_m3ddm.evaluation.inputs.read_video`), cut into the protocol's
   clips (whole video, or SSv2's two 16-frame windows);
2. the mask: :func:`~lightning_m3ddm.evaluation.protocols.mask_bands` on that frame;
3. every method outpaints the clip from its known rectangle only (the generated region
   of the ground truth is blacked out for the baselines and never given to the model);
4. per clip: MSE / PSNR / SSIM / LPIPS, whole frame and generated region
   (:class:`~lightning_m3ddm.evaluation.metrics.VideoMetricAccumulator`, streamed in
   chunks of frames), and the I3D features of 16 uniformly sampled frames for FVD.

At the end of the epoch: FVD per protocol and method, means over clips, the summary
(:attr:`summary`, what :func:`~lightning_m3ddm.evaluation.results.write_results` writes),
and the scalars logged (``<protocol>/<method>/<metric>``) to the trainer's loggers.

A video that cannot be read is reported once (``summary["failures"]``) and skipped; a
method that fails on a clip is recorded for that protocol and method; the rest goes on.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from einops import rearrange

from .baselines import BaselineConfig, iter_outpaint, make_baseline
from .config import BASELINE_METHODS, DENSE_MODEL_METHOD, MODEL_METHODS, EvaluationConfig, check_methods, resolve_protocols
from .fvd import FVDAccumulator, load_i3d, uniform_frame_indices
from .inputs import EvalInputError, EvalVideo, VideoFrames, clip_starts, read_video
from .metrics import METRICS, SCOPES, LPIPSScorer, MetricConfig, MetricAccumulator, VideoMetricAccumulator, VideoScores, metric_key
from .model_runner import PipelineOutpainter, plan_key, protocol_schedule
from .protocols import MaskProtocol, band_mask, mask_bands, masked_fraction, protocol_changes

log = logging.getLogger(__name__)

# Frames per metric update: bounds memory on long videos (float64 SSIM maps).
SCORE_CHUNK = 32


def to_unit(frames: np.ndarray) -> torch.Tensor:
    """uint8 (F, H, W, 3) -> float32 (F, 3, H, W) in [0, 1] (paper 4.1)."""
    return rearrange(torch.from_numpy(np.ascontiguousarray(frames)), "f h w c -> f c h w").float() / 255.0


def jsonable(value: Any) -> Any:
    """A JSON-serialisable copy of config values (dataclasses, paths, tuples, modules by class)."""
    if is_dataclass(value) and not isinstance(value, type):
        return jsonable(asdict(value))
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.nn.Module):
        return type(value).__module__ + "." + type(value).__qualname__
    return repr(value)


def clip_name(video: str, index: int, count: int) -> str:
    """``video`` for a whole-video clip, ``video@w0``, ``video@w1`` for temporal windows."""
    return video if count == 1 else f"{video}@w{index}"


class OutpaintingEvaluation(L.LightningModule):
    """Scores outpainting methods on test videos (see module docstring).

    Args:
        model: a module with an ``OutpaintingPipeline`` as ``.pipeline`` (e.g.
            :class:`~lightning_m3ddm.predict.M3DDMPredictor`); needed only for the
            ``m3ddm`` methods.
        config: protocols, methods, metric weights.
    """

    def __init__(self, model: torch.nn.Module | None, config: EvaluationConfig = EvaluationConfig()):
        super().__init__()
        self.config = config
        self.protocols: list[MaskProtocol] = resolve_protocols(config)
        self.methods: list[str] = check_methods(config.methods)
        wants_model = any(m in MODEL_METHODS for m in self.methods)
        if wants_model and getattr(model, "pipeline", None) is None:
            raise ValueError(
                f"methods {[m for m in self.methods if m in MODEL_METHODS]} need a model with an outpainting pipeline "
                f"(e.g. lightning_m3ddm.predict.M3DDMPredictor), got {type(model).__name__}"
            )
        self.model = model if wants_model else None
        self.baseline_config = BaselineConfig(telea_radius=config.telea_radius)
        self.metric_config = MetricConfig(
            lpips_net=config.lpips_net, lpips_backbone_weights=config.lpips_backbone_weights, allow_download=config.allow_download
        )
        self.accumulator = MetricAccumulator()
        self.failures: list[dict] = []
        self.notes: dict[tuple[str, str], set[str]] = defaultdict(set)
        self.seconds: dict[tuple[str, str], float] = defaultdict(float)
        self.videos_seen: list[dict] = []
        self.lpips: LPIPSScorer | None = None
        self.fvd: dict[str, FVDAccumulator] = {}
        self.outpainter: PipelineOutpainter | None = None  # set when the loop starts
        self.summary: dict | None = None
        self._started = 0.0

    # -- set-up --------------------------------------------------------------------------

    def on_validation_start(self) -> None:
        self._started = time.perf_counter()
        self.lpips = LPIPSScorer.from_config(self.metric_config, self.device)
        if self.lpips.reason:
            log.warning("LPIPS not computed: %s", self.lpips.reason)
        extractor, reason = load_i3d(self.config.i3d_path, self.device, self.config.i3d_input_format)
        if reason:
            log.warning("FVD not computed: %s", reason)
        self.fvd = {p.name: FVDAccumulator(extractor, reason, p.fvd_frames) for p in self.protocols}
        self.outpainter = PipelineOutpainter(self.model.pipeline, self.config.work_dir) if self.model is not None else None

    # -- one video -----------------------------------------------------------------------

    def validation_step(self, batch: list[EvalVideo], batch_idx: int) -> None:
        for video in batch:
            self.evaluate_video(video)

    def evaluate_video(self, video: EvalVideo) -> None:
        geometries = list(dict.fromkeys((p.frame_size, p.frame_fit) for p in self.protocols))
        frames: dict[tuple[int, str], VideoFrames] = {}
        try:
            for size, fit in geometries:
                frames[(size, fit)] = read_video(video, size, fit)
        except EvalInputError as error:
            log.error("not evaluated: %s", error)
            self.failures.append({"video": video.name, "path": video.path, "reason": str(error)})
            return
        first = next(iter(frames.values()))
        self.videos_seen.append({"video": video.name, "path": video.path, "kind": video.kind, "frames": len(first.frames), "fps": first.fps})
        for protocol in self.protocols:
            data = frames[(protocol.frame_size, protocol.frame_fit)]
            starts = clip_starts(len(data.frames), protocol.clip_frames, protocol.clips_per_video)
            length = protocol.clip_frames or len(data.frames)
            for index, start in enumerate(starts):
                clip = data.frames[start : start + length]
                self.evaluate_clip(protocol, clip_name(video.name, index, len(starts)), clip, data.fps)

    def evaluate_clip(self, protocol: MaskProtocol, clip_id: str, truth: np.ndarray, fps: float) -> None:
        """Every method on one clip: uint8 (F, H, W, 3) ground truth at the protocol's size."""
        height, width = truth.shape[1:3]
        bands = mask_bands(protocol, height, width)
        mask = band_mask(bands, height, width)
        fvd_index = uniform_frame_indices(len(truth), protocol.fvd_frames)
        fvd = self.fvd[protocol.name]
        fvd.add_real(protocol.name, to_unit(truth[fvd_index]))
        by_plan: dict[tuple, tuple[str, np.ndarray]] = {}
        for method in self.methods:
            started = time.perf_counter()
            try:
                prediction = self.outpaint(method, protocol, truth, bands, mask, fps, by_plan)
            except Exception as error:  # one failing method or clip never stops the run
                log.exception("%s / %s / %s failed", protocol.name, method, clip_id)
                self.accumulator.add_failure(protocol.name, method, clip_id, f"{type(error).__name__}: {error}")
                if isinstance(error, torch.cuda.OutOfMemoryError):
                    torch.cuda.empty_cache()
                continue
            self.seconds[(protocol.name, method)] += time.perf_counter() - started
            self.accumulator.add_video(protocol.name, method, self.score(prediction, truth, mask), clip_id)
            fvd.add_fake(protocol.name, method, to_unit(prediction[fvd_index]))

    def outpaint(self, method, protocol, truth, bands, mask, fps, by_plan) -> np.ndarray:
        """One method's uint8 (F, H, W, 3) result; the model reuses an identical earlier plan's output."""
        if method in BASELINE_METHODS:
            masked = truth.copy()
            masked[:, mask] = 0  # the baselines see the known rectangle only
            fill = make_baseline(method, self.baseline_config)
            return np.stack(list(iter_outpaint(masked, mask, fill)))
        schedule = protocol_schedule(self.outpainter.base_schedule, protocol, dense=method == DENSE_MODEL_METHOD)
        key = plan_key(schedule, len(truth))
        if key in by_plan:
            source, prediction = by_plan[key]
            self.notes[(protocol.name, method)].add(
                f"same model calls as {source} on clips whose plan is identical (e.g. dense protocols, or videos "
                f"below the dense threshold): its output is reused"
            )
            return prediction
        prediction = self.outpainter.outpaint(truth, bands, fps, schedule)
        by_plan[key] = (method, prediction)
        return prediction

    def score(self, prediction: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> VideoScores:
        accumulator = VideoMetricAccumulator(self.metric_config, self.lpips)
        for start in range(0, len(truth), SCORE_CHUNK):
            chunk = slice(start, start + SCORE_CHUNK)
            accumulator.update(to_unit(prediction[chunk]), to_unit(truth[chunk]), mask)
        return accumulator.result()

    # -- the end -------------------------------------------------------------------------

    def on_validation_epoch_end(self) -> None:
        for protocol in self.protocols:
            for method in self.methods:
                value, reason = self.fvd[protocol.name].compute(protocol.name, method)
                self.accumulator.set_metric(protocol.name, method, "fvd", value, reason)
        self.summary = self.build_summary()
        scalars = self.scalars(self.summary)
        if scalars:
            self.log_dict(scalars)
        self.log_table(self.summary)

    def log_table(self, summary: dict) -> None:
        """The Markdown results as text in TensorBoard (next to the scalars)."""
        from lightning.pytorch.loggers import TensorBoardLogger

        from .results import render_markdown, with_paper

        for logger in self.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_text("evaluation/results", render_markdown(with_paper(summary)), global_step=0)

    def protocol_record(self, protocol: MaskProtocol) -> dict:
        size = protocol.frame_size
        bands = mask_bands(protocol, size, size)
        changes = protocol_changes(protocol)
        record = jsonable(asdict(protocol))
        record.update(
            bands_px={"top": bands.top, "bottom": bands.bottom, "left": bands.left, "right": bands.right},
            masked_fraction=masked_fraction(band_mask(bands, size, size)),
            changes=changes,
            matches_paper=not changes,
        )
        return record

    def build_summary(self) -> dict:
        raw = self.accumulator.summary()["protocols"]
        protocols: dict[str, dict] = {}
        for protocol in self.protocols:
            methods = raw.get(protocol.name, {}).get("methods", {})
            block = {"protocol": self.protocol_record(protocol), "methods": {}}
            for method in self.methods:
                entry = dict(methods.get(method) or {})
                entry["notes"] = sorted(self.notes.get((protocol.name, method), ()))
                entry["seconds"] = round(self.seconds.get((protocol.name, method), 0.0), 3)
                block["methods"][method] = entry
            protocols[protocol.name] = block
        model = self.model
        hparams = dict(getattr(model, "hparams", {}) or {}) if model is not None else {}
        meta = {
            "methods": list(self.methods),
            "evaluation": jsonable(self.config),
            "model": None if model is None else {"class": jsonable(model), "hparams": jsonable(hparams)},
            "videos": self.videos_seen,
            "lpips": {"available": bool(self.lpips and self.lpips.available), "reason": self.lpips.reason if self.lpips else None},
            "fvd": next(({"available": a.available, "reason": a.reason} for a in self.fvd.values()), None),
            "device": str(self.device),
            "seconds": round(time.perf_counter() - self._started, 3),
        }
        return {"protocols": protocols, "failures": list(self.failures), "meta": meta}

    @staticmethod
    def scalars(summary: dict) -> dict[str, float]:
        """``<protocol>/<method>/<metric>`` -> value for every metric that has one."""
        keys = [metric_key(m, s) for s in SCOPES for m in METRICS] + ["fvd"]
        out = {}
        for protocol, block in summary["protocols"].items():
            for method, entry in block["methods"].items():
                for key in keys:
                    value = entry.get("metrics", {}).get(key)
                    if value is not None and np.isfinite(value):
                        out[f"{protocol}/{method}/{key}"] = float(value)
        return out
