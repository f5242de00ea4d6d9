"""M3DDMUNet: architecture, shapes, conditioning paths, checkpointing."""

import json

import pytest
import torch

from lightning_m3ddm.models import GlobalFrameEncoder, M3DDMUNet
from lightning_m3ddm.testing import randomize_weights

from conftest import DATA

REFERENCE = json.loads((DATA / "m3ddm_official_unet_state_dict.json").read_text())


def _inputs(b=2, f=4, h=16, w=16, g=2):
    return dict(
        sample=torch.randn(b, 9, f, h, w),
        timestep=torch.randint(0, 1000, (b,)),
        fps=torch.randint(1, 31, (b,)),
        global_latents=torch.randn(b, g, 4, h, w),
    )


def _tiny(config):
    model = M3DDMUNet(**config)
    return randomize_weights(model, torch.Generator().manual_seed(1)).eval()


def _run(model, inputs):
    x = dict(inputs)
    return model(x.pop("sample"), x.pop("timestep"), **x).sample


def test_full_config_parameter_count_on_meta_device():
    with torch.device("meta"):
        model = M3DDMUNet.from_config(REFERENCE["config"])
    assert sum(p.numel() for p in model.parameters()) == 1_299_279_320 == REFERENCE["num_parameters"]


def test_official_key_list_loads_into_full_model_without_missing_or_unexpected_keys():
    with torch.device("meta"):
        model = M3DDMUNet.from_config(REFERENCE["config"])
        state = {
            name: torch.empty(spec["shape"], dtype=torch.long if name.endswith("num_batches_tracked") else None)
            for name, spec in REFERENCE["tensors"].items()
        }
    assert len(state) == REFERENCE["num_tensors"] == 1516
    result = model.load_state_dict(state, strict=True, assign=True)
    assert not result.missing_keys and not result.unexpected_keys
    buffers = [k for k, v in REFERENCE["tensors"].items() if v["buffer"]]
    assert len(buffers) == 105 and all(k.startswith("global_img_encoder.") for k in buffers)


def test_default_config_is_the_released_one():
    import inspect

    params = inspect.signature(M3DDMUNet.__init__).parameters
    for key, value in REFERENCE["config"].items():
        default = params[key].default
        assert (list(default) if isinstance(default, tuple) else default) == value, key


def test_forward_shapes_and_output_wrapper(tiny_unet_config):
    model = _tiny(tiny_unet_config)
    inputs = _inputs()
    with torch.no_grad():
        out = model(inputs["sample"], inputs["timestep"], fps=inputs["fps"], global_latents=inputs["global_latents"])
        tup = model(
            inputs["sample"], inputs["timestep"], fps=inputs["fps"], global_latents=inputs["global_latents"],
            return_dict=False,
        )
    assert out.sample.shape == (2, 4, 4, 16, 16)
    assert torch.equal(out.sample, tup[0])
    assert torch.isfinite(out.sample).all()


@pytest.mark.parametrize("size", [(20, 28), (24, 16)])
def test_latent_sizes_that_are_not_multiples_of_8(tiny_unet_config, size):
    model = _tiny(tiny_unet_config)
    with torch.no_grad():
        y = _run(model, _inputs(b=1, f=3, h=size[0], w=size[1]))
    assert y.shape == (1, 4, 3, *size)


def test_every_conditioning_input_changes_the_output(tiny_unet_config):
    model = _tiny(tiny_unet_config)
    base = _inputs()
    with torch.no_grad():
        y0 = _run(model, base)
        for key, new in [
            ("timestep", base["timestep"] + 100),
            ("fps", base["fps"] % 30 + 1),
            ("global_latents", torch.randn_like(base["global_latents"])),
        ]:
            y1 = _run(model, {**base, key: new})
            assert (y1 - y0).abs().max() > 1e-3, key


