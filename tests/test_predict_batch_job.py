"""Catalogue runs of ``predict``: claims, resume records, report, leftovers, stop signals, two processes.

The pure parts (shares, staleness, record matching, summaries, file-name owners) are
tested alone; the end-to-end tests run ``python -m lightning_m3ddm predict`` with
configs/predict_tiny.yaml (random weights, 2 steps) on small generated videos.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lightning_m3ddm.predict.assignment import array_share, claim_order, longest_first, static_share
from lightning_m3ddm.predict.claims import ClaimBook, Owner, is_stale
from lightning_m3ddm.predict.leftovers import owner_tag, partial_owner, remove_leftovers, work_folder_owner
from lightning_m3ddm.predict.preemption import Preempted, PreemptionGuard, critical
from lightning_m3ddm.predict.report import read_report, summarize
from lightning_m3ddm.predict.resume import mismatch
from lightning_m3ddm.video.samples import write_sample_video

REPO = Path(__file__).resolve().parents[1]
CONFIG = str(REPO / "configs" / "predict_tiny.yaml")


# -- pure parts -----------------------------------------------------------------------------


def test_array_and_static_shares_cover_every_item_once():
    items = list(range(23))
    jobs = [array_share(items, 4, i) for i in range(4)]
    assert sorted(sum(jobs, [])) == items and jobs[1] == [1, 5, 9, 13, 17, 21]
    parts = [static_share(jobs[0], r, 2, w, 3) for r in range(2) for w in range(3)]
    assert sorted(sum(parts, [])) == jobs[0]
    with pytest.raises(ValueError, match="job_index"):
        array_share(items, 2, 2)
    lengths = {"a": 20, "b": 600, "c": 20, "d": 90}
    assert longest_first(list(lengths), lengths.get) == ["b", "d", "a", "c"]  # ties keep input order


def test_the_longest_videos_are_dealt_before_the_race():
    longest = [600, 400, 250, 150, 100, 80, 60, 45, 40]
    # two ranks holding 4 videos each: the first 8 go to the rank with the fewest frames so far
    # (600 | 400, 250 | 150 | 100 | 80 | 60 | 45): 875 and 810 frames, then both walk the list
    assert claim_order(longest, longest, 0, 2, 4) == [600, 150, 80, 45, 400, 250, 100, 60, 40]
    assert claim_order(longest, longest, 1, 2, 4) == [400, 250, 100, 60, 600, 150, 80, 45, 40]
    assert claim_order(longest, longest, 0, 1, 4) == longest  # one rank: plain longest first
    assert sorted(claim_order(longest[:3], longest[:3], 1, 2, 4)) == sorted(longest[:3])


def test_staleness_rules():
    alive = {7}.__contains__
    assert is_stale("here", 8, 1.0, "here", alive, 300)  # same host, process gone: at once
    assert not is_stale("here", 7, 1.0, "here", alive, 300)
    assert not is_stale("node2", 8, 100.0, "here", alive, 300)  # another node, lease renewed
    assert is_stale("node2", 8, 301.0, "here", alive, 300)  # another node, lease lapsed
    assert is_stale("node2", 8, None, "here", alive, 300)  # no lease at all


def test_leftover_names_carry_their_owner():
    assert partial_owner(".clip_9-16.4242.partial.mp4") == 4242
    assert partial_owner("clip_9-16.mp4") is None
    assert work_folder_owner("m3ddm-predict-4242@gpu-node-3-ab12_xyz") == ("gpu-node-3", 4242)
    assert work_folder_owner("m3ddm-predict-abcdef") is None  # unknown owner: never touched


def test_record_mismatch_names_the_reason():
    record = {"size": 10, "mtime_ns": 5, "settings": "s", "targets": ["9:16"]}
    same = {"size": 10, "mtime_ns": 5}
    assert mismatch(record, same, "s", ["9:16"], [True]) is None
    assert mismatch(record, {"size": 11, "mtime_ns": 5}, "s", ["9:16"], [True]) == "source changed"
    assert mismatch(record, same, "t", ["9:16"], [True]) == "settings changed"
    assert mismatch(record, same, "s", ["9:16", "1:1"], [True]) == "targets changed"
    assert mismatch(record, same, "s", ["9:16"], [False]) == "an output is missing"
    assert mismatch(record, None, "s", ["9:16"], [True]) == "source unreadable"


def test_summary_counts_one_run():
    lines = [
        {"event": "video", "run_id": "a", "status": "done", "frames": 10, "seconds": 1.5},
        {"event": "video", "run_id": "a", "status": "skipped", "frames": 7},
        {"event": "video", "run_id": "b", "status": "done", "frames": 99},
        {"event": "video", "run_id": "a", "status": "failed"},
        {"event": "end", "run_id": "a"},
    ]
    assert summarize(lines, "a") == dict(videos=3, done=1, skipped=1, failed=1, frames_done=10, video_seconds=1.5)


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_claims_are_exclusive_and_dead_owners_lose_them(tmp_path):
    me = ClaimBook(tmp_path, Owner.current("run", 0))
    me.start()
    try:
        other_live = ClaimBook(tmp_path, Owner(me.owner.host, os.getppid(), "run", 1))  # a running process
        assert me.claim("a") and not me.claim("a")
        assert not other_live.claim("a")
        dead = ClaimBook(tmp_path, Owner(me.owner.host, _dead_pid(), "old", 0))
        assert dead.claim("b")  # a killed run's claim ...
        assert me.claim("b")  # ... is taken over
        assert sorted(p.name for p in me.own_claims()) == ["a", "b"]
    finally:
        me.stop()
    assert list(me.claims_dir.iterdir()) == [] and not me.lease_path.exists()


def test_leftovers_of_dead_processes_go_live_ones_stay(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    out.mkdir(), work.mkdir()
    dead = _dead_pid()
    dead_partial = out / f".clip_9-16.{dead}.partial.mp4"
    live_partial = out / f".clip_1-1.{os.getpid()}.partial.mp4"
    dead_folder = work / f"m3ddm-predict-{owner_tag(dead)}-abc123"
    live_folder = work / f"m3ddm-prepared-{owner_tag()}-def456"
    unknown = work / "m3ddm-predict-legacy99"
    for path in (dead_partial, live_partial):
        path.write_bytes(b"x")
    for path in (dead_folder, live_folder, unknown):
        path.mkdir()
    book = ClaimBook(out, Owner.current("run"))
    book.start()
    try:
        removed = remove_leftovers(out, work, book)
    finally:
        book.stop()
    assert removed.partial_files == [dead_partial] and removed.work_folders == [dead_folder]
    assert live_partial.exists() and live_folder.exists() and unknown.exists()


def test_a_stop_signal_raises_but_waits_for_a_critical_step():
    guard = PreemptionGuard().install()
    try:
        with pytest.raises(Preempted) as stop:
            with critical():
                os.kill(os.getpid(), signal.SIGUSR1)
                time.sleep(0.05)
                finished_step = True  # the signal did not cut the step short
        assert finished_step and stop.value.exit_status == 128 + signal.SIGUSR1
    finally:
        guard.restore()
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL


def test_canvases_prepared_ahead_equal_the_inline_painting(tmp_path):
    import numpy as np

    from lightning_m3ddm.geometry import parse_ratios
    from lightning_m3ddm.predict.datamodule import VideoJob
    from lightning_m3ddm.predict.pipeline import global_frame_indices
    from lightning_m3ddm.predict.preparation import CanvasRecipe, paint_frames, prepare_job
    from lightning_m3ddm.video.stream import probe_source

    video = write_sample_video(tmp_path / "clip.mp4", 9, 64, 48)
    recipe = CanvasRecipe((64, 64), "padded", 8, 5, use_start=True, global_count=4, global_mode="resize")
    job = VideoJob(str(video), "clip", parse_ratios("9:16"))
    prepared = prepare_job(job, recipe, tmp_path, os.getpid())
    assert prepared.error is None and prepared.canvases.folder.name.startswith(f"m3ddm-prepared-{owner_tag()}-")
    info = probe_source(video)
    inline = list(paint_frames(info, recipe.painter(info, job.targets), True, global_frame_indices(9, 4), "resize"))
    ahead = list(prepared.canvases.frames())
    assert [f.index for f in ahead] == list(range(9)) and sorted(prepared.canvases.global_canvases) == [0, 2, 5, 8]
    for a, b in zip(ahead, inline, strict=True):
        assert np.array_equal(a.masked, b.masked) and np.array_equal(a.start, b.start)
        assert (a.global_canvas is None) == (b.global_canvas is None)
        if a.global_canvas is not None:
            assert np.array_equal(a.global_canvas, b.global_canvas)
    prepared.close()
    assert not prepared.job.error and list(tmp_path.glob("m3ddm-prepared-*")) == []
    missing = prepare_job(VideoJob(str(tmp_path / "nope.mp4"), "nope", job.targets), recipe, tmp_path, os.getpid())
    assert "no such file" in missing.error and missing.canvases is None


def test_a_video_prepared_ahead_outpaints_as_one_painted_inline(tmp_path):
    import numpy as np

    from lightning_m3ddm.autoencoders import PixelUnshuffleAutoencoder
    from lightning_m3ddm.geometry import parse_ratios
    from lightning_m3ddm.lit_module import UNetInit
    from lightning_m3ddm.predict import M3DDMPredictor, SamplingConfig, VideoJob
    from lightning_m3ddm.predict.preparation import CanvasRecipe, prepare_job

    unet = dict(block_out_channels=[32] * 4, layers_per_block=1, norm_num_groups=8, attention_head_dim=4,
                cross_attention_dim=32, temporal_position_embed_dim=32)
    model = M3DDMPredictor(weights=UNetInit(source="config"), unet=unet, autoencoder=PixelUnshuffleAutoencoder(8),
                           sampling=SamplingConfig(num_inference_steps=1), canvas_size=64, progress=False)
    job = VideoJob(str(write_sample_video(tmp_path / "clip.mp4", 6, 64, 48)), "clip", parse_ratios("9:16"))
    inline = model.outpaint_job(job)
    ahead = model.outpaint_job(prepare_job(job, CanvasRecipe.of(model.pipeline), tmp_path, os.getpid()))
    assert inline.ok and ahead.ok and not list(tmp_path.glob("m3ddm-prepared-*"))  # used, then removed
    frames = list(range(6))
    assert np.array_equal(inline.video.latents.generated.read(frames), ahead.video.latents.generated.read(frames))
    inline.close(), ahead.close()


def test_a_bad_array_job_index_stops_before_any_work(tmp_path, capsys, monkeypatch):
    from lightning_m3ddm.cli import main

    monkeypatch.setattr(sys, "argv", ["lightning_m3ddm"])
    video = write_sample_video(tmp_path / "clip.mp4", 2)
    with pytest.raises(SystemExit) as done:
        main(["predict", "--config", CONFIG, "--input", str(video), "--target_ratio", "9:16",
              "--output_dir", str(tmp_path / "out"), "--num_jobs", "4", "--job_index", "4"])
    assert done.value.code == 2
    assert capsys.readouterr().err.strip() == "error: --job_index must be in [0, --num_jobs), got 4 of 4"


# -- end to end --------------------------------------------------------------------------------


def _videos(folder: Path, lengths) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [write_sample_video(folder / f"v{i}_{n}f.mp4", n, 64, 48) for i, n in enumerate(lengths)]


def _command(inputs, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "lightning_m3ddm", "predict", "--config", CONFIG, "--input", *map(str, inputs),
            "--target_ratio", "9:16", "--output_dir", str(out), *extra]


def _env(work: Path) -> dict:
    work.mkdir(exist_ok=True)
    return {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(work), "OMP_NUM_THREADS": "1"}


def _runs(out: Path) -> dict[str, list[dict]]:
    runs: dict[str, list[dict]] = {}
    for line in read_report(out / "predict_report.jsonl"):
        runs.setdefault(line["run_id"], []).append(line)
    return runs


def _leftovers(out: Path, work: Path) -> list[str]:
    found = [p.name for p in out.iterdir() if ".partial" in p.name]
    found += [p.name for p in work.iterdir() if p.name.startswith("m3ddm-")]
    found += [p.name for p in (out / ".m3ddm" / "claims").iterdir()]
    return found


@pytest.mark.timeout(240)
def test_two_processes_write_every_video_once(tmp_path):
    videos = _videos(tmp_path / "in", (12, 40, 20, 50, 16, 24))
    out, work = tmp_path / "out", tmp_path / "work"
    done = subprocess.run(
        _command(videos, out, "--trainer.devices", "2", "--trainer.strategy", "ddp",
                 "--data.init_args.num_workers", "1"),
        env=_env(work), capture_output=True, text=True, timeout=220,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in out.glob("*.mp4")) == sorted(f"{v.stem}_9-16.mp4" for v in videos)
    wrote = [line.split("wrote ", 1)[1] for line in done.stderr.splitlines() if "INFO wrote " in line]
    assert sorted(Path(p).name for p in wrote) == sorted(f"{v.stem}_9-16.mp4" for v in videos)  # none twice
    ((run_id, lines),) = _runs(out).items()
    videos_reported = [line for line in lines if line["event"] == "video"]
    assert sorted(line["stem"] for line in videos_reported) == sorted(v.stem for v in videos)
    assert {line["status"] for line in videos_reported} == {"done"}
    assert {line["rank"] for line in lines if line["event"] == "end"} == {0, 1}
    (summary,) = [line for line in lines if line["event"] == "summary"]
    assert summary["done"] == 6 and summary["frames_done"] == 12 + 40 + 20 + 50 + 16 + 24
    assert _leftovers(out, work) == []


def _wait_for(predicate, process: subprocess.Popen, timeout: float) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < end, "the run never got there"
        time.sleep(0.05)


@pytest.mark.timeout(240)
def test_sigterm_stops_within_seconds_and_a_rerun_finishes_the_rest(tmp_path):
    videos = _videos(tmp_path / "in", (16, 40, 24, 30))
    out, work = tmp_path / "out", tmp_path / "work"
    command = _command(videos, out, "--data.init_args.num_workers", "1")
    run = subprocess.Popen(command, env=_env(work), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    report = out / "predict_report.jsonl"
    _wait_for(lambda: report.exists() and '"done"' in report.read_text(), run, 150)
    run.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    _, err = run.communicate(timeout=60)
    assert time.monotonic() - sent < 30
    assert run.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert _leftovers(out, work) == []
    ((first, lines),) = _runs(out).items()
    finished = {line["stem"] for line in lines if line.get("status") == "done"}
    assert 1 <= len(finished) < len(videos)
    assert sorted(p.stem[: -len("_9-16")] for p in out.glob("*.mp4")) == sorted(finished)  # nothing half-written

    again = subprocess.run(command, env=_env(work), capture_output=True, text=True, timeout=200)
    assert again.returncode == 0, again.stderr[-3000:]
    second = [line for run_id, lines in _runs(out).items() if run_id != first for line in lines]
    status = {line["stem"]: line["status"] for line in second if line["event"] == "video"}
    assert status == {v.stem: "skipped" if v.stem in finished else "done" for v in videos}
    assert len(list(out.glob("*.mp4"))) == len(videos) and _leftovers(out, work) == []


@pytest.mark.timeout(240)
def test_after_sigkill_the_next_run_removes_the_leftovers(tmp_path):
    videos = _videos(tmp_path / "in", (60, 12))
    out, work = tmp_path / "out", tmp_path / "work"
    command = _command(videos, out, "--data.init_args.num_workers", "1")
    run = subprocess.Popen(command, env=_env(work), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: any(p.name.startswith("m3ddm-predict-") for p in work.iterdir()), run, 150)
    run.kill()
    run.communicate(timeout=30)
    time.sleep(0.5)  # the loader worker dies with its parent
    left = _leftovers(out, work)
    assert any(name.startswith("m3ddm-predict-") for name in left) and any("claims" not in n for n in left)

    again = subprocess.run(command, env=_env(work), capture_output=True, text=True, timeout=200)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "removed leftovers of stopped runs" in again.stderr
    assert _leftovers(out, work) == [] and len(list(out.glob("*.mp4"))) == len(videos)
