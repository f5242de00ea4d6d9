"""Streaming input/output of predict: probing errors, H.264 + audio writing, atomic files, latent store."""

from fractions import Fraction

import av
import numpy as np
import pytest

from lightning_m3ddm.predict.errors import VideoInputError
from lightning_m3ddm.predict.latent_store import LatentStore
from lightning_m3ddm.video.samples import (
    render_frame,
    write_sample_video,
    write_truncated_copy,
    write_zero_frame_video,
)
from lightning_m3ddm.video.stream import Mp4Writer, copy_through, iter_source_frames, probe_source


def streams(path):
    with av.open(str(path)) as c:
        video = c.streams.video[0]
        audio = c.streams.audio[0] if c.streams.audio else None
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        info = dict(rate=video.average_rate, size=(video.width, video.height), audio=audio and audio.codec_context.name)
    samples = 0
    if info["audio"]:
        with av.open(str(path)) as c:
            samples = sum(f.samples for f in c.decode(audio=0))
    return frames, info, samples


@pytest.mark.parametrize("suffix,audio,codec", [(".mp4", "aac", "aac"), (".mkv", "pcm", "aac"), (".mp4", None, None)])
def test_writer_keeps_every_frame_the_rate_and_the_audio(tmp_path, suffix, audio, codec):
    src = write_sample_video(tmp_path / f"src{suffix}", 45, fps=Fraction(30000, 1001), audio=audio)
    info = probe_source(src)
    assert info.rate == Fraction(30000, 1001) and info.num_frames == 45
    out = tmp_path / "out.mp4"
    with Mp4Writer(out, 64, 48, info.rate, src if info.audio_codec else None, crf=12) as writer:
        for frame in iter_source_frames(info):
            writer.write(frame)
    frames, meta, samples = streams(out)
    _, _, source_samples = streams(src)
    assert len(frames) == 45 and meta["rate"] == Fraction(30000, 1001) and meta["size"] == (64, 48)
    assert meta["audio"] == codec
    if audio == "aac":  # packets copied: the very same samples
        assert samples == source_samples
    elif audio == "pcm":  # re-encoded: the tone's length, give or take AAC framing
        assert abs(samples - 45 / (30000 / 1001) * 16000) <= 2048
    diff = np.abs(frames[10].astype(int) - render_frame(10, 64, 48).astype(int))
    assert diff.mean() < 3
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([src.name, "out.mp4"])


def test_writer_leaves_nothing_behind_on_error(tmp_path):
    out = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError):
        with Mp4Writer(out, 64, 48, Fraction(25)) as writer:
            writer.write(render_frame(0, 64, 48))
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="even"):
        Mp4Writer(out, 63, 48, Fraction(25))


def test_single_frame_video_round_trip(tmp_path):
    src = write_sample_video(tmp_path / "one.mp4", 1)
    info = probe_source(src)
    assert info.num_frames == 1 and len(list(iter_source_frames(info))) == 1


def test_bad_inputs_name_the_file_and_the_problem(tmp_path):
    good = write_sample_video(tmp_path / "good.mp4", 30)
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 20)
    cases = {
        tmp_path / "missing.mp4": "no such file",
        text: "not a video",
        write_truncated_copy(good, tmp_path / "cut.mp4", 0.5): "truncated",
        write_zero_frame_video(tmp_path / "empty.avi"): "zero frames",
        tmp_path: "folder",
    }
    for path, words in cases.items():
        with pytest.raises(VideoInputError) as err:
            probe_source(path)
        assert str(path) in str(err.value) and words in str(err.value)
        assert "\n" not in str(err.value)


def test_stream_ending_early_is_reported_as_truncated(tmp_path):
    info = probe_source(write_sample_video(tmp_path / "v.mp4", 10))
    longer = info.__class__(**{**info.__dict__, "num_frames": 12})
    with pytest.raises(VideoInputError, match="truncated: the stream ended after 10 of 12 frames"):
        list(iter_source_frames(longer))


def test_copy_through(tmp_path):
    mp4 = write_sample_video(tmp_path / "a.mp4", 8, audio="aac")
    out = copy_through(probe_source(mp4), tmp_path / "a_16-9.mp4")
    assert out.read_bytes() == mp4.read_bytes()
    mkv = write_sample_video(tmp_path / "b.mkv", 8, audio="pcm")
    out = copy_through(probe_source(mkv), tmp_path / "b_16-9.mp4")
    frames, meta, samples = streams(out)
    assert len(frames) == 8 and meta["audio"] == "aac" and samples > 0


def test_latent_store_round_trip_and_guards(tmp_path):
    store = LatentStore(tmp_path / "x.f32", 10, (2, 3, 3))
    values = np.random.default_rng(0).standard_normal((10, 2, 3, 3)).astype(np.float32)
    order = [3, 4, 5, 0, 9, 1, 2, 6, 7, 8]
    store.write(order[:5], values[order[:5]])
    with pytest.raises(RuntimeError, match="read before they were written"):
        store.read([1])
    store.write(order[5:], values[order[5:]])
    np.testing.assert_array_equal(store.read([9, 0, 1, 2, 2]), values[[9, 0, 1, 2, 2]])
    assert (tmp_path / "x.f32").stat().st_size == 10 * 2 * 3 * 3 * 4
    store.close()
