"""``python -m lightning_m3ddm evaluate``: the tiny random model and the baselines end to end.

One command (module fixture) evaluates configs/eval_tiny.yaml (the tiny random model and the
baselines) on a generated mp4, the repo's sample clip and a truncated file, under a dense and a
coarse-to-fine protocol; the tests read what it wrote (results.json, results.md, the TensorBoard
events). A second, model-free run (baselines only, so it is fast) reads a generated DAVIS-style
JPEG folder too, cuts SSv2 clips, and checks FVD through the command against an independent
NumPy/SciPy computation. The rest are fast unit tests of the pieces the command is built from.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.linalg
import torch

from lightning_m3ddm.cli import main
from lightning_m3ddm.data.synthetic import SyntheticVideoSpec, render_frames, write_synthetic_video, write_truncated_copy
from lightning_m3ddm.evaluation.config import EvaluationConfig, check_config, check_methods, resolve_protocols
from lightning_m3ddm.evaluation.fvd import uniform_frame_indices
from lightning_m3ddm.evaluation.inputs import EvalVideo, clip_starts, fit_frame, read_video, resolve_videos
from lightning_m3ddm.evaluation.metrics import ssim_map, ssim_map_torchmetrics
from lightning_m3ddm.evaluation.model_runner import plan_key, protocol_schedule
from lightning_m3ddm.evaluation.protocols import PROTOCOLS, mask_bands, mask_for, override_protocol
from lightning_m3ddm.geometry import canvas_layout

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning", "ignore:`torch.jit:FutureWarning")

REPO = Path(__file__).parent.parent
SAMPLE = REPO / "tests" / "data" / "carphone_176x144_30fps_120f.mp4"
TINY = REPO / "configs" / "eval_tiny.yaml"
PROTOCOLS_RUN = ["davis_h025", "long_video"]
METHODS_RUN = ["m3ddm", "m3ddm_dense", "telea", "edge_replicate"]
FRAMES = 15  # first frames of each video: small, and still two coarse-to-fine levels (8-frame windows, strides [2, 1])


def _jpeg_folder(folder: Path, spec: SyntheticVideoSpec) -> Path:
    folder.mkdir(parents=True)
    for index, frame in enumerate(render_frames(spec)):
        # names that sort wrongly as text (frame_2 after frame_10) check the natural frame order
        cv2.imwrite(str(folder / f"frame_{index}.jpg"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    return folder


def _inputs(root: Path) -> dict[str, Path]:
    """A generated mp4, a generated JPEG folder, the sample clip and a truncated mp4."""
    root.mkdir(parents=True, exist_ok=True)
    return {
        "mp4": write_synthetic_video(root / "scene.mp4", SyntheticVideoSpec(width=96, height=64, num_frames=16, seed=3)),
        "jpeg": _jpeg_folder(root / "bear", SyntheticVideoSpec(width=80, height=48, num_frames=16, seed=4)),
        "sample": SAMPLE,
        "bad": write_truncated_copy(SAMPLE, root / "broken.mp4", keep_fraction=0.3),
    }


def _run(args: list[str], torch_home: Path) -> int:
    """The command in this process; its exit status (0 when it returns)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TORCH_HOME", str(torch_home))  # no cached LPIPS backbone: LPIPS must be n/a, offline
        try:
            main(args)
        except SystemExit as stop:
            return int(stop.code or 0)
    return 0


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_tiny")
    inputs = _inputs(root / "inputs")
    listing = root / "inputs.txt"  # a list file: one input per line, relative to the list file
    listing.write_text("\n".join(["# test videos", "inputs/scene.mp4", str(SAMPLE), "inputs/broken.mp4"]) + "\n")
    out = root / "out"
    status = _run(
        [
            "evaluate", "--config", str(TINY), "--output_dir", str(out),
            f"--data.init_args.inputs={listing}", "--data.init_args.synthetic=null", f"--data.init_args.max_frames={FRAMES}",
            f"--evaluation.protocols=[{', '.join(PROTOCOLS_RUN)}]", "--evaluation.protocol_overrides={long_video: {strides: [2, 1]}}",
            f"--evaluation.work_dir={root}",
        ],
        root / "torch_home",
    )
    results = json.loads((out / "results.json").read_text())
    return {"status": status, "out": out, "inputs": inputs, "results": results, "markdown": (out / "results.md").read_text()}


# --------------------------------------------------------------------------- the tiny command


