"""Every way to get an M3DDM UNet, and what a trained model says about how to sample it.

Sources of a UNet (:class:`UNetInit`):

* ``config``: fresh weights from config fields (seeded for inference, so every rank
  builds the same model);
* ``stable_diffusion``: a Stable Diffusion 1.x folder inflated to 3D (training only: its
  temporal layers are untrained);
* ``official``: the released M3DDM folder (``config.json`` + weights);
* ``pretrained``: a folder of this framework (an :func:`export_checkpoint` folder, or a
  bare ``save_pretrained`` UNet folder) or a framework ``.ckpt`` (its EMA weights when kept).

A *trained model* (:class:`TrainedModel`) is a UNet with the autoencoder, the noise
schedule and the sampling defaults it was trained for; :func:`read_trained_model` reads
one from an export folder, a ``.ckpt`` or the released layout, and
:func:`export_checkpoint` writes a ``.ckpt`` as an export folder (the ``export``
subcommand). Nothing here imports the training module, so inference never does.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import yaml

from lightning_m3ddm.autoencoders import Autoencoder, from_spec
from lightning_m3ddm.checkpoints import CheckpointError, inflate_from_stable_diffusion, load_official_unet, read_config
from lightning_m3ddm.models.unet_3d import M3DDMUNet
from lightning_m3ddm.sampling import NoiseSchedule

# What an export folder holds besides the UNet: autoencoder, noise schedule, sampling defaults.
PIPELINE_FILE = "pipeline.json"
UNET_FOLDER = "unet"
MODEL_CARD = "README.md"


@dataclass
class UNetInit:
    """Where the UNet's weights come from.

    - ``config``: fresh weights from ``unet`` config fields;
    - ``stable_diffusion``: a local Stable Diffusion 1.x folder, inflated to 3D;
    - ``official``: the released M3DDM checkpoint folder;
    - ``pretrained``: a ``save_pretrained`` / export folder of this framework, or a
      Lightning ``.ckpt`` of a previous run (its EMA weights when it has them), e.g. the
      WebVid run that the e-commerce fine-tuning starts from.
    """

    source: Literal["config", "stable_diffusion", "official", "pretrained"] = "config"
    path: str | None = None


def build_unet(
    init: UNetInit,
    config: dict[str, Any] | None,
    latent_channels: int,
    *,
    init_seed: int | None = None,
    for_sampling: bool = False,
    field_name: str = "weights",
) -> M3DDMUNet:
    """The UNet of ``init``, checked against the autoencoder's latent channels.

    Args:
        init: the source of the weights.
        config: M3DDMUNet fields (``config``: the architecture; ``stable_diffusion``: overrides).
        latent_channels: the autoencoder's; the UNet takes ``2c + 1`` and returns ``c``.
        init_seed: seed of fresh weights (None: the global random state, as in training).
        for_sampling: refuse sources that cannot outpaint (an inflated Stable Diffusion).
        field_name: the config field named in error messages (``weights`` / ``init``).

    Raises:
        CheckpointError: a missing path, an unusable source, or channels that do not fit.
    """
    c = latent_channels
    if init.source == "config":
        fields = dict(in_channels=2 * c + 1, out_channels=c, global_latent_channels=c)
        fields.update(config or {})
        if init_seed is None:
            unet = M3DDMUNet(**fields)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(init_seed)
                unet = M3DDMUNet(**fields)
    elif for_sampling and init.source == "stable_diffusion":
        raise CheckpointError(
            f"{field_name}.source='stable_diffusion' has untrained temporal layers and cannot outpaint; "
            "use 'official' (the released M3DDM folder) or 'pretrained' (a checkpoint of this framework)"
        )
    elif init.path is None:
        raise CheckpointError(f"{field_name}.source={init.source!r} needs {field_name}.path")
    elif init.source == "stable_diffusion":
        unet = inflate_from_stable_diffusion(init.path, **(config or {}))
    elif init.source == "official":
        unet = load_official_unet(init.path)
    elif init.source == "pretrained":
        unet = load_pretrained_unet(init.path)
    else:
        raise CheckpointError(f"unknown {field_name}.source {init.source!r}")
    check_channels(unet, c, released=init.source == "official")
    return unet


def check_channels(unet: M3DDMUNet, latent_channels: int, released: bool = False) -> None:
    """Raise :class:`CheckpointError` unless the UNet fits an autoencoder of ``latent_channels``."""
    c = latent_channels
    if unet.config.out_channels != c or unet.config.in_channels != 2 * c + 1:
        if released:
            fix = "the released weights need model.autoencoder = StableDiffusionVAE(path to a Stable Diffusion folder)"
        else:  # a checkpoint of this framework records its autoencoder; a config's one overrides it
            fix = (
                "leave the autoencoder unset (--model.init_args.autoencoder=null) to use the one the checkpoint "
                "was trained with"
            )
        raise CheckpointError(
            f"the UNet takes {unet.config.in_channels} input / {unet.config.out_channels} output channels, but the "
            f"autoencoder has {c} latent channels (needs {2 * c + 1} / {c}): {fix}"
        )


# -- framework checkpoints ----------------------------------------------------------------


def read_checkpoint(path: str | Path) -> dict:
    """A Lightning ``.ckpt`` as plain data (memory-mapped: reading its hyperparameters loads no tensor)."""
    path = Path(path).expanduser()
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:
        raise CheckpointError(f"{path}: not a readable Lightning checkpoint ({err})") from err


def checkpoint_unet(ckpt: dict, source: Path | str = "checkpoint") -> tuple[M3DDMUNet, bool]:
    """The UNet of a read ``.ckpt``: its EMA weights when kept. Returns (unet, is_ema)."""
    state = ckpt.get("state_dict", {})
    is_ema = any(k.startswith("ema_unet.") for k in state)
    prefix = "ema_unet." if is_ema else "unet."
    unet_state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if not unet_state:
        raise CheckpointError(f"{source}: no UNet weights in this checkpoint")
    config = ckpt.get("m3ddm_unet_config") or ckpt.get("hyper_parameters", {}).get("m3ddm_unet_config")
    if config is None:
        raise CheckpointError(f"{source}: checkpoint lacks the UNet config")
    unet = M3DDMUNet.from_config(config)
    unet.load_state_dict(unet_state, strict=True)
    return unet, is_ema


def load_pretrained_unet(path: str | Path) -> M3DDMUNet:
    """An export folder, a bare ``save_pretrained`` UNet folder, or the (EMA if kept) UNet of a
    ``.ckpt`` file or of a sharded checkpoint folder."""
    from lightning_m3ddm.distributed import is_distributed_checkpoint, read_distributed_checkpoint

    path = Path(path).expanduser()
    if is_distributed_checkpoint(path):
        return checkpoint_unet(read_distributed_checkpoint(path, prefixes=("unet.", "ema_unet.")), path)[0]
    if path.is_dir():
        if (path / PIPELINE_FILE).is_file():
            return read_trained_model(path).unet  # float32, also when exported as float16
        return M3DDMUNet.from_pretrained(path)
    if not path.is_file():
        raise CheckpointError(f"pretrained UNet not found: {path}")
    return checkpoint_unet(read_checkpoint(path), path)[0]


# -- trained models: UNet + autoencoder + schedule + sampling defaults ----------------------


@dataclass
class TrainedModel:
    """A UNet with what it was trained with.

    Attributes:
        unet: the weights to sample with (EMA when the run kept them).
        autoencoder: the frozen autoencoder (None: the caller must give one, e.g. the
            released layout, which does not include its Stable Diffusion VAE).
        noise_schedule: the training schedule and prediction type (None: the paper's).
        defaults: the pipeline settings it was trained for (``sampling``, ``schedule``,
            ``global_frames``, ``canvas_size``), as plain data.
        card: provenance (training steps, config), as stored in the export.
        released: the released M3DDM weights, which sample with the released script's
            settings (see :func:`~lightning_m3ddm.predict.pipeline.weight_defaults`).
    """

    unet: M3DDMUNet
    autoencoder: Autoencoder | None = None
    noise_schedule: NoiseSchedule | None = None
    defaults: dict[str, Any] = field(default_factory=dict)
    card: dict[str, Any] = field(default_factory=dict)
    released: bool = False


def trained_defaults(hparams: dict, data_hparams: dict | None) -> dict[str, Any]:
    """The pipeline settings a run was trained for: its clip length as the window, its
    resolution as the canvas, its global frames, and a zero-terminal-SNR schedule sampled
    with DDIM (trailing timesteps)."""
    defaults: dict[str, Any] = {}
    data = data_hparams or {}
    frames = data.get("num_frames")
    if isinstance(frames, int) and frames >= 2:
        # key frames a window apart, shared by neighbouring windows (released: 16 frames, stride 15)
        defaults["schedule"] = {"window": frames, "strides": [frames - 1, 1]}
    size = data.get("resolution")
    if isinstance(size, int):
        defaults["canvas_size"] = size
    elif isinstance(size, (list, tuple)) and len(size) == 2:
        defaults["canvas_size"] = [int(size[1]), int(size[0])]  # (height, width) -> (width, height)
    if isinstance(data.get("num_global_frames"), int):
        defaults["global_frames"] = {"count": data["num_global_frames"]}
    schedule = hparams.get("noise_schedule") or {}
    if schedule.get("rescale_betas_zero_snr"):
        defaults["sampling"] = {"scheduler": "ddim"}
    return defaults


def read_trained_model(path: str | Path) -> TrainedModel:
    """A trained model from an export folder, a framework ``.ckpt`` or the released layout.

    Raises:
        CheckpointError: naming the path and what is missing.
    """
    path = Path(path).expanduser()
    if path.is_dir() and (path / PIPELINE_FILE).is_file():
        settings = json.loads((path / PIPELINE_FILE).read_text())
        unet = M3DDMUNet.from_pretrained(path / UNET_FOLDER)
        return TrainedModel(
            unet.float(),
            from_spec(settings["autoencoder"]) if settings.get("autoencoder") else None,
            NoiseSchedule(**settings["noise_schedule"]) if settings.get("noise_schedule") else None,
            settings.get("defaults", {}),
            settings.get("card", {}),
        )
    if path.is_dir():
        if (path / "config.json").is_file() and read_config(path).get("_class_name") == M3DDMUNet.__name__:
            return TrainedModel(M3DDMUNet.from_pretrained(path))  # a bare save_pretrained UNet
        return TrainedModel(load_official_unet(path), released=True)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such folder or checkpoint file")
    ckpt = read_checkpoint(path)
    unet, is_ema = checkpoint_unet(ckpt, path)
    hparams = ckpt.get("hyper_parameters", {})
    spec = hparams.get("autoencoder")
    schedule = hparams.get("noise_schedule")
    return TrainedModel(
        unet,
        from_spec(spec) if isinstance(spec, dict) else None,
        NoiseSchedule(**schedule) if isinstance(schedule, dict) else None,
        trained_defaults(hparams, ckpt.get("datamodule_hyper_parameters")),
        _card(ckpt, is_ema),
    )


def _card(ckpt: dict, is_ema: bool) -> dict[str, Any]:
    hparams = {k: v for k, v in ckpt.get("hyper_parameters", {}).items() if k != "_class_path"}
    data = ckpt.get("datamodule_hyper_parameters")
    return {
        "global_step": ckpt.get("global_step"),
        "epoch": ckpt.get("epoch"),
        "weights": "ema" if is_ema else "raw",
        "model": _plain(hparams),
        "data": _plain(dict(data)) if data is not None else None,
    }


def _plain(value):
    """JSON-ready copy (tuples become lists, unknown objects their repr); absolute paths of
    the training machine are cut to their last component, as they mean nothing elsewhere."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, str) and value.startswith("/") and "\n" not in value:
        return f".../{Path(value).name}"
    return json.loads(json.dumps(value, default=repr))


def export_checkpoint(
    ckpt_path: str | Path,
    output_dir: str | Path,
    dtype: Literal["float32", "float16", "bfloat16"] = "float32",
    notes: str | None = None,
) -> Path:
    """Write a framework ``.ckpt`` as a folder that :func:`read_trained_model` reads.

    The folder: ``unet/`` (``save_pretrained``, safetensors; the EMA weights when the run
    kept them), ``pipeline.json`` (autoencoder spec, noise schedule and prediction type, the
    sampling defaults it was trained for, provenance) and ``README.md`` (a model card with
    the training config and steps). Written under a temporary name and renamed into place,
    so a failed export leaves nothing half-written.

    Args:
        dtype: of the stored UNet weights (``float16`` halves the size; loaded back as float32).
        notes: Markdown appended to the model card (e.g. the command and data that made it).
    """
    import shutil
    import tempfile

    ckpt_path, output_dir = Path(ckpt_path).expanduser(), Path(output_dir).expanduser()
    if not ckpt_path.is_file():
        raise CheckpointError(f"{ckpt_path}: no such checkpoint file")
    if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())):
        raise CheckpointError(f"{output_dir}: exists and is not an empty folder")
    dtypes = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    if dtype not in dtypes:
        raise CheckpointError(f"dtype must be one of {sorted(dtypes)}, got {dtype!r}")
    model = read_trained_model(ckpt_path)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", dir=output_dir.parent))
    try:
        # nn.Module.to: diffusers warns on every cast, the stored dtype is the point here
        torch.nn.Module.to(model.unet, dtypes[dtype]).save_pretrained(tmp / UNET_FOLDER, safe_serialization=True)
        settings = {
            "autoencoder": model.autoencoder.spec() if model.autoencoder is not None else None,
            "noise_schedule": asdict(model.noise_schedule) if model.noise_schedule is not None else None,
            "defaults": model.defaults,
            "card": {**model.card, "source": ckpt_path.name, "dtype": dtype},
        }
        (tmp / PIPELINE_FILE).write_text(json.dumps(settings, indent=2) + "\n")
        (tmp / MODEL_CARD).write_text(model_card(settings) + (f"\n{notes.strip()}\n" if notes else ""))
        _share_like_new_files(tmp)
        if output_dir.exists():
            output_dir.rmdir()
        tmp.rename(output_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return output_dir


def _share_like_new_files(folder: Path) -> None:
    """Give ``folder`` and everything in it the modes of ordinary new files (umask applied):
    ``mkdtemp`` and safetensors' atomic save create them private to their owner, which would
    keep an exported model from the other users of a shared machine."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def model_card(settings: dict) -> str:
    """A short README for an export folder: what it is, how to load it, how it was trained."""
    card = settings["card"]
    config = {"model": card.get("model"), "data": card.get("data")}
    return "\n".join(
        [
            "# M3DDM video outpainting model",
            "",
            f"Exported from `{card.get('source')}` after {card.get('global_step')} training steps "
            f"(epoch {card.get('epoch')}); UNet weights: {card.get('weights')}, stored as {card.get('dtype')}.",
            "",
            "```python",
            "from lightning_m3ddm import OutpaintingPipeline",
            "pipe = OutpaintingPipeline.from_pretrained('path/to/this/folder')",
            "result = pipe('video.mp4', target_ratio='9:16')",
            "```",
            "",
            "## Sampling defaults it was trained for",
            "",
            "```json",
            json.dumps(settings.get("defaults", {}), indent=2),
            "```",
            "",
            "## Training configuration",
            "",
            "```yaml",
            yaml.safe_dump(config, sort_keys=False).rstrip(),
            "```",
            "",
        ]
    )
