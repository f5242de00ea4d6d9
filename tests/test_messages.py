"""Messages a new user meets: each one clear line (predict, data_prep.shard_videos, evaluate, weights).

The training progress bar is tested in tests/test_progress.py.
"""

import logging
import os
import stat
import sys
from pathlib import Path

import pytest

from data_prep.sharding import PreparedVideo, ShardOptions, prepare_video, skip_reason
from data_prep.shard_videos import main as shard_main
from lightning_m3ddm.checkpoints import CheckpointError
from lightning_m3ddm.data.synthetic import write_truncated_copy
from lightning_m3ddm.evaluation.results import write_results
from lightning_m3ddm.models.unet_3d import M3DDMUNet
from lightning_m3ddm.predict.cli_args import check_predict_arguments
from lightning_m3ddm.predict.datamodule import resolve_jobs
from lightning_m3ddm.video.samples import write_sample_video
from lightning_m3ddm.weights import UNetInit, build_unet

REPO = Path(__file__).resolve().parents[1]


def _exit_status(run) -> int:
    try:
        run()
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else 1
    return 0


def test_predict_without_input_names_the_missing_argument(tmp_path, capsys, monkeypatch):
    from lightning_m3ddm.cli import main

    monkeypatch.setattr(sys, "argv", ["lightning_m3ddm"])
    args = ["predict", "--config", str(REPO / "configs" / "predict_tiny.yaml"), "--target_ratio", "9:16",
            "--output_dir", str(tmp_path / "out")]
    assert _exit_status(lambda: main(args)) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: no input video given: --input PATHS (videos, globs, folders or list files)"


def _shard(*args: str) -> int:
    return _exit_status(lambda: shard_main([*args, "--workers", "1", "--no-progress"]))


def test_shard_output_that_is_a_file_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert _shard("--input", str(REPO / "tests" / "data"), "--output", str(blocker)) == 2
    assert capsys.readouterr().err.strip() == f"error: --output {blocker} is a file, not a folder"
    assert _shard("--input", str(REPO / "tests" / "data"), "--output", str(blocker / "shards")) == 2
    assert capsys.readouterr().err.strip() == f"error: --output {blocker / 'shards'}: {blocker} is a file, not a folder"


def test_a_list_of_missing_videos_writes_no_shard_and_fails(tmp_path, capsys):
    listing = tmp_path / "videos.txt"
    listing.write_text("gone.mp4\nalso_gone.mp4\n")
    assert _shard("--input", str(listing), "--output", str(tmp_path / "shards")) == 1
    assert list((tmp_path / "shards").glob("*.tar")) == []
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == f"error: none of the 2 videos of {listing} could be used (reasons above); no shard written"


def test_skip_reasons_do_not_repeat_their_kind(tmp_path):
    assert skip_reason("truncated", "truncated: container declares 9 frames, 4 present") == (
        "truncated: container declares 9 frames, 4 present"
    )
    assert skip_reason("corrupt", "no frame decodes") == "corrupt: no frame decodes"
    broken = write_truncated_copy(write_sample_video(tmp_path / "clip.mp4", 30), tmp_path / "broken.mp4", 0.6)
    prepared: PreparedVideo = prepare_video(
        type("Item", (), {"path": str(broken), "key": "k", "caption": None})(), ShardOptions(output=tmp_path), str(tmp_path)
    )
    kind = prepared.reason.split(":", 1)[0]
    assert not prepared.reason.startswith(f"{kind}: {kind}:"), prepared.reason


def test_duplicate_stems_are_warned_once(tmp_path, caplog):
    """The argument check resolves the inputs silently; the datamodule's resolution warns."""
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        write_sample_video(tmp_path / folder / "clip.mp4", 2)
    inputs = [str(tmp_path / "a" / "clip.mp4"), str(tmp_path / "b" / "clip.mp4")]
    with caplog.at_level(logging.WARNING):
        assert check_predict_arguments({"input": inputs, "target_ratio": "9:16", "output_dir": str(tmp_path / "o")}) is None
        resolve_jobs(inputs, "9:16")
    warnings = [r.getMessage() for r in caplog.records if "also named" in r.getMessage()]
    assert len(warnings) == 1, warnings


def test_evaluate_results_are_readable_like_any_new_file(tmp_path):
    old = os.umask(0o022)
    try:
        json_path, md_path = write_results({"protocols": {}}, tmp_path / "run")
    finally:
        os.umask(old)
    for path in (json_path, md_path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


def test_framework_checkpoint_with_another_autoencoder_gets_the_override_that_works(tmp_path):
    small = dict(block_out_channels=(8, 8, 8, 8), layers_per_block=1, norm_num_groups=8, attention_head_dim=2,
                 cross_attention_dim=8, temporal_position_embed_dim=8)
    M3DDMUNet(in_channels=9, out_channels=4, global_latent_channels=4, **small).save_pretrained(tmp_path / "unet")
    with pytest.raises(CheckpointError) as err:
        build_unet(UNetInit(source="pretrained", path=str(tmp_path / "unet")), None, latent_channels=192)
    message = str(err.value)
    assert "--model.init_args.autoencoder=null" in message and "StableDiffusionVAE" not in message
    assert "\n" not in message