def test_tiny_run_writes_every_protocol_and_method(tiny_run):
    results = tiny_run["results"]
    assert list(results["protocols"]) == PROTOCOLS_RUN
    for name, block in results["protocols"].items():
        assert list(block["methods"]) == METHODS_RUN
        assert block["protocol"]["changes"]["frame_size"] == 64 and block["protocol"]["matches_paper"] is False
        fraction = block["protocol"]["masked_fraction"]
        for method, entry in block["methods"].items():
            metrics, reasons = entry["metrics"], entry["reasons"]
            assert entry["num_videos"] == 2 and entry["failures"] == []
            for key in ("mse", "psnr", "ssim", "region_mse", "region_psnr", "region_ssim"):
                assert math.isfinite(metrics[key]), (name, method, key)
            assert 0 < metrics["ssim"] <= 1 and 0 < metrics["region_mse"] < 1
            # known pixels are the ground truth's: the whole-frame error is the region's, diluted
            assert metrics["mse"] == pytest.approx(metrics["region_mse"] * fraction, rel=1e-9)
            assert metrics["lpips"] is None and "LPIPS" in reasons["lpips"] and metrics["region_lpips"] is None
            assert metrics["fvd"] is None and "I3D" in reasons["fvd"]


def test_tiny_run_model_rows(tiny_run):
    davis = tiny_run["results"]["protocols"]["davis_h025"]["methods"]
    long = tiny_run["results"]["protocols"]["long_video"]["methods"]
    # dense protocol: the dense variant is the same plan, its output reused (and said so)
    assert davis["m3ddm_dense"]["metrics"] == davis["m3ddm"]["metrics"]
    assert any("reused" in note for note in davis["m3ddm_dense"]["notes"])
    # long videos: coarse-to-fine and dense are different model calls, hence different outputs
    assert long["m3ddm"]["metrics"]["region_mse"] != long["m3ddm_dense"]["metrics"]["region_mse"]
    assert long["m3ddm_dense"]["notes"] == []
    # the random model is not the baselines
    assert davis["m3ddm"]["metrics"]["region_mse"] != davis["telea"]["metrics"]["region_mse"]


def test_tiny_run_reports_the_bad_input_and_evaluates_the_others(tiny_run):
    results = tiny_run["results"]
    videos = {v["video"]: v for v in results["meta"]["videos"]}
    assert set(videos) == {"scene", "carphone_176x144_30fps_120f"}
    assert videos["carphone_176x144_30fps_120f"]["fps"] == pytest.approx(30000 / 1001)
    assert videos["scene"]["frames"] == FRAMES and videos["scene"]["fps"] == 24.0
    davis_videos = {v["video"]: v for v in results["protocols"]["davis_h025"]["methods"]["m3ddm"]["videos"]}
    assert set(davis_videos) == set(videos) and davis_videos["scene"]["num_frames"] == FRAMES
    [failure] = results["failures"]
    assert failure["video"] == "broken" and failure["path"].endswith("broken.mp4") and "truncated" in failure["reason"]
    assert tiny_run["status"] == 1  # some input failed; the results are written all the same


def test_tiny_run_markdown(tiny_run):
    markdown = tiny_run["markdown"]
    for protocol in PROTOCOLS_RUN:
        section = markdown.split(f"## {protocol}\n", 1)[1].split("\n## ", 1)[0]
        for method in METHODS_RUN:
            row = next(line for line in section.splitlines() if line.startswith(f"| {method} |"))
            assert row.count("|") == 12 and "n/a" in row  # 11 columns; LPIPS and FVD n/a
        assert "Paper rows not shown: this run changed the protocol" in section
        assert "| paper " not in section
    assert "## Inputs not evaluated" in markdown and "broken: " in markdown
    assert "/ fvd: no I3D TorchScript file given" in markdown


