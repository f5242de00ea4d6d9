"""data_prep.shard_videos and data_prep.webvid: shards, summaries, bad inputs, resume, array jobs."""

import csv
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from data_prep import shard_videos, webvid
from lightning_m3ddm.data.synthetic import SyntheticVideoSpec, write_synthetic_video, write_truncated_copy
from lightning_m3ddm.video.decode import probe_video

REPO = Path(__file__).resolve().parents[1]
CARPHONE = Path(__file__).parent / "data" / "carphone_176x144_30fps_120f.mp4"


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict:
    """Three good videos in a nested folder, one of 10 frames, a truncated one and a text file."""
    root = tmp_path_factory.mktemp("videos")
    good = [
        write_synthetic_video(root / "a" / f"good{i}.mp4", SyntheticVideoSpec(width=96, height=64, num_frames=20, seed=i))
        for i in range(3)
    ]
    short = write_synthetic_video(root / "short.mp4", SyntheticVideoSpec(width=64, height=48, num_frames=10, seed=7))
    broken = write_truncated_copy(good[0], root / "broken.mp4")
    text = root / "b" / "notes.mp4"
    text.parent.mkdir()
    text.write_text("definitely not a video")
    return dict(root=root, good=good, short=short, broken=broken, text=text)


def _run(module, *args) -> dict:
    return module.main([*map(str, args), "--no-progress", "--workers", "1"])