def test_frames_interact_through_temporal_layers(tiny_unet_config):
    model = _tiny(tiny_unet_config)
    base = _inputs(b=1, f=4)
    changed = {**base, "sample": base["sample"].clone()}
    changed["sample"][:, :, -1] += 1.0
    with torch.no_grad():
        y0, y1 = _run(model, base), _run(model, changed)
    assert (y1[:, :, 0] - y0[:, :, 0]).abs().max() > 1e-4


def test_precomputed_global_tokens_equal_global_latents(tiny_unet_config):
    model = _tiny(tiny_unet_config)
    x = _inputs()
    with torch.no_grad():
        y0 = _run(model, x)
        tokens = model.encode_global_frames(x["global_latents"])
        y1 = model(x["sample"], x["timestep"], fps=x["fps"], global_tokens=tokens).sample
    assert tokens.shape == (2, 2 * 6 * 6, 320)
    torch.testing.assert_close(y0, y1)


def test_scalar_timestep_and_fps_broadcast(tiny_unet_config):
    model = _tiny(tiny_unet_config)
    x = _inputs()
    with torch.no_grad():
        y0 = model(x["sample"], 50, fps=8, global_latents=x["global_latents"]).sample
        y1 = model(x["sample"], torch.tensor([50, 50]), fps=torch.tensor([8, 8]), global_latents=x["global_latents"]).sample
    torch.testing.assert_close(y0, y1)


def test_global_encoder_token_count():
    enc = GlobalFrameEncoder()
    tokens = enc(torch.randn(2, 3, 4, 32, 32))
    assert tokens.shape == (2, 3 * 14 * 14, 320) and GlobalFrameEncoder.num_tokens(3, 32, 32) == 3 * 14 * 14
    with pytest.raises(ValueError, match="at least 5x5"):
        enc(torch.randn(1, 1, 4, 4, 4))


def test_gradient_checkpointing_gives_the_same_gradients(tiny_unet_config):
    tiny_unet_config["dropout"] = 0.0
    model = _tiny(tiny_unet_config).train()
    for m in model.modules():  # BatchNorm statistics would drift between the two passes
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()
    x = _inputs(b=1, f=2)

    def grads():
        model.zero_grad()
        _run(model, x).square().mean().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    g0 = grads()
    model.enable_gradient_checkpointing()
    assert all(b.gradient_checkpointing for b in model.down_blocks)
    g1 = grads()
    assert g0.keys() == g1.keys() and len(g0) == len(list(model.parameters()))
    for name in g0:
        torch.testing.assert_close(g0[name], g1[name], atol=1e-5, rtol=1e-4, msg=name)


def test_save_and_from_pretrained_roundtrip(tmp_path, tiny_unet_config):
    model = _tiny(tiny_unet_config)
    model.save_pretrained(tmp_path)
    again = M3DDMUNet.from_pretrained(tmp_path).eval()
    x = _inputs(b=1, f=2)
    with torch.no_grad():
        torch.testing.assert_close(_run(model, x), _run(again, x))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(block_out_channels=(32, 64)), "one down and one up block type"),
        (dict(down_block_types=("Nope", "Nope", "Nope", "Nope")), "unknown block type"),
        (dict(block_out_channels=(30, 64, 64, 64)), "divisible"),
    ],
)
def test_bad_configs_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        M3DDMUNet(**{**dict(block_out_channels=(32, 64, 64, 64)), **kwargs})


def test_bad_inputs_are_rejected(tiny_unet_config):
    model = _tiny(tiny_unet_config)
    x = _inputs()
    with pytest.raises(ValueError, match="sample must be"):
        model(x["sample"][:, :4], 1, fps=1, global_latents=x["global_latents"])
    with pytest.raises(ValueError, match="exactly one"):
        model(x["sample"], 1, fps=1)
    with pytest.raises(ValueError, match="batch"):
        model(x["sample"], 1, fps=1, global_latents=x["global_latents"][:1])