def test_tiny_run_logs_scalars_to_tensorboard(tiny_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    [events] = list((tiny_run["out"] / "lightning_logs").rglob("events.out.tfevents.*"))
    accumulator = EventAccumulator(str(events.parent))
    accumulator.Reload()
    tags = set(accumulator.Tags()["scalars"])
    results = tiny_run["results"]["protocols"]
    for protocol in PROTOCOLS_RUN:
        for method in METHODS_RUN:
            for key in ("mse", "psnr", "ssim", "region_psnr"):
                tag = f"{protocol}/{method}/{key}"
                assert tag in tags
                assert accumulator.Scalars(tag)[-1].value == pytest.approx(results[protocol]["methods"][method]["metrics"][key], rel=1e-5)
    assert f"{PROTOCOLS_RUN[0]}/m3ddm/lpips" not in tags  # n/a values are not logged as numbers
    assert (events.parent / "config.yaml").is_file()


# --------------------------------------------------------------------------- FVD through the command


class _StandInI3D(torch.nn.Module):
    """Two features per clip: mean brightness and the last-minus-first frame brightness."""

    def forward(self, x: torch.Tensor, rescale: bool = True, resize: bool = True, return_features: bool = True) -> torch.Tensor:
        v = x.float() / 127.5 - 1.0
        return torch.stack([v.mean(dim=(1, 2, 3, 4)), (v[:, :, -1] - v[:, :, 0]).mean(dim=(1, 2, 3))], dim=1)


def _np_features(frames: np.ndarray) -> np.ndarray:
    """The stand-in's features, independently: uint8 (F, H, W, 3) -> (2,)."""
    v = frames[uniform_frame_indices(len(frames), 16)].astype(np.float64) / 127.5 - 1.0
    return np.array([v.mean(), (v[-1] - v[0]).mean()])


def _np_fvd(real: np.ndarray, fake: np.ndarray) -> float:
    mu1, mu2 = real.mean(0), fake.mean(0)
    s1, s2 = np.cov(real, rowvar=False), np.cov(fake, rowvar=False)
    root = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * root))


def test_baselines_on_jpeg_folders_and_ssv2_clips_with_fvd_checked_independently(tmp_path):
    inputs = _inputs(tmp_path / "inputs")
    i3d = tmp_path / "i3d_torchscript.pt"
    torch.jit.save(torch.jit.script(_StandInI3D()), str(i3d))
    out = tmp_path / "out"
    status = _run(
        [
            "evaluate", "--config", str(TINY), "--output_dir", str(out),
            f"--data.init_args.inputs=[{inputs['mp4']}, {inputs['jpeg']}, {inputs['sample']}]", "--data.init_args.synthetic=null",
            "--data.init_args.max_frames=8", "--evaluation.protocols=[davis_h025, ssv2_opc]", "--evaluation.frame_size=null",
            "--evaluation.protocol_overrides={ssv2_opc: {clip_frames: 5}}",
            "--evaluation.methods=[telea, edge_replicate]", f"--evaluation.i3d_path={i3d}", "--trainer.logger=false",
        ],
        tmp_path / "torch_home",
    )
    assert status == 0
    results = json.loads((out / "results.json").read_text())
    videos = {v["video"]: v for v in results["meta"]["videos"]}
    assert videos["bear"]["kind"] == "frames" and videos["bear"]["frames"] == 8 and videos["bear"]["fps"] == 24.0
    ssv2 = results["protocols"]["ssv2_opc"]["methods"]["telea"]["videos"]
    assert [v["video"] for v in ssv2 if v["video"].startswith("bear")] == ["bear@w0", "bear@w1"]  # 2 windows per video
    assert [v["num_frames"] for v in ssv2] == [5] * 6
    # davis_h025 as the paper has it (256 x 256, 32 px bands): the paper's rows are printed beside ours
    assert results["protocols"]["davis_h025"]["protocol"]["matches_paper"] is True
    assert [row["method"] for row in results["protocols"]["davis_h025"]["paper"]] == ["Dehan [6]", "SDM [28]", "Ours"]
    assert results["protocols"]["ssv2_opc"]["paper"] == [] and "clip_frames=5" in results["protocols"]["ssv2_opc"]["paper_omitted"]
    markdown = (out / "results.md").read_text()
    assert "| paper Table 1: Ours | — | 0.0149 | 20.26 | 0.7082 | 0.2026 | 300.0 |" in markdown
    assert "| paper Table 3: Ours |" not in markdown
    methods = results["protocols"]["davis_h025"]["methods"]
    real, fake = [], []
    for path, kind in ((inputs["mp4"], "file"), (inputs["jpeg"], "frames"), (inputs["sample"], "file")):
        truth = read_video(EvalVideo(Path(path).stem, str(path), kind, 24.0, 8), 256, "resize").frames
        bands = mask_bands("davis_h025", 256, 256)
        assert (bands.left, bands.right) == (32, 32)
        known = truth[:, :, bands.left : 256 - bands.right]
        replicated = np.pad(known, ((0, 0), (0, 0), (bands.left, bands.right), (0, 0)), mode="edge")
        real.append(_np_features(truth))
        fake.append(_np_features(replicated))
    expected = _np_fvd(np.stack(real), np.stack(fake))
    assert methods["edge_replicate"]["metrics"]["fvd"] == pytest.approx(expected, rel=1e-6, abs=1e-9)
    assert math.isfinite(methods["telea"]["metrics"]["fvd"]) and methods["telea"]["metrics"]["fvd"] >= 0
    assert methods["telea"]["metrics"]["fvd"] != methods["edge_replicate"]["metrics"]["fvd"]


