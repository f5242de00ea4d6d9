"""Golden: one 16-frame window of our pipeline equals the released pipeline's.

The fixture (tests/data/official_golden_pipeline/README.md) holds the released pipeline's
latents for one window (4 guides, 12 frames to generate, dual guidance 2 / 4) with the
tiny random UNet of official_golden_tiny and a tiny random AutoencoderKL, for DDPM and
PNDM. A wrong null condition, branch order, guide handling or start timestep moves the
result far past the tolerance (the start: our former PNDM start, t = 981 over all
timesteps, is checked apart in tests/test_sampling.py, the golden only passes with the
released one).
"""

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from lightning_m3ddm import load_official_unet
from lightning_m3ddm.autoencoders import StableDiffusionVAE
from lightning_m3ddm.coarse_to_fine import Window
from lightning_m3ddm.conditioning import Condition
from lightning_m3ddm.geometry import canvas_layout, parse_ratio
from lightning_m3ddm.predict.canvas import CanvasPainter
from lightning_m3ddm.predict.latent_store import VideoLatents
from lightning_m3ddm.predict.pipeline import OutpaintingPipeline, SamplingConfig, window_seed

from conftest import DATA

GOLDEN = DATA / "official_golden_pipeline"


@pytest.fixture(scope="module")
def golden():
    meta = json.loads((GOLDEN / "meta.json").read_text())
    dtype = getattr(torch, meta["dtype"])  # float64 on both sides: float32 rounding would hide small errors
    unet = load_official_unet(DATA / "official_golden_tiny", dtype=dtype)
    return unet, StableDiffusionVAE(GOLDEN, dtype=meta["dtype"]), load_file(str(GOLDEN / "io.safetensors")), meta


def _window(golden, tmp_path, **sampling) -> torch.Tensor:
    """Our pipeline's latents for the fixture's window (index 0, seed 0)."""
    unet, vae, io, meta = golden
    canvas = meta["canvas"]
    painter = CanvasPainter(canvas_layout(*meta["source_size"], [parse_ratio(meta["target"])], canvas, canvas), vae.downscale)
    sampling = dict(num_inference_steps=meta["num_inference_steps"], seed=0, guidance_context=2.0, guidance_global=4.0) | sampling
    pipeline = OutpaintingPipeline(unet, vae, SamplingConfig(**sampling), canvas_size=canvas, progress=False)
    frames = tuple(range(16))
    guides = tuple(meta["guide_slots"])
    latents = VideoLatents(16, (vae.latent_channels, *painter.latent_size[::-1]), tmp_path, with_start=True)
    try:
        latents.context.write(frames, pipeline._encode(io["masked"].numpy(), None))
        latents.start.write(frames, pipeline._encode(io["init"].numpy(), None))
        latents.generated.write(guides, io["guide_latents"])
        window = Window(0, 0, 1, frames, guides, tuple(f for f in frames if f not in guides))
        conditioning = pipeline.video_conditioning(io["global"].numpy(), painter)
        return pipeline.run_windows([window], meta["fps"], latents, painter, conditioning)
    finally:
        latents.close()


def test_fixture_inputs_are_ours(golden):
    """The released run saw our window's seed and the mask our canvas gives."""
    unet, vae, io, meta = golden
    assert meta["window_seed"] == window_seed(0, 0)
    canvas = meta["canvas"]
    painter = CanvasPainter(canvas_layout(*meta["source_size"], [parse_ratio(meta["target"])], canvas, canvas), vae.downscale)
    released_mask = F.interpolate(io["pixel_mask"].float()[None, None], size=painter.latent_size[::-1])[0]
    assert torch.equal(painter.latent_mask(), released_mask)


@pytest.mark.parametrize("scheduler, start", [("ddpm", "released"), ("pndm", None)])
def test_window_matches_released_pipeline(golden, tmp_path, scheduler, start):
    """DDPM with the released start, and PNDM by default, equal the released pipeline to 1e-4."""
    expected = golden[2][f"{scheduler}_output"]
    out = _window(golden, tmp_path, scheduler=scheduler, start=start)
    assert out.shape == expected.shape
    assert (out - expected).abs().max() < 1e-4
    assert expected.abs().max() > 1.0  # the reference is a real signal


def test_golden_detects_a_wrong_null_condition(golden, tmp_path, monkeypatch):
    """A null context that blanks the guides too (the released one keeps them) is caught."""
    from lightning_m3ddm.predict import pipeline

    def blank_guides(condition, black):
        black = black[None, :, None].expand_as(condition.masked_latents).to(condition.masked_latents)
        return Condition(black, torch.ones_like(condition.mask))

    monkeypatch.setattr(pipeline, "null_condition", blank_guides)
    out = _window(golden, tmp_path, scheduler="pndm")
    assert (out - golden[2]["pndm_output"]).abs().max() > 0.1
