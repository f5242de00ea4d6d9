"""OutpaintingPipeline: batching, guidance branches, guides, start latents, global frames, seeds."""

from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from einops import rearrange
from torch import nn

from lightning_m3ddm.autoencoders import PixelUnshuffleAutoencoder
from lightning_m3ddm.coarse_to_fine import ScheduleConfig, batch_plan
from lightning_m3ddm.conditioning import Condition, null_condition
from lightning_m3ddm.geometry import parse_ratio
from lightning_m3ddm.models.unet_3d import M3DDMUNet
from lightning_m3ddm.predict.canvas import CanvasPainter
from lightning_m3ddm.predict.pipeline import (
    GlobalFramesConfig,
    OutpaintingPipeline,
    SamplingConfig,
    global_frame_indices,
    scheduler_for,
)
from lightning_m3ddm.video.samples import write_sample_video
from lightning_m3ddm.video.stream import iter_source_frames, probe_source
from lightning_m3ddm.sampling import Guidance, guided_noise
from lightning_m3ddm.testing import randomize_weights

C = 48  # PixelUnshuffleAutoencoder(4) latent channels
TINY = dict(
    in_channels=2 * C + 1, out_channels=C, global_latent_channels=C, block_out_channels=(32, 32, 32, 32),
    layers_per_block=1, norm_num_groups=8, attention_head_dim=4, cross_attention_dim=32,
    temporal_position_embed_dim=32,
)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: spinning OpenMP workers only cost time on a shared CPU
    yield
    torch.set_num_threads(threads)


def tiny_unet(seed: int = 0) -> M3DDMUNet:
    unet = M3DDMUNet(**TINY).eval()
    randomize_weights(unet, torch.Generator().manual_seed(seed))  # no identity/zero-initialised layer hides
    return unet


class RecordingUNet(nn.Module):
    """Stands in for M3DDMUNet: noise from a fixed 1x1 conv of the input plus the tokens; records each call."""

    def __init__(self, channels: int = C):
        super().__init__()
        self.config = SimpleNamespace(in_channels=2 * channels + 1, out_channels=channels)
        self.proj = nn.Conv3d(2 * channels + 1, channels, 1)
        self.calls: list[dict] = []
        self.global_inputs: list[torch.Tensor] = []

    @property
    def dtype(self):
        return torch.float32

    def encode_global_frames(self, global_latents):
        self.global_inputs.append(global_latents)
        return rearrange(global_latents, "b g c h w -> b (g h w) c")

    def forward(self, sample, timestep, *, fps, global_tokens):
        self.calls.append(dict(sample=sample.clone(), timestep=timestep, fps=fps, tokens=global_tokens.clone()))
        eps = self.proj(sample) + global_tokens.mean(dim=(1, 2))[:, None, None, None, None]
        return SimpleNamespace(sample=eps * 0.1)


@pytest.fixture(scope="module")
def video_80(tmp_path_factory):
    path = tmp_path_factory.mktemp("videos") / "clip.mp4"
    return probe_source(write_sample_video(path, 80, 64, 48))


def make_pipeline(unet, max_batch=8, steps=2, canvas=32, **sampling):
    return OutpaintingPipeline(
        unet,
        PixelUnshuffleAutoencoder(4),
        sampling=SamplingConfig(num_inference_steps=steps, **sampling),
        schedule=ScheduleConfig(max_batch=max_batch),
        canvas_size=canvas,
        progress=False,
    )


def generated(video) -> np.ndarray:
    return video.latents.generated.read(list(range(video.info.num_frames)))


def test_batched_levels_equal_one_by_one(video_80):
    unet = tiny_unet()
    batched = make_pipeline(unet, max_batch=8)
    single = make_pipeline(unet, max_batch=1)
    a = batched.outpaint(video_80, [parse_ratio("1:1")])
    b = single.outpaint(video_80, [parse_ratio("1:1")])
    try:
        plan = a.plan
        assert plan.mode == "hybrid" and len(plan.levels) == 2  # 80 frames: stride-5 key frames, then infilling
        batches = sum(len(level) for level in batch_plan(plan, 8))
        assert batches < len(plan.windows)  # something really was batched
        assert batched.unet_calls == 2 * batches and single.unet_calls == 2 * len(plan.windows)
        x, y = generated(a), generated(b)
        assert np.abs(x).max() > 0.1
        np.testing.assert_allclose(x, y, rtol=0, atol=2e-4)
    finally:
        a.close()
        b.close()


def test_one_unet_call_per_step_with_three_branches(video_80):
    unet = RecordingUNet()
    pipe = make_pipeline(unet, max_batch=3, steps=3)
    video = pipe.outpaint(video_80, [parse_ratio("1:1")])
    video.close()
    batches = [len(b) for level in batch_plan(video.plan, 3) for b in level]
    # one call per step and batch, holding the three branches of eq. 4 for every window
    assert [c["sample"].shape[0] for c in unet.calls] == [3 * n for n in batches for _ in range(3)]
    assert len(unet.calls) == 3 * len(batches)