def test_bad_arguments_stop_before_any_model_work(tmp_path, capsys):
    assert _run(["evaluate", "--config", str(TINY)], tmp_path) == 2
    assert "no output folder given: --output_dir DIR" in capsys.readouterr().err
    assert _run(["evaluate", "--config", str(TINY), "--output_dir", str(tmp_path / "o"), "--evaluation.protocols=[davis_h03]"], tmp_path) == 2
    assert "unknown evaluation protocol(s) ['davis_h03']" in capsys.readouterr().err
    assert _run(["evaluate", "--config", str(TINY), "--output_dir", str(tmp_path / "o"), "--evaluation.methods=[telea, dehan]"], tmp_path) == 2
    assert "unknown evaluation method(s) ['dehan']" in capsys.readouterr().err


# --------------------------------------------------------------------------- pieces


def test_the_models_known_region_is_the_protocols():
    """Source = known rectangle, target = the bands as padding: the canvas puts the source exactly where the mask keeps it."""
    for name, protocol in PROTOCOLS.items():
        size = protocol.frame_size
        bands = mask_bands(protocol, size, size)
        known = bands.inner_box(size, size)
        x0, y0, x1, y1 = known.x0, known.y0, known.x1, known.y1
        for canvas in (256, 2 * size):
            layout = canvas_layout(known.width, known.height, [bands], canvas, canvas)
            scale = canvas / size
            box = layout.source_box
            assert (box.x0, box.y0, box.x1, box.y1) == (x0 * scale, y0 * scale, x1 * scale, y1 * scale), name
            assert layout.known_box == box, name  # bands on the 8-px grid: every known latent cell is source
            crop = layout.crops[0]
            assert (crop.x0, crop.y0, crop.x1, crop.y1) == (0, 0, canvas, canvas), name


def test_dense_and_coarse_to_fine_plans():
    from lightning_m3ddm.coarse_to_fine import ScheduleConfig

    base = ScheduleConfig(window=16, strides=(15, 5, 1), dense_threshold=50, max_batch=4)
    long = PROTOCOLS["long_video"]
    ctf, dense = protocol_schedule(base, long), protocol_schedule(base, long, dense=True)
    assert ctf.strides == (30, 15, 1) and ctf.dense_threshold == 50
    assert [level.stride for level in ctf.plan(500).levels] == [30, 15, 1]
    assert [level.stride for level in dense.plan(500).levels] == [1]
    assert plan_key(ctf, 40) == plan_key(dense, 40)  # below the dense threshold both are dense
    assert plan_key(ctf, 300) != plan_key(dense, 300)
    davis = PROTOCOLS["davis_h025"]
    assert plan_key(protocol_schedule(base, davis), 90) == plan_key(protocol_schedule(base, davis, dense=True), 90)


def test_clip_in_memory_is_the_pipeline_source_bit_exact():
    from lightning_m3ddm.predict.errors import VideoInputError
    from lightning_m3ddm.video.stream import SourceInfo, iter_source_frames

    frames = np.random.default_rng(0).integers(0, 256, (7, 24, 40, 3), dtype=np.uint8)
    info = SourceInfo.from_frames(frames, 30000 / 1001)
    assert (info.num_frames, info.width, info.height) == (7, 40, 24) and info.fps == pytest.approx(30000 / 1001)
    assert np.array_equal(np.stack(list(iter_source_frames(info))), frames)
    with pytest.raises(VideoInputError, match="uint8"):
        SourceInfo.from_frames(frames.astype(np.float32), 25)
    with pytest.raises(VideoInputError, match="fps > 0"):
        SourceInfo.from_frames(frames, None)


def test_clip_starts():
    assert clip_starts(30, None) == [0]
    assert clip_starts(30, 16, 2) == [0, 14]  # first and last 16 frames
    assert clip_starts(16, 16, 2) == [0] and clip_starts(9, 16, 2) == [0]
    assert clip_starts(17, 16, 2) == [0, 1]
    assert clip_starts(100, 16, 3) == [0, 42, 84]
    with pytest.raises(ValueError):
        clip_starts(0, 16)


