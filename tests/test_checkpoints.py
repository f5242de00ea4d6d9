"""load_official_unet and inflate_from_stable_diffusion on small local checkpoints."""

import json

import pytest
import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import save_file

from lightning_m3ddm import CheckpointError, inflate_from_stable_diffusion, load_official_unet
from lightning_m3ddm.models import M3DDMUNet
from lightning_m3ddm.testing import randomize_weights

OFFICIAL_KEYS = [
    "in_channels", "out_channels", "cross_attention_dim", "down_block_types", "up_block_types",
    "block_out_channels", "layers_per_block", "attention_head_dim", "norm_num_groups", "norm_eps",
    "flip_sin_to_cos", "freq_shift",
]


def _official_folder(path, config, *, fmt="safetensors", seed=0, extra_config=None):
    """A folder laid out like the released checkpoint: its config keys, its weight file names."""
    model = randomize_weights(M3DDMUNet(**config), torch.Generator().manual_seed(seed))
    full = dict(model.config)
    cfg = {"_class_name": "UNet3DConditionModel", "_diffusers_version": "0.18.2"}
    cfg.update({k: (list(full[k]) if isinstance(full[k], tuple) else full[k]) for k in OFFICIAL_KEYS})
    cfg.update(extra_config or {})
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(cfg))
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if fmt == "safetensors":
        save_file(state, str(path / "diffusion_pytorch_model.safetensors"))
    else:
        torch.save(state, path / "diffusion_pytorch_model.bin")
    return model.eval()


def _inputs(b=1, f=3, h=16, w=16, g=2):
    return (torch.randn(b, 9, f, h, w), torch.randint(0, 1000, (b,))), dict(
        fps=torch.randint(1, 31, (b,)), global_latents=torch.randn(b, g, 4, h, w)
    )


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_load_official_layout_roundtrip(tmp_path, tiny_unet_config, fmt):
    reference = _official_folder(tmp_path / "ckpt", tiny_unet_config, fmt=fmt)
    loaded = load_official_unet(tmp_path / "ckpt")
    assert not loaded.training
    args, kwargs = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(loaded(*args, **kwargs).sample, reference(*args, **kwargs).sample)


def test_load_official_accepts_the_full_released_config_keys(tmp_path, tiny_unet_config):
    extra = dict(sample_size=32, center_input_sample=False, downsample_padding=1, mid_block_scale_factor=1, act_fn="silu")
    _official_folder(tmp_path / "ckpt", tiny_unet_config, extra_config=extra)
    assert list(load_official_unet(tmp_path / "ckpt").config.block_out_channels) == [32, 64, 64, 64]


def test_load_official_casts_dtype(tmp_path, tiny_unet_config):
    _official_folder(tmp_path / "ckpt", tiny_unet_config)
    model = load_official_unet(tmp_path / "ckpt", dtype=torch.bfloat16)
    assert model.conv_in.weight.dtype == torch.bfloat16
    assert model.global_img_encoder.resnet_layer[0].layers[0].shortcut.normalization.num_batches_tracked.dtype == torch.long


def _break(path, what):
    weights = path / "diffusion_pytorch_model.safetensors"
    from safetensors.torch import load_file

    state = load_file(str(weights))
    if what == "missing":
        state.pop("down_blocks.0.resnets.0.fps_emb_proj.weight")
    elif what == "unexpected":
        state["down_blocks.0.extra.weight"] = torch.zeros(1)
    elif what == "shape":
        state["conv_in.weight"] = torch.zeros(32, 8, 1, 3, 3)
    save_file(state, str(weights))


@pytest.mark.parametrize(
    "damage, message",
    [
        ("missing", "1 missing .*fps_emb_proj"),
        ("unexpected", "1 unexpected .*extra"),
        ("shape", "wrong shape .*conv_in.weight"),
    ],
)
def test_load_official_rejects_weights_that_do_not_fit(tmp_path, tiny_unet_config, damage, message):
    _official_folder(tmp_path / "ckpt", tiny_unet_config)
    _break(tmp_path / "ckpt", damage)
    with pytest.raises(CheckpointError, match=message):
        load_official_unet(tmp_path / "ckpt")