def test_guided_noise_batches_branches_and_combines_as_eq_4():
    torch.manual_seed(0)
    unet = tiny_unet(1)
    b, f, h, w = 2, 4, 8, 8
    latents = torch.randn(b, C, f, h, w)
    mask = torch.ones(b, 1, f, h, w)
    mask[..., 2:6, 2:6] = 0
    mask[:, :, 0] = 0  # frame 0 is a guide
    cond = Condition(torch.randn(b, C, f, h, w), mask)
    null = null_condition(cond, torch.randn(C, h, w))
    glob = torch.randn(b, 3, C, h, w)
    tokens, null_tokens = unet.encode_global_frames(glob), unet.encode_global_frames(torch.zeros_like(glob))
    t, fps = torch.tensor([500]), torch.tensor([30, 30])
    guidance = Guidance(context=2.0, global_frames=4.0)

    calls = []
    hook = unet.register_forward_pre_hook(lambda mod, args: calls.append(args[0].shape[0]))
    eps = guided_noise(unet, latents, t, cond, null, tokens, null_tokens, fps, guidance)
    hook.remove()
    assert calls == [3 * b]  # eps(0,0), eps(c1,0), eps(c1,c2) in one call; no eps(0,c2)

    def branch(condition, toks):
        return unet(condition.unet_input(latents), t.expand(b), fps=fps, global_tokens=toks).sample

    e00, e10, e11 = branch(null, null_tokens), branch(cond, null_tokens), branch(cond, tokens)
    expected = e00 + 2.0 * (e10 - e00) + 4.0 * (e11 - e10)
    torch.testing.assert_close(eps, expected, rtol=1e-4, atol=1e-4)


def test_guides_enter_as_in_training(video_80):
    """A window's guides: their generated latents, mask 0, in the conditional and the null branch."""
    unet = RecordingUNet()
    pipe = make_pipeline(unet, max_batch=1, steps=1)
    video = pipe.outpaint(video_80, [parse_ratio("1:1")])
    try:
        windows = video.plan.windows
        assert len(unet.calls) == len(windows)
        painter = video.painter
        known = painter.latent_mask()[0]
        black = PixelUnshuffleAutoencoder(4).encode(-torch.ones(1, 3, 32, 32))[0]
        for window, call in zip(windows, unet.calls):
            null_in, cond_in = call["sample"][0], call["sample"][1]  # branches 00, 10 (11 = 10 + tokens)
            for slot, frame in enumerate(window.frames):
                ctx = video.latents.context.read([frame])[0]
                if frame in window.guides:
                    gen = torch.from_numpy(video.latents.generated.read([frame])[0])
                    for branch in (null_in, cond_in):
                        torch.testing.assert_close(branch[C : 2 * C, slot], gen)
                        assert branch[2 * C, slot].abs().max() == 0
                else:
                    torch.testing.assert_close(cond_in[C : 2 * C, slot], torch.from_numpy(ctx))
                    torch.testing.assert_close(cond_in[2 * C, slot], known)
                    torch.testing.assert_close(null_in[C : 2 * C, slot], black)
                    assert null_in[2 * C, slot].min() == 1
        assert all(len(w.guides) > 0 for w in windows[1:])
    finally:
        video.close()


def test_context_masked_on_latent_grid_and_start_is_telea_inpainting(video_80):
    frame = next(iter_source_frames(video_80))
    pipe = make_pipeline(RecordingUNet(), steps=1, canvas=64)
    painter = CanvasPainter(pipe.layout(video_80, [parse_ratio("9:16")]), 4)
    drawn = painter.drawn(frame)
    masked = painter.masked(drawn)
    k, s = painter.known_pixels, painter.layout.source_box
    assert s.contains(k) and k.x0 % 4 == 0 and k.y1 % 4 == 0
    outside = np.ones(drawn.shape[:2], bool)
    outside[k.y0 : k.y1, k.x0 : k.x1] = False
    assert masked[outside].max() == 0 and np.array_equal(masked[~outside], drawn[~outside])
    hole = np.ones(drawn.shape[:2], np.uint8)
    hole[s.y0 : s.y1, s.x0 : s.x1] = 0
    np.testing.assert_array_equal(painter.inpainted(drawn), cv2.inpaint(drawn, hole, 5, cv2.INPAINT_TELEA))
    assert painter.inpainted(drawn)[hole.astype(bool)].mean() > 20  # the border is filled, not black


