"""Loading weights: the released M3DDM checkpoint, and Stable Diffusion 1.x inflated to 3D.

Nothing is downloaded: every path is a local folder, and a missing or malformed one
raises :class:`CheckpointError` naming what is wrong.
"""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from lightning_m3ddm.models.unet_3d import M3DDMUNet

WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")

# Keys a released config.json may carry beyond the architecture, with the only values
# this implementation reproduces (the official defaults).
_OFFICIAL_FIXED_KEYS: dict[str, Any] = {
    "center_input_sample": False,
    "downsample_padding": 1,
    "mid_block_scale_factor": 1,
    "act_fn": "silu",
}
_OFFICIAL_IGNORED_KEYS = {"sample_size"}


class CheckpointError(ValueError):
    """A checkpoint folder is missing, incomplete or does not fit the model."""


# -- reading folders ------------------------------------------------------------------------


def read_config(folder: Path) -> dict[str, Any]:
    path = folder / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{folder}: no config.json (expected a diffusers-layout model folder)")
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: not readable JSON ({err})") from err
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(config).__name__}")
    return config


def read_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    """The weights of a diffusers-layout folder (.safetensors preferred over .bin)."""
    for name in WEIGHT_FILES:
        path = folder / name
        if path.is_file():
            try:
                if name.endswith(".safetensors"):
                    from safetensors.torch import load_file

                    return load_file(str(path))
                return torch.load(path, map_location="cpu", weights_only=True)
            except Exception as err:  # corrupt file: say which one
                raise CheckpointError(f"{path}: cannot read weights ({type(err).__name__}: {err})") from err
    raise CheckpointError(f"{folder}: no weights file (expected one of {', '.join(WEIGHT_FILES)})")


def _as_folder(path: str | Path, what: str) -> Path:
    folder = Path(path).expanduser()
    if not folder.exists():
        raise CheckpointError(f"{what} folder does not exist: {folder}")
    if not folder.is_dir():
        raise CheckpointError(f"{what} path is not a folder: {folder}")
    return folder


def _check_keys(model: nn.Module, state_dict: dict[str, torch.Tensor], source: Path) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state_dict) if expected[k].shape != state_dict[k].shape)
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
    if wrong:
        k = wrong[0]
        problems.append(
            f"{len(wrong)} with wrong shape (e.g. {k}: checkpoint {tuple(state_dict[k].shape)}, "
            f"model {tuple(expected[k].shape)})"
        )
    if problems:
        raise CheckpointError(f"{source}: weights do not fit the config: " + "; ".join(problems))


# -- the released M3DDM checkpoint ---------------------------------------------------------


def official_config_to_kwargs(config: dict[str, Any], source: Path | str = "config.json") -> dict[str, Any]:
    """The released config.json -> :class:`M3DDMUNet` keyword arguments."""
    known = set(inspect.signature(M3DDMUNet.__init__).parameters) - {"self"}
    kwargs: dict[str, Any] = {}
    for key, value in config.items():
        if key.startswith("_") or key in _OFFICIAL_IGNORED_KEYS:
            continue
        if key in _OFFICIAL_FIXED_KEYS:
            if value != _OFFICIAL_FIXED_KEYS[key]:
                raise CheckpointError(
                    f"{source}: {key}={value!r} is not supported (only {_OFFICIAL_FIXED_KEYS[key]!r})"
                )
            continue
        if key not in known:
            raise CheckpointError(f"{source}: unknown config key {key!r}")
        kwargs[key] = value
    return kwargs