def test_load_official_bad_folders(tmp_path, tiny_unet_config):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_official_unet(tmp_path / "nowhere")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(CheckpointError, match="not a folder"):
        load_official_unet(tmp_path / "file.txt")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="no config.json"):
        load_official_unet(empty)
    (empty / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not readable JSON"):
        load_official_unet(empty)
    ckpt = tmp_path / "ckpt"
    _official_folder(ckpt, tiny_unet_config)
    (ckpt / "diffusion_pytorch_model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="cannot read weights"):
        load_official_unet(ckpt)
    (ckpt / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no weights file"):
        load_official_unet(ckpt)


@pytest.mark.parametrize(
    "extra, message",
    [(dict(act_fn="gelu"), "act_fn='gelu' is not supported"), (dict(foo=1), "unknown config key 'foo'")],
)
def test_load_official_rejects_unsupported_config(tmp_path, tiny_unet_config, extra, message):
    _official_folder(tmp_path / "ckpt", tiny_unet_config, extra_config=extra)
    with pytest.raises(CheckpointError, match=message):
        load_official_unet(tmp_path / "ckpt")


# -- inflation ---------------------------------------------------------------------------------


@pytest.fixture
def tiny_sd(tmp_path):
    """A tiny Stable Diffusion folder built with diffusers' own class, every weight random,
    cross-attention outputs zeroed (so the text encoder's context cannot matter)."""
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64, 64, 64), layers_per_block=2, cross_attention_dim=24,
        attention_head_dim=8, norm_num_groups=32, sample_size=16,
    )
    randomize_weights(unet, torch.Generator().manual_seed(3))
    with torch.no_grad():
        for name, module in unet.named_modules():
            if name.endswith("attn2"):
                module.to_out[0].weight.zero_()
    unet.save_pretrained(tmp_path / "sd" / "unet")
    return tmp_path / "sd", unet.eval()


def _per_frame_2d(unet2d, sample, t):
    frames = [
        unet2d(sample[:, :4, f], t, encoder_hidden_states=torch.randn(sample.shape[0], 7, 24)).sample
        for f in range(sample.shape[2])
    ]
    return torch.stack(frames, dim=2)


def test_inflated_model_equals_2d_unet_frame_by_frame(tiny_sd):
    path, unet2d = tiny_sd
    model = inflate_from_stable_diffusion(path, norm_across_frames=False).eval()
    sample, t = torch.randn(2, 9, 4, 16, 16), torch.tensor([3, 871])
    with torch.no_grad():
        ours = model(sample, t, fps=torch.tensor([2, 30]), global_latents=torch.randn(2, 3, 4, 16, 16)).sample
        ref = _per_frame_2d(unet2d, sample, t)
    assert (ours - ref).abs().max() < 1e-5
    assert ref.abs().max() > 0.5  # a real signal, not two zeros


def test_inflated_released_architecture_equals_2d_unet_on_single_frames(tiny_sd):
    path, unet2d = tiny_sd
    model = inflate_from_stable_diffusion(path).eval()  # default: norms over the clip, as released
    assert model.config.norm_across_frames and model.config.time_embedding_max_period == 10000
    sample, t = torch.randn(2, 9, 1, 16, 16), torch.tensor([10, 500])
    with torch.no_grad():
        ours = model(sample, t, fps=7, global_latents=torch.randn(2, 2, 4, 16, 16)).sample
        ref = _per_frame_2d(unet2d, sample, t)
    assert (ours - ref).abs().max() < 1e-5


def test_inflation_initialises_new_parts_as_specified(tiny_sd):
    path, unet2d = tiny_sd
    model = inflate_from_stable_diffusion(path)
    sd_state = unet2d.state_dict()
    ours = model.state_dict()
    torch.testing.assert_close(ours["conv_in.weight"][:, :4, 0], sd_state["conv_in.weight"])
    assert ours["conv_in.weight"][:, 4:].abs().sum() == 0
    torch.testing.assert_close(
        ours["up_blocks.1.resnets.2.conv1.spatial_conv.weight"], sd_state["up_blocks.1.resnets.2.conv1.weight"]
    )
    torch.testing.assert_close(ours["conv_out.spatial_conv.weight"], sd_state["conv_out.weight"])
    for name, value in ours.items():
        if "fps_emb_proj" in name or "proj_out2" in name:
            assert value.abs().sum() == 0, name
        if name.endswith("temporal_conv.weight"):
            assert torch.equal(value, torch.nn.init.dirac_(torch.empty_like(value))), name
    # cross-attention reads 320-wide global tokens, not the 24-wide text context
    assert ours["mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight"].shape == (64, 320)


def test_inflation_bad_folders(tmp_path, tiny_sd):
    with pytest.raises(CheckpointError, match="does not exist"):
        inflate_from_stable_diffusion(tmp_path / "missing")
    (tmp_path / "nounet").mkdir()
    with pytest.raises(CheckpointError, match="no unet/ subfolder"):
        inflate_from_stable_diffusion(tmp_path / "nounet")
    path, _ = tiny_sd
    (path / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no weights file"):
        inflate_from_stable_diffusion(path)
    config = json.loads((path / "unet" / "config.json").read_text())
    config["down_block_types"][0] = "AttnDownBlock2D"
    (path / "unet" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="AttnDownBlock2D"):
        inflate_from_stable_diffusion(path)
