"""Tiled generation beyond the model's canvas: the sampler, the pipeline hook, the coherence pass."""

import numpy as np
import pytest
import torch

from lightning_m3ddm.autoencoders import PixelUnshuffleAutoencoder
from lightning_m3ddm.coarse_to_fine import ScheduleConfig, batch_plan
from lightning_m3ddm.conditioning import Condition, null_condition
from lightning_m3ddm.geometry import Box, parse_ratio
from lightning_m3ddm.predict.canvas import CanvasPainter
from lightning_m3ddm.predict.composite import NativeCompositor
from lightning_m3ddm.predict.pipeline import OutpaintingPipeline, SamplingConfig, scheduler_for
from lightning_m3ddm.video.samples import write_sample_video
from lightning_m3ddm.predict.tiling import TilingConfig, coherence_start
from lightning_m3ddm.video.stream import iter_source_frames, probe_source
from lightning_m3ddm.sampling import Guidance, sample_latents
from lightning_m3ddm.spatial_windows import SpatialWindow
from lightning_m3ddm.tiled_sampling import sample_tiled_latents
from tests.test_predict_pipeline import C, RecordingUNet, _one_thread, tiny_unet  # noqa: F401 (autouse fixture)

RATIO = [parse_ratio("16:9")]  # a 4:3 source: border on every side of the square canvas


@pytest.fixture(scope="module")
def video_20(tmp_path_factory):
    return probe_source(write_sample_video(tmp_path_factory.mktemp("videos") / "clip.mp4", 20, 64, 48))


def make_pipeline(unet, tiling=None, max_batch=3, steps=3):
    return OutpaintingPipeline(
        unet,
        PixelUnshuffleAutoencoder(4),
        sampling=SamplingConfig(num_inference_steps=steps),
        schedule=ScheduleConfig(max_batch=max_batch),
        canvas_size=32,
        progress=False,
        **({"tiling": tiling} if tiling is not None else {}),
    )


@pytest.mark.parametrize("scheduler", ["ddpm", "dpm++"])
def test_one_window_over_the_model_canvas_equals_untiled_sampling(scheduler):
    torch.manual_seed(0)
    unet = tiny_unet()
    b, f, h, w = 2, 4, 8, 8
    mask = torch.ones(b, 1, f, h, w)
    mask[..., 2:6, 2:6] = 0
    cond = Condition(torch.randn(b, C, f, h, w), mask)
    null = null_condition(cond, torch.randn(C, h, w))
    glob = torch.randn(1, 2, C, h, w)
    tokens, null_tokens = unet.encode_global_frames(glob), unet.encode_global_frames(torch.zeros_like(glob))
    init = torch.randn(b, C, f, h, w)
    fps = torch.tensor([30, 10])
    common = dict(num_steps=3, guidance=Guidance(2.0, 4.0), init_latents=init)

    def gens():
        return [torch.Generator().manual_seed(i) for i in range(b)]

    untiled = sample_latents(
        unet, scheduler_for(SamplingConfig(scheduler=scheduler)), cond, null, tokens.expand(b, -1, -1),
        null_tokens.expand(b, -1, -1), fps, generators=gens(), **common,
    )
    tiled = sample_tiled_latents(
        unet, scheduler_for(SamplingConfig(scheduler=scheduler)), cond, null, tokens, null_tokens[0], fps,
        [SpatialWindow(0, Box(0, 0, w, h))], [np.ones((h, w), np.float32)], max_batch=b, generators=gens(), **common,
    )
    assert untiled.abs().max() > 0.1
    torch.testing.assert_close(tiled, untiled, rtol=0, atol=1e-5)


