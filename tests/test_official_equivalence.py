"""The golden fixture: our UNet computes what the released M3DDM code computes."""

import copy

import pytest
import torch
from safetensors.torch import load_file

from lightning_m3ddm import load_official_unet

from conftest import DATA

GOLDEN = DATA / "official_golden_tiny"


@pytest.fixture(scope="module")
def golden():
    return load_official_unet(GOLDEN), load_file(str(GOLDEN / "io.safetensors"))


def _predict(model, io):
    with torch.no_grad():
        return model(io["sample"], io["timestep"], fps=io["fps"], global_latents=io["global_latents"]).sample


def test_matches_official_output(golden):
    model, io = golden
    out = _predict(model, io)
    assert out.shape == io["output"].shape
    assert (out - io["output"]).abs().max() < 1e-4
    assert io["output"].abs().max() > 1.0  # the reference is a real signal


@pytest.mark.parametrize(
    "ablation, suffix",
    [("fps projections dropped", "fps_emb_proj"), ("temporal transformers skipped", "proj_out2"), ("BatchNorm in train mode", None)],
)
def test_fixture_detects_a_missing_layer(golden, ablation, suffix):
    """With random weights every layer matters: breaking one moves the output far past tolerance."""
    model, io = golden
    broken = copy.deepcopy(model)
    if suffix is None:
        broken.global_img_encoder.train()
    else:
        with torch.no_grad():
            for name, param in broken.named_parameters():
                if f".{suffix}." in name:  # a zero output projection removes the branch
                    param.zero_()
    assert (_predict(broken, io) - io["output"]).abs().max() > 0.1, ablation