def _members(tar_path: Path) -> dict[str, bytes]:
    with tarfile.open(tar_path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


def test_folder_to_shards_with_bad_inputs(videos, tmp_path):
    out = tmp_path / "shards"
    summary = _run(shard_videos, "--input", videos["root"], "--output", out, "--shard-size", 2, "--resize-short-side", 32)
    t = summary["totals"]
    assert (t["items"], t["written"], t["skipped"], t["short_videos"]) == (6, 4, 2, 1)
    assert summary["skipped_by_reason"] == {"corrupt": 1, "not_a_video": 1}
    assert {Path(s["path"]).name for s in summary["skipped"]} == {"broken.mp4", "notes.mp4"}
    assert json.loads((out / "shard-summary.json").read_text())["totals"] == t
    tars = sorted(out.glob("*.tar"))
    assert [p.name for p in tars] == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    assert not list(out.glob("*.tmp")) and not list(out.glob(".reencode-*"))

    samples = {}
    for tar in tars:
        for name, data in _members(tar).items():
            key, ext = name.split(".", 1)
            samples.setdefault(key, {})[ext] = data
    assert len(samples) == 4 and all(set(s) == {"mp4", "json"} for s in samples.values())
    for sample in samples.values():
        meta = json.loads(sample["json"])
        for field in ("fps", "num_frames", "width", "height", "duration", "source", "codec"):
            assert field in meta
        assert meta["reencoded"] is (meta["source_height"] > 32)
        assert min(meta["width"], meta["height"]) == 32
        stored = out / "check.mp4"
        stored.write_bytes(sample["mp4"])
        info = probe_video(stored)
        assert (info.width, info.height, info.num_frames) == (meta["width"], meta["height"], meta["num_frames"])
    assert sorted(json.loads(s["json"])["num_frames"] for s in samples.values()) == [10, 20, 20, 20]


def test_path_list_with_corrupt_and_missing_files(videos, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text(
        "# videos\n"
        f"{videos['good'][1]}\n\n{videos['broken']}\n{tmp_path / 'gone.mp4'}\n{CARPHONE}\n"
    )
    summary = _run(shard_videos, "--input", listing, "--output", tmp_path / "s", "--shard-size", 10)
    assert summary["totals"]["written"] == 2 and summary["totals"]["items"] == 4
    assert summary["skipped_by_reason"] == {"corrupt": 1, "missing": 1}
    # no re-encoding requested: the stored bytes are the original file
    members = _members(tmp_path / "s" / "shard-000000.tar")
    carphone = next(k for k in members if "carphone" in k and k.endswith(".mp4"))
    assert members[carphone] == CARPHONE.read_bytes()


def test_csv_manifest_keeps_caption_and_metadata(videos, tmp_path):
    manifest = tmp_path / "products.csv"
    with manifest.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["video_path", "caption", "category", "sku"])
        writer.writerow([str(videos["good"][0].relative_to(videos["root"])), "red shoe", "shoes", "A1"])
        writer.writerow([str(videos["good"][2]), "", "bags", "B2"])
    summary = _run(shard_videos, "--input", manifest, "--root", videos["root"], "--output", tmp_path / "s")
    assert summary["totals"]["written"] == 2
    members = _members(tmp_path / "s" / "shard-000000.tar")
    metas = [json.loads(v) for k, v in members.items() if k.endswith(".json")]
    assert {m["category"] for m in metas} == {"shoes", "bags"} and {m["sku"] for m in metas} == {"A1", "B2"}
    assert [m.get("caption") for m in metas if m["sku"] == "A1"] == ["red shoe"]
    assert [v for k, v in members.items() if k.endswith(".txt")] == [b"red shoe"]


def test_manifest_without_path_column_is_a_clear_error(tmp_path, capsys):
    manifest = tmp_path / "m.csv"
    manifest.write_text("title,category\nx,y\n")
    with pytest.raises(SystemExit):
        _run(shard_videos, "--input", manifest, "--output", tmp_path / "s")
    assert "no path column" in capsys.readouterr().err


def test_webvid_csv_with_missing_row(videos, tmp_path):
    root = tmp_path / "webvid"
    for videoid, page_dir in (("1001", "000001_000050"), ("1002", "000001_000050"), ("2001", "000051_000100")):
        if videoid != "1002":  # 1002 was never downloaded
            target = root / page_dir / f"{videoid}.mp4"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(videos["good"][int(videoid[-1])], target)
    table = tmp_path / "results_2M_val.csv"
    table.write_text(
        "videoid,contentUrl,duration,page_dir,name\n"
        "1001,https://example.invalid/1001.mp4,PT00H00M10S,000001_000050,Aerial view of a coast\n"
        "1002,https://example.invalid/1002.mp4,PT00H00M12S,000001_000050,\"Cat, sleeping\"\n"
        "2001,https://example.invalid/2001.mp4,PT00H00M08S,000051_000100,City traffic at night\n"
    )
    summary = _run(webvid, "--csv", table, "--videos-root", root, "--output", tmp_path / "s", "--shard-size", 2)
    assert summary["totals"]["written"] == 2 and summary["skipped_by_reason"] == {"missing": 1}
    assert summary["skipped"][0]["key"].endswith("1002")
    members = {**_members(tmp_path / "s" / "webvid-000000.tar"), **_members(tmp_path / "s" / "webvid-000001.tar")}
    captions = sorted(v.decode() for k, v in members.items() if k.endswith(".txt"))
    assert captions == ["Aerial view of a coast", "City traffic at night"]
    meta = json.loads(next(v for k, v in members.items() if k.endswith("1001.json")))
    assert meta["videoid"] == "1001" and meta["caption"] == "Aerial view of a coast"


def test_resume_skips_finished_shards_and_redoes_unfinished(videos, tmp_path):
    out = tmp_path / "s"
    args = ("--input", videos["root"], "--output", out, "--shard-size", 2)
    first = _run(shard_videos, *args)
    again = _run(shard_videos, *args)
    assert again["shards_written"] == [] and len(again["shards_kept_from_previous_run"]) == 3
    assert again["totals"] == first["totals"]
    # an interrupted shard: only the temporary file exists
    (out / "shard-000001.tar").rename(out / "shard-000001.tar.tmp")
    resumed = _run(shard_videos, *args)
    assert resumed["shards_written"] == ["shard-000001.tar"] and resumed["totals"] == first["totals"]
    assert not list(out.glob("*.tmp"))


def test_array_jobs_split_the_shards(videos, tmp_path):
    common = ("--input", videos["root"], "--shard-size", 1)
    single = _run(shard_videos, *common, "--output", tmp_path / "one")
    jobs = [_run(shard_videos, *common, "--output", tmp_path / "many", "--num-jobs", 2, "--job-index", i) for i in (0, 1)]
    written = [set(j["shards_written"]) for j in jobs]
    assert not written[0] & written[1]
    assert written[0] | written[1] == set(single["shards_written"])
    assert sum(j["totals"]["written"] for j in jobs) == single["totals"]["written"]
    assert (tmp_path / "many" / "shard-summary-job0001-of-0002.json").exists()
    for name in single["shards_written"]:
        assert _members(tmp_path / "one" / name) == _members(tmp_path / "many" / name)


def test_parallel_workers_give_the_same_shards(videos, tmp_path):
    common = ("--input", videos["root"], "--shard-size", 3, "--resize-short-side", 32, "--no-progress")
    shard_videos.main([*map(str, common), "--output", str(tmp_path / "w1"), "--workers", "1"])
    shard_videos.main([*map(str, common), "--output", str(tmp_path / "w2"), "--workers", "2"])
    tars = sorted(p.name for p in (tmp_path / "w1").glob("*.tar"))
    assert tars == sorted(p.name for p in (tmp_path / "w2").glob("*.tar")) and tars
    for name in tars:
        one, two = _members(tmp_path / "w1" / name), _members(tmp_path / "w2" / name)
        assert sorted(one) == sorted(two)
        # x264 output is not always bit-identical across processes; the metadata is
        assert {k: v for k, v in one.items() if k.endswith(".json")} == {k: v for k, v in two.items() if k.endswith(".json")}


@pytest.mark.parametrize("module", ["data_prep.shard_videos", "data_prep.webvid"])
def test_command_line_help(module):
    result = subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for flag in ("--output", "--shard-size", "--workers", "--resize-short-side", "--num-jobs", "--job-index"):
        assert flag in result.stdout