def test_scale_one_is_the_untiled_pipeline(video_20):
    unet = tiny_unet()
    default, scale_one = make_pipeline(unet, tiling=None), make_pipeline(unet, TilingConfig(scale=1.0, coherence=True))
    assert not scale_one.tiled and scale_one.generation_canvas == (32, 32)
    a, b = default.outpaint(video_20, RATIO), scale_one.outpaint(video_20, RATIO)
    try:
        frames = list(range(video_20.num_frames))
        np.testing.assert_array_equal(a.latents.generated.read(frames), b.latents.generated.read(frames))
        assert default.unet_calls == scale_one.unet_calls
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("scale", [2, 3])
def test_unet_sees_at_most_one_batch_of_model_size_windows_whatever_the_canvas(video_20, scale):
    unet = RecordingUNet()
    pipe = make_pipeline(unet, TilingConfig(scale=scale), max_batch=3, steps=2)
    video = pipe.outpaint(video_20, RATIO)
    try:
        tiles = pipe.tiles(video.painter)
        assert video.painter.latent_size == (8 * scale, 8 * scale)
        branches = 3  # eq. 4 with s1 = 2, s2 = 4
        assert {c["sample"].shape[-2:] for c in unet.calls} == {(8, 8)}  # the model's latent canvas
        assert max(c["sample"].shape[0] for c in unet.calls) == branches * 3  # max_batch windows
        temporal = [len(batch) for level in batch_plan(video.plan, 3) for batch in level]
        per_step = [-(-n * len(tiles.windows) // 3) for n in temporal]
        assert len(unet.calls) == pipe.unet_calls == 2 * sum(per_step)
    finally:
        video.close()


def test_tiled_canvas_keeps_the_source_and_skipped_windows_keep_the_context(video_20):
    # no overlap: the window in the middle of the 3 x 3 grid lies inside the source, and no other covers it
    pipe = make_pipeline(tiny_unet(), TilingConfig(scale=3, overlap=0.0), steps=2)
    video = pipe.outpaint(video_20, RATIO)
    try:
        painter = video.painter
        tiles = pipe.tiles(painter)
        assert painter.latent_size == (24, 24) and len(tiles.windows) == 3 * 3 - 1
        covered = np.zeros(painter.latent_size[::-1], bool)
        for w in tiles.windows:
            covered[w.box.y0 : w.box.y1, w.box.x0 : w.box.x1] = True
        assert not covered.all()
        frames = list(range(video_20.num_frames))
        generated, context = video.latents.generated.read(frames), video.latents.context.read(frames)
        np.testing.assert_array_equal(generated[..., ~covered], context[..., ~covered])
        assert np.abs(generated[..., covered] - context[..., covered]).max() > 0.1
        compositor = NativeCompositor(video_20.width, video_20.height, video.layout, RATIO[0])
        for source, canvas in zip(iter_source_frames(video_20), video.canvas_frames()):
            out = compositor(source, canvas)
            p = compositor.padding
            np.testing.assert_array_equal(out[p.top : p.top + video_20.height, p.left : p.left + video_20.width], source)
    finally:
        video.close()


def test_crop_global_frames_give_each_window_its_own_tokens(video_20):
    unet = RecordingUNet()
    pipe = make_pipeline(unet, TilingConfig(scale=2, global_frames="crop"), steps=1)
    video = pipe.outpaint(video_20, RATIO)
    video.close()
    windows = pipe.tiles(video.painter).windows
    glob, null = unet.global_inputs
    assert glob.shape == (len(windows), 16, C, 8, 8) and null.shape == (1, 16, C, 8, 8)
    # the c2 branch (last third of each call): windows over different parts of the source differ
    tokens = {tuple(row.flatten().tolist()) for c in unet.calls for row in c["tokens"][2 * len(c["tokens"]) // 3 :]}
    assert len(tokens) > 1
    resize = RecordingUNet()
    make_pipeline(resize, TilingConfig(scale=2), steps=1).outpaint(video_20, RATIO).close()
    assert resize.global_inputs[0].shape == (1, 16, C, 8, 8)  # the whole canvas shrunk to the model's


def test_coherence_pass_runs_the_model_canvas_then_the_last_steps_tiled_from_its_result(video_20):
    unet = RecordingUNet()
    pipe = make_pipeline(unet, TilingConfig(scale=2, coherence=True, coherence_strength=0.5), steps=4)
    video = pipe.outpaint(video_20, RATIO)
    try:
        schedule = scheduler_for(pipe.sampling)
        schedule.set_timesteps(4)
        full = schedule.timesteps.tolist()
        temporal = [len(batch) for level in batch_plan(video.plan, 3) for batch in level]
        first = len(full) * len(temporal)  # the coherence pass: every step, one call per batch
        seen = [int(c["timestep"][0]) for c in unet.calls]
        assert seen[:first] == full * len(temporal)
        chunks = [-(-n * len(pipe.tiles(video.painter).windows) // 3) for n in temporal]
        assert len(seen) - first == 2 * sum(chunks) == pipe.unet_calls - first  # half the steps, tiled
        assert set(seen[first:]) == set(full[2:])
        # the tiled pass starts from the coherence pass's canvas, upscaled under the source
        model_canvas = pipe.coherence_pass(video_20, RATIO)
        try:
            canvas = next(model_canvas.canvas_frames())
        finally:
            model_canvas.close()
        masked = video.painter.masked(video.painter.drawn(next(iter_source_frames(video_20))))
        expected = pipe._encode(coherence_start(video.painter, masked, canvas)[None], None)
        torch.testing.assert_close(torch.from_numpy(video.latents.start.read([0])), expected)
    finally:
        video.close()


def test_coherence_start_is_the_upscaled_canvas_under_the_source():
    from lightning_m3ddm.geometry import canvas_layout

    painter = CanvasPainter(canvas_layout(64, 48, RATIO, 64, 64), 4)
    rng = np.random.default_rng(0)
    masked = painter.masked(painter.drawn(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)))
    small = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    start = coherence_start(painter, masked, small)
    k = painter.known_pixels
    np.testing.assert_array_equal(start[k.y0 : k.y1, k.x0 : k.x1], masked[k.y0 : k.y1, k.x0 : k.x1])
    assert abs(start[:4, :4].astype(float).mean() - small[:2, :2].astype(float).mean()) < 40  # the corner scaled x2


def test_tiling_settings_are_checked():
    with pytest.raises(ValueError, match="canvas scale"):
        TilingConfig(scale=0.5)
    with pytest.raises(ValueError, match="overlap"):
        TilingConfig(overlap=1.0)
    with pytest.raises(ValueError, match="global_frames"):
        TilingConfig(global_frames="whole")
    with pytest.raises(ValueError, match="coherence_strength"):
        TilingConfig(coherence_strength=0)
    assert TilingConfig(coherence=True, coherence_strength=0.3).start_step(50) == 35
    assert TilingConfig(coherence_strength=0.3).start_step(50) == 0


def test_loader_workers_paint_on_the_tiled_canvas():
    from lightning_m3ddm.predict.preparation import CanvasRecipe

    pipe = make_pipeline(RecordingUNet(), TilingConfig(scale=2))
    assert CanvasRecipe.of(pipe).canvas_size == pipe.generation_canvas == (64, 64)
