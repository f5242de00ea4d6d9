"""`make demo` outpaints with the shipped tiny model and reads nothing under tests/; `make
demo-train`'s two command lines parse as the CLI reads them; the preview lays out the pairs."""

import contextlib
import io
from pathlib import Path

import av
import cv2
import pytest
import yaml

from lightning_m3ddm.cli import main
from lightning_m3ddm.data.synthetic import SyntheticVideoSpec, write_synthetic_video
from lightning_m3ddm.demo import SAMPLE_CLIP, TINY_MODEL, fit_args, outpaint_with_pipeline, predict_args, preview


def _printed_config(args: list[str]) -> dict:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
        main([*args, "--print_config"])
    assert exit_info.value.code in (0, None)
    return yaml.safe_load(out.getvalue())


def test_fit_command_line_parses_with_persistent_workers(tmp_path):
    cfg = _printed_config(fit_args(tmp_path, steps=7))
    assert cfg["trainer"]["max_steps"] == 7
    assert cfg["trainer"]["logger"]["init_args"]["save_dir"] == str(tmp_path / "runs")
    data = cfg["data"]["init_args"]
    assert data["root"] == str(tmp_path / "data")
    assert data["persistent_workers"] is True and data["num_workers"] > 0


def test_predict_command_line_parses(tmp_path):
    ckpt = tmp_path / "last.ckpt"
    cfg = _printed_config(predict_args(ckpt, [SAMPLE_CLIP], tmp_path / "videos", inference_steps=3))
    model = cfg["model"]["init_args"]
    assert model["weights"]["source"] == "pretrained" and model["weights"]["path"] == str(ckpt)
    assert model["sampling"]["num_inference_steps"] == 3
    assert model["schedule"]["window"] == 8 and model["schedule"]["strides"] == [7, 1]


def test_preview_puts_each_pair_on_a_row_at_the_same_height(tmp_path):
    wide = write_synthetic_video(tmp_path / "wide.mp4", SyntheticVideoSpec(width=64, height=32, num_frames=3))
    tall = write_synthetic_video(tmp_path / "tall.mp4", SyntheticVideoSpec(width=32, height=64, num_frames=3))
    image = cv2.imread(str(preview([(wide, tall), (tall, tall)], tmp_path / "preview.png", height=40)))
    # rows: 40 px each plus an 8 px gap under each; widest row: 80 + 8 + 20
    assert image.shape == (2 * (40 + 8), 80 + 8 + 20, 3)


def test_demo_inputs_live_outside_the_tests():
    source = (Path(__file__).resolve().parent.parent / "lightning_m3ddm" / "demo.py").read_text()
    assert '"tests"' not in source and "tests/" not in source
    assert SAMPLE_CLIP.is_file() and TINY_MODEL.is_dir()


def test_shipped_tiny_model_outpaints_and_says_where_it_came_from(tmp_path):
    card = (TINY_MODEL / "README.md").read_text()
    for provenance in ("benchmarks/convergence.py", "commit", "results.json", "training steps"):
        assert provenance in card, provenance
    clip = write_synthetic_video(tmp_path / "clip.mp4", SyntheticVideoSpec(width=48, height=32, num_frames=6))
    (video,) = outpaint_with_pipeline(TINY_MODEL, [clip], tmp_path / "videos", inference_steps=1)
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        assert stream.frames == 6 and abs(stream.width / stream.height - 9 / 16) < 0.02


def test_demo_guidance_is_the_best_of_the_models_validation_sweep(tmp_path):
    import json

    from lightning_m3ddm.demo import DEMO_GUIDANCE, best_estimate_guidance

    assert best_estimate_guidance(tmp_path) == DEMO_GUIDANCE  # no record: unguided
    sweep = {"1,1": {"psnr_region": 17.4}, "2,1": {"psnr_region": 17.9}, "2,4": {"psnr_region": 17.8}}
    (tmp_path / "results.json").write_text(json.dumps({"validation_sweep": {"estimate_by_guidance": sweep}}))
    assert best_estimate_guidance(tmp_path) == (2.0, 1.0)
