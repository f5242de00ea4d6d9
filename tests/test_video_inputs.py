"""Input entries -> videos: one expansion (video.inputs) behind predict's jobs and evaluate's test videos."""

import cv2
import numpy as np

from lightning_m3ddm.evaluation.inputs import resolve_videos
from lightning_m3ddm.predict.datamodule import resolve_jobs
from lightning_m3ddm.video.inputs import InputItem, expand_inputs


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def frame_folder(path, count=2):
    path.mkdir(parents=True)
    for index in range(count):
        cv2.imwrite(str(path / f"{index}.jpg"), np.zeros((4, 4, 3), np.uint8))
    return path


def test_list_file_lines_globs_and_settings_after_a_tab(tmp_path):
    a = touch(tmp_path / "v" / "a.mp4")
    b = touch(tmp_path / "v" / "b.mov")
    listing = tmp_path / "l.txt"
    listing.write_text("# comment\n\nv/*.mp4\t9:16\n  v/b.mov  \n")
    assert expand_inputs(str(listing)) == [InputItem(a, spec="9:16"), InputItem(b)]
    assert expand_inputs([tmp_path / "empty.lst"])[0].error == "no such file or folder"
    (tmp_path / "empty.lst").write_text("# nothing\n")
    assert expand_inputs([tmp_path / "empty.lst"])[0].error == "list file names no video"


def test_frame_folders_only_where_asked(tmp_path):
    frames = frame_folder(tmp_path / "JPEGImages" / "dog")
    clip = touch(tmp_path / "JPEGImages" / "clip.mp4")
    assert expand_inputs(tmp_path / "JPEGImages", frame_folders=True) == [InputItem(clip), InputItem(frames, "frames")]
    assert expand_inputs(tmp_path / "JPEGImages") == [InputItem(clip)]
    assert [i.name for i in expand_inputs(frames, frame_folders=True)] == ["dog"]
    (only,) = expand_inputs(frames)
    assert only.error.startswith("folder holds no video file")


def test_predict_and_evaluate_expand_alike(tmp_path):
    """The two commands had one copy of the expansion each, and they disagreed: a folder was
    listed in path order by predict and natural order by evaluate; a missing path was an error
    at once for evaluate, only when probed for predict; a glob matching only folders gave
    evaluate an error and predict nothing at all."""
    folder = tmp_path / "videos"
    for name in ("v10.mp4", "v2.mp4", "V3.mp4"):
        touch(folder / name)
    (folder / "sub").mkdir()
    entries = [str(folder), str(tmp_path / "missing.mp4"), str(tmp_path / "vid*")]
    jobs = resolve_jobs(entries, "9:16")
    videos = resolve_videos(entries)
    assert [j.stem for j in jobs] == [v.name for v in videos] == ["v2", "V3", "v10", "missing", "vid*"]
    assert [j.path for j in jobs] == [v.path for v in videos]
    assert [j.error is None for j in jobs] == [v.error is None for v in videos] == [True, True, True, False, False]
    assert "no such file or folder" in jobs[3].error and videos[3].error == "no such file or folder"
    assert "matches this pattern" in jobs[4].error and "matches this pattern" in videos[4].error


def test_evaluate_reports_predict_targets_in_a_list_file(tmp_path):
    touch(tmp_path / "clip.mp4")
    listing = tmp_path / "l.txt"
    listing.write_text("clip.mp4\t9:16\n")
    (video,) = resolve_videos([str(listing)])
    assert video.name == "clip" and "'9:16' after a TAB" in video.error
    (job,) = resolve_jobs([str(listing)])
    assert job.error is None and job.targets[0].label == "9:16"