def test_start_latents_are_noised_inpainting_or_pure_noise(video_80):
    """With init=inpaint the first UNet input is add_noise(start latent); with init=noise it is not."""
    for init in ("inpaint", "noise"):
        unet = RecordingUNet()
        pipe = make_pipeline(unet, max_batch=1, steps=2, init=init)
        video = pipe.outpaint(video_80, [parse_ratio("1:1")])
        try:
            window = video.plan.windows[0]
            noisy = unet.calls[0]["sample"][0, :C]  # latents of the first window at its first step
            scheduler = scheduler_for(SamplingConfig(scheduler="ddpm"))
            scheduler.set_timesteps(2)
            start = torch.from_numpy(video.latents.context.read(list(window.frames)))
            if init == "inpaint":
                start = torch.from_numpy(video.latents.start.read(list(window.frames)))
            alpha = scheduler.alphas_cumprod[scheduler.timesteps[0]]
            residual = (noisy - alpha.sqrt() * rearrange(start, "f c h w -> c f h w")) / (1 - alpha).sqrt()
            # what is left is unit Gaussian noise only when the start latents were used
            if init == "inpaint":
                assert 0.95 < residual.std().item() < 1.05
            else:
                assert video.latents.start is None
                assert 0.95 < noisy.std().item() < 1.05 and residual.std().item() > 1.1
        finally:
            video.close()


def test_global_frames_spread_and_masked_like_the_context(video_80):
    assert list(global_frame_indices(80, 16)) == np.linspace(0, 79, 16).astype(int).tolist()
    assert list(global_frame_indices(1, 16)) == [0] * 16
    for mode in ("masked", "resize"):
        unet = RecordingUNet()
        pipe = make_pipeline(unet, steps=1)
        pipe.global_frames = GlobalFramesConfig(16, mode)
        pipe.outpaint(video_80, [parse_ratio("1:1")]).close()
        frames_latents, null_latents = unet.global_inputs  # c2, then c2 = null (all-zero latents)
        assert frames_latents.shape == (1, 16, C, 8, 8) and null_latents.abs().max() == 0
        frames = PixelUnshuffleAutoencoder(4).decode(frames_latents[0])  # (16, 3, 32, 32), lossless
        border = frames[:, :, :4]  # top rows: outside the source for 1:1
        if mode == "masked":
            assert border.max() == -1  # black, like the context
        else:
            assert border.max() > -0.5  # the released whole-frame resize


def test_seeded_and_reproducible(video_80):
    unet = tiny_unet()
    runs = []
    for seed in (0, 0, 1):
        video = make_pipeline(unet, steps=1, seed=seed).outpaint(video_80, [parse_ratio("1:1")])
        runs.append(generated(video))
        video.close()
    np.testing.assert_array_equal(runs[0], runs[1])
    assert np.abs(runs[0] - runs[2]).max() > 1e-3


def test_latents_live_on_disk_and_are_removed(video_80):
    video = make_pipeline(RecordingUNet(), steps=1).outpaint(video_80, [parse_ratio("1:1")])
    folder = video.latents.folder
    files = sorted(p.name for p in folder.iterdir())
    assert files == ["context.f32", "generated.f32", "start.f32"]
    assert (folder / "generated.f32").stat().st_size == 80 * C * 8 * 8 * 4
    frames = list(video.canvas_frames())
    assert len(frames) == 80 and frames[0].shape == (32, 32, 3) and frames[0].dtype == np.uint8
    video.close()
    assert not folder.exists()


@pytest.mark.parametrize("spacing, first", [("trailing", 999), ("leading", 501)])
def test_timestep_spacing_reaches_the_unet(video_80, spacing, first):
    unet = RecordingUNet()
    pipe = make_pipeline(unet, max_batch=1, steps=2, scheduler="ddim", timestep_spacing=spacing)
    pipe.outpaint(video_80, [parse_ratio("1:1")])
    assert int(unet.calls[0]["timestep"].flatten()[0]) == first


def test_unknown_timestep_spacing_fails_when_configured():
    with pytest.raises(ValueError, match="timestep_spacing must be one of"):
        SamplingConfig(timestep_spacing="backwards")


def test_released_plan_runs_padded_windows(video_80):
    """compat released on 80 frames: a stride-15 window of 6 key frames + 10 copies of frame 79."""
    unet = RecordingUNet()
    pipe = OutpaintingPipeline(
        unet, PixelUnshuffleAutoencoder(4), sampling=SamplingConfig(num_inference_steps=2),
        schedule=ScheduleConfig(max_batch=8, compat="released"), canvas_size=32, progress=False,
    )
    video = pipe.outpaint(video_80, [parse_ratio("1:1")])  # raises if a frame was left out
    try:
        assert [level.stride for level in video.plan.levels] == [15, 5, 1]
        assert video.plan.windows[0].frames == (0, 15, 30, 45, 60, 75) + (79,) * 10
        batches = [len(b) for level in batch_plan(video.plan, 8) for b in level]
        assert [c["sample"].shape[:3] for c in unet.calls] == [(3 * n, 2 * C + 1, 16) for n in batches for _ in range(2)]
        last = unet.calls[-1]["sample"]  # the last stride-1 window: 75..79, then frame 79 repeated
        mask = last[-1, -1]  # ε(c1, c2) branch of the last window: its mask channel, (F, h, w)
        assert mask[5:].amax() == 0  # frame 79 was generated at stride 15: every copy is a guide
        assert np.abs(generated(video)).max() > 0
    finally:
        video.close()