def load_official_unet(
    path: str | Path,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> M3DDMUNet:
    """Load a folder laid out like the released checkpoint (config.json + weights).

    Every tensor of the file must land in the model: a missing, unexpected or misshaped
    one raises :class:`CheckpointError`. The model comes back in eval mode (the global
    encoder's BatchNorm then uses its stored statistics, as the released pipeline does).
    """
    folder = _as_folder(path, "M3DDM checkpoint")
    kwargs = official_config_to_kwargs(read_config(folder), folder / "config.json")
    try:
        with torch.device("meta"):
            model = M3DDMUNet(**kwargs)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{folder / 'config.json'}: invalid config ({err})") from err
    state_dict = read_state_dict(folder)
    _check_keys(model, state_dict, folder)
    state_dict = {k: v.to(device=device, dtype=dtype if v.is_floating_point() else v.dtype) for k, v in state_dict.items()}
    model.load_state_dict(state_dict, strict=True, assign=True)
    return model.eval()


# -- inflating Stable Diffusion 1.x ---------------------------------------------------------

_SD_DOWN = {"CrossAttnDownBlock2D": "CrossAttnDownBlock3D", "DownBlock2D": "DownBlockP3D"}
_SD_UP = {"CrossAttnUpBlock2D": "CrossAttnUpBlock3D", "UpBlock2D": "UpBlockP3D"}


def _sd_unet_kwargs(sd: dict[str, Any], source: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    def need(key: str) -> Any:
        if key not in sd:
            raise CheckpointError(f"{source}: missing key {key!r}")
        return sd[key]

    heads = sd.get("num_attention_heads") or need("attention_head_dim")
    if not isinstance(heads, int):
        raise CheckpointError(
            f"{source}: per-block attention heads {heads!r} are not supported (Stable Diffusion 1.x has one int)"
        )
    try:
        down = [_SD_DOWN[t] for t in need("down_block_types")]
        up = [_SD_UP[t] for t in need("up_block_types")]
    except KeyError as err:
        raise CheckpointError(f"{source}: block type {err.args[0]!r} has no 3D counterpart") from err
    if sd.get("mid_block_type", "UNetMidBlock2DCrossAttn") != "UNetMidBlock2DCrossAttn":
        raise CheckpointError(f"{source}: mid block {sd['mid_block_type']!r} is not supported")
    latent = need("in_channels")
    kwargs = dict(
        in_channels=2 * latent + 1,
        out_channels=need("out_channels"),
        down_block_types=down,
        up_block_types=up,
        block_out_channels=list(need("block_out_channels")),
        layers_per_block=need("layers_per_block"),
        attention_head_dim=heads,
        norm_num_groups=sd.get("norm_num_groups", 32),
        norm_eps=sd.get("norm_eps", 1e-5),
        flip_sin_to_cos=sd.get("flip_sin_to_cos", True),
        freq_shift=sd.get("freq_shift", 0),
        global_latent_channels=latent,
        # Stable Diffusion's timestep sinusoid; keeps the inflated model equal to its parent.
        time_embedding_max_period=10000,
    )
    kwargs.update(overrides)
    return kwargs


def _spatial_to_3d(weight: torch.Tensor) -> torch.Tensor:
    """(O, I, kh, kw) or a linear (O, I) projection -> a (O, I, 1, kh, kw) Conv3d kernel."""
    if weight.ndim == 2:
        weight = weight[:, :, None, None]
    return weight[:, :, None]


def _linear_as_1x1(weight: torch.Tensor) -> torch.Tensor:
    return weight[:, :, None, None] if weight.ndim == 2 else weight


def _sd_key_to_ours(key: str) -> tuple[str, Callable[[torch.Tensor], torch.Tensor] | None]:
    """Name (and reshape) of a Stable Diffusion UNet tensor in M3DDMUNet."""
    parts = key.split(".")
    if key.startswith("conv_out."):
        return "conv_out.spatial_conv." + parts[-1], None
    if ".resnets." in key and parts[-2] in ("conv1", "conv2"):
        return ".".join(parts[:-1] + ["spatial_conv", parts[-1]]), None
    if ".resnets." in key and parts[-2] == "conv_shortcut" and parts[-1] == "weight":
        return key, lambda w: w[:, :, None, None, None] if w.ndim == 2 else w[:, :, None]
    if (".downsamplers." in key or ".upsamplers." in key) and parts[-1] == "weight":
        return key, _spatial_to_3d
    if ".attentions." in key and parts[-2] in ("proj_in", "proj_out") and parts[-1] == "weight":
        return key, _linear_as_1x1
    return key, None


_TEMPORAL_TRANSFORMER = re.compile(
    r"\.attentions\.\d+\.(proj_in2|proj_out2|norm2|temporal_position_embed_proj|transformer_blocks2)\."
)


def _fresh_key(key: str) -> bool:
    """Tensors of M3DDMUNet that Stable Diffusion has no counterpart for."""
    return (
        key.startswith(("fps_embedding.", "global_img_encoder."))
        or ".fps_emb_proj." in key
        or ".temporal_conv." in key
        or key.endswith(("attn2.to_k.weight", "attn2.to_v.weight"))
        or _TEMPORAL_TRANSFORMER.search(key) is not None
    )


def inflate_from_stable_diffusion(
    path: str | Path,
    *,
    dtype: torch.dtype = torch.float32,
    **overrides: Any,
) -> M3DDMUNet:
    """Build an M3DDMUNet from a local Stable Diffusion 1.x folder (diffusers layout).

    Every spatial weight of ``<path>/unet`` is copied. conv_in's extra inputs (masked-video
    latent and mask) start at zero; temporal convs start as identity and each temporal
    transformer's output projection at zero, so the inflated model computes, frame by
    frame, what the 2D UNet computes (exactly with ``norm_across_frames=False``; the
    released architecture's default normalises resnets over all frames of the clip).
    Cross-attention key/value projections (they read the global-frame tokens, not CLIP
    text), the global encoder and the fps embedding start fresh, fps projections at zero.
    ``overrides`` are M3DDMUNet config fields (e.g. ``norm_across_frames=False``).
    """
    root = _as_folder(path, "Stable Diffusion")
    unet_dir = root / "unet"
    if not unet_dir.is_dir():
        raise CheckpointError(f"{root}: no unet/ subfolder (expected a diffusers Stable Diffusion folder)")
    sd_config = read_config(unet_dir)
    if sd_config.get("_class_name", "UNet2DConditionModel") != "UNet2DConditionModel":
        raise CheckpointError(f"{unet_dir / 'config.json'}: expected a UNet2DConditionModel, got {sd_config['_class_name']}")
    kwargs = _sd_unet_kwargs(sd_config, unet_dir / "config.json", overrides)
    sd_state = read_state_dict(unet_dir)

    model = M3DDMUNet(**kwargs)
    ours = model.state_dict()
    new_state = dict(ours)
    copied: set[str] = set()
    latent = sd_config["in_channels"]
    for key, value in sd_state.items():
        if key == "conv_in.weight":
            weight = torch.zeros_like(ours[key])
            weight[:, :latent, 0] = value
            new_state[key] = weight
            copied.add(key)
            continue
        name, reshape = _sd_key_to_ours(key)
        if name.endswith(("attn2.to_k.weight", "attn2.to_v.weight")):
            continue  # text-conditioned projections; ours read global-frame tokens
        if name not in ours:
            raise CheckpointError(f"{unet_dir}: tensor {key!r} has no place in the 3D model")
        value = reshape(value) if reshape else value
        if value.shape != ours[name].shape:
            raise CheckpointError(
                f"{unet_dir}: {key} has shape {tuple(value.shape)}, the 3D model expects {tuple(ours[name].shape)}"
            )
        new_state[name] = value.to(ours[name].dtype)
        copied.add(name)

    unexplained = [k for k in ours if k not in copied and not _fresh_key(k)]
    if unexplained:
        raise CheckpointError(
            f"{unet_dir}: {len(unexplained)} spatial tensors missing from the checkpoint (e.g. {', '.join(unexplained[:3])})"
        )
    model.load_state_dict(new_state)

    for name, module in model.named_modules():
        if name.endswith("fps_emb_proj"):
            nn.init.zeros_(module.weight)
            nn.init.zeros_(module.bias)
        elif name.endswith("proj_out2"):
            nn.init.zeros_(module.weight)
            nn.init.zeros_(module.bias)
        elif name.endswith("temporal_conv"):
            nn.init.dirac_(module.weight)
            nn.init.zeros_(module.bias)
    return model if dtype == torch.float32 else model.to(dtype)