def test_fit_frame_resize_and_center_crop():
    frame = np.zeros((60, 120, 3), np.uint8)
    frame[:, :30], frame[:, 30:90], frame[:, 90:] = (255, 0, 0), (0, 255, 0), (0, 0, 255)
    squashed = fit_frame(frame, 32, "resize")
    assert squashed.shape == (32, 32, 3) and squashed[:, 0, 0].min() > 200 and squashed[:, -1, 2].min() > 200
    cropped = fit_frame(frame, 32, "center_crop")  # 64x32 after the short-side resize, center 32 columns kept
    assert cropped.shape == (32, 32, 3)
    assert cropped[..., 1].min() > 200 and cropped[..., 0].max() < 60 and cropped[..., 2].max() < 60
    with pytest.raises(ValueError, match="frame fit"):
        fit_frame(frame, 32, "stretch")


def test_resolve_videos_layouts_and_errors(tmp_path):
    root = tmp_path / "JPEGImages"
    for name in ("dog", "car-roundabout"):
        folder = root / name
        folder.mkdir(parents=True)
        for index in (10, 2, 1):
            cv2.imwrite(str(folder / f"{index}.jpg"), np.full((8, 8, 3), index * 20, np.uint8))
    write_synthetic_video(root / "clip.mp4", SyntheticVideoSpec(width=32, height=32, num_frames=3))
    (root / "notes.txt").write_text("not a video")
    (tmp_path / "empty").mkdir()
    videos = resolve_videos([str(root), str(tmp_path / "empty"), str(tmp_path / "nothing*.mp4"), str(root / "dog")])
    assert [(v.name, v.kind, v.error is None) for v in videos] == [
        ("car-roundabout", "frames", True), ("clip", "file", True), ("dog", "frames", True),
        ("empty", "frames", False), ("nothing*", "file", False), ("dog-2", "frames", True),
    ]
    assert "holds no frame images" in videos[3].error and "no file or frame folder matches" in videos[4].error
    frames = read_video(videos[2], 8).frames
    assert frames[:, 0, 0, 0].tolist() == [20, 40, 200]  # natural order: 1, 2, 10
    kept = resolve_videos([str(root)], names=["dog", "cat"])
    assert [(v.name, v.error) for v in kept] == [("dog", None), ("cat", "listed in names_file but not found in the inputs")]
    with pytest.raises(ValueError, match="no test video"):
        resolve_videos([])


def test_protocol_overrides_and_config_checks():
    config = EvaluationConfig(protocols=["long_video", "ssv2_opv"], frame_size=64, protocol_overrides={"long_video": {"strides": [15, 5, 1], "ratio": 0.5}})
    long, opv = resolve_protocols(config)
    assert long.strides == (15, 5, 1) and long.ratio == 0.5 and long.frame_size == 64 and "changed for this run" in long.description
    assert opv.frame_size == 64 and opv.frame_fit == "center_crop" and opv.clip_frames == 16
    assert override_protocol("davis_h025", {}) is PROTOCOLS["davis_h025"]
    assert mask_for(long, 64, 64).sum() == 64 * 32  # 0.5 of the width: 16 px per side
    assert "cannot override ['name']" in check_config(EvaluationConfig(protocols=["davis_h025"], protocol_overrides={"davis_h025": {"name": "x"}}))
    assert "not in evaluation.protocols" in check_config(EvaluationConfig(protocols=["davis_h025"], protocol_overrides={"ssv2_opc": {}}))
    assert "strides must be" in check_config(EvaluationConfig(protocols=["long_video"], protocol_overrides={"long_video": {"strides": [2, 3]}}))
    assert "lists a method twice" in check_config(EvaluationConfig(methods=["telea", "telea"]))
    assert check_config(EvaluationConfig()) is None
    with pytest.raises(ValueError, match="unknown evaluation method"):
        check_methods(["magvit"])


def test_fast_ssim_map_equals_torchmetrics():
    generator = torch.Generator().manual_seed(0)
    for shape in ((3, 3, 40, 48), (2, 3, 7, 64), (1, 3, 96, 96)):
        pred = torch.rand(shape, generator=generator)
        target = (pred + 0.2 * torch.randn(shape, generator=generator)).clamp(0, 1)
        assert torch.allclose(ssim_map(pred, target), ssim_map_torchmetrics(pred, target), rtol=0, atol=1e-12)
