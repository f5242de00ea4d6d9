"""The golden fixture: our UNet computes what the released M3DDM code computes."""

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


@pytest.mark.parametrize("ablation", ["fps_projection", "temporal_transformer", "batchnorm_train_mode"])
def test_fixture_detects_a_missing_layer(golden, ablation):
    """With random weights every layer matters: breaking one moves the output far past tolerance."""
    model, io = golden
    handles = []
    if ablation == "fps_projection":
        for name, module in model.named_modules():
            if name.endswith("fps_emb_proj"):
                handles.append(module.register_forward_hook(lambda m, i, o: torch.zeros_like(o)))
    elif ablation == "temporal_transformer":
        for name, module in model.named_modules():
            if name.endswith("proj_out2"):
                handles.append(module.register_forward_hook(lambda m, i, o: torch.zeros_like(o)))
    else:
        model.global_img_encoder.train()
    try:
        out = _predict(model, io)
    finally:
        for h in handles:
            h.remove()
        model.eval()
    assert (out - io["output"]).abs().max() > 0.1
