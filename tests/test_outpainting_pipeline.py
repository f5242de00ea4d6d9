"""OutpaintingPipeline from Python: from_pretrained (export folder, .ckpt, Hub cache), calls on
frames in memory and files, `export`, `predict --ckpt_path`, and the README's example."""

import json
import os
import re
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from lightning_m3ddm import OutpaintingPipeline
from lightning_m3ddm.autoencoders import PixelUnshuffleAutoencoder
from lightning_m3ddm.checkpoints import CheckpointError
from lightning_m3ddm.cli import main
from lightning_m3ddm.video.samples import write_sample_video
from lightning_m3ddm.weights import load_pretrained_unet, trained_defaults

from test_predict_weights import SMALL, _one_thread  # noqa: F401  (the tiny UNet; one thread per test)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A training checkpoint with EMA weights that differ from the trained ones."""
    import lightning as L

    from lightning_m3ddm.lit_module import M3DDMLitModule

    folder = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    module = M3DDMLitModule(
        unet=SMALL, autoencoder=PixelUnshuffleAutoencoder(4), ema_decay=0.9,
        noise_schedule={"prediction_type": "v_prediction", "rescale_betas_zero_snr": True},
    )
    with torch.no_grad():
        for p in module.ema_unet.parameters():
            p.add_(0.01)
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, max_steps=0)
    trainer.strategy.connect(module)
    trainer.save_checkpoint(folder / "run.ckpt")
    return folder / "run.ckpt", module


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k].float(), sb[k].float()) for k in sa)


def test_export_then_from_pretrained_gives_the_ema_unet(run, tmp_path, capsys):
    ckpt, module = run
    main(["export", "--ckpt_path", str(ckpt), "--output_dir", str(tmp_path / "model")])
    assert "wrote" in capsys.readouterr().out
    assert (tmp_path / "model" / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    # readable by the other users of a shared machine, as any new file (not private temp files)
    umask = os.umask(0)
    os.umask(umask)
    for path in [tmp_path / "model", *(tmp_path / "model").rglob("*")]:
        assert path.stat().st_mode & 0o777 == (0o777 if path.is_dir() else 0o666) & ~umask, path
    pipe = OutpaintingPipeline.from_pretrained(tmp_path / "model")
    assert _same_weights(pipe.unet, module.ema_unet) and not _same_weights(pipe.unet, module.unet)
    # the autoencoder and the noise schedule travel with the weights
    assert isinstance(pipe.autoencoder, PixelUnshuffleAutoencoder) and pipe.autoencoder.latent_channels == 48
    assert pipe.sampling.prediction_type == "v_prediction" and pipe.sampling.rescale_betas_zero_snr is True
    card = (tmp_path / "model" / "README.md").read_text()
    assert "after 0 training steps" in card and "ema_decay: 0.9" in card
    assert json.loads((tmp_path / "model" / "pipeline.json").read_text())["card"]["weights"] == "ema"
    # the .ckpt itself loads the same way, and the folder can start a training run
    assert _same_weights(OutpaintingPipeline.from_pretrained(ckpt).unet, module.ema_unet)
    assert _same_weights(load_pretrained_unet(tmp_path / "model"), module.ema_unet)
    # a non-empty folder is never overwritten
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "--ckpt_path", str(ckpt), "--output_dir", str(tmp_path / "model")])
    assert exit_info.value.code == 2 and "not an empty folder" in capsys.readouterr().err


def test_hub_id_resolves_through_the_local_cache_only(run, tmp_path):
    ckpt, module = run
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--someone--tiny-m3ddm"
    main(["export", "--ckpt_path", str(ckpt), "--output_dir", str(repo / "snapshots" / commit)])
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    pipe = OutpaintingPipeline.from_pretrained("someone/tiny-m3ddm", cache_dir=tmp_path / "hub")
    assert _same_weights(pipe.unet, module.ema_unet)
    with pytest.raises(CheckpointError, match="allow_download=True"):
        OutpaintingPipeline.from_pretrained("someone/not-cached", cache_dir=tmp_path / "hub")


def test_released_layout_needs_an_autoencoder():
    with pytest.raises(CheckpointError, match="autoencoder="):
        OutpaintingPipeline.from_pretrained(ROOT / "tests" / "data" / "official_golden_tiny")


def test_call_on_frames_in_memory_and_on_a_file(run, tmp_path):
    ckpt, _ = run
    pipe = OutpaintingPipeline.from_pretrained(ckpt, canvas_size=64, progress=False)
    frames = np.random.default_rng(0).integers(0, 256, (5, 48, 64, 3), dtype=np.uint8)
    result = pipe(torch.from_numpy(frames), fps=24, target_ratio="9:16", num_inference_steps=1, seed=3)
    f, h, w, _ = result.frames.shape
    assert f == 5 and w == 64 and abs(w / h - 9 / 16) < 0.02 and result.fps == 24
    top = result.padding.top
    assert np.array_equal(result.frames[:, top : top + 48], frames)  # native mode keeps the source pixels
    assert set(result.timings) == {"outpaint", "decode", "total"}
    again = pipe(frames, fps=24, padding=(0, 0, top, result.padding.bottom), num_inference_steps=1, seed=3)
    assert np.array_equal(again.frames, result.frames)  # the same border, the same seed: the same video
    clip = write_sample_video(tmp_path / "clip.mp4", 5)
    written = pipe(clip, target_ratio="9:16", num_inference_steps=1, output_path=tmp_path / "out.mp4")
    assert written.frames is None and written.path == tmp_path / "out.mp4"
    with av.open(str(written.path)) as container:
        stream = container.streams.video[0]
        assert stream.frames == 5 and abs(stream.width / stream.height - 9 / 16) < 0.02
    with pytest.raises(ValueError, match="exactly one"):
        pipe(frames, fps=24)


def test_predict_with_a_training_checkpoint(run, tmp_path):
    ckpt, _ = run
    clip = write_sample_video(tmp_path / "clip.mp4", 5)
    main([
        "predict", "--ckpt_path", str(ckpt), "--input", str(clip), "--target_ratio", "9:16",
        "--output_dir", str(tmp_path / "out"), "--trainer.accelerator=cpu", "--trainer.logger=false",
        "--model.init_args.canvas_size=64", "--model.init_args.sampling.num_inference_steps=1",
        "--model.init_args.progress=false",
    ])
    with av.open(str(tmp_path / "out" / "clip_9-16.mp4")) as container:
        assert container.streams.video[0].frames == 5


def test_trained_defaults_follow_the_training_clips():
    data = {"num_frames": 8, "resolution": 64, "num_global_frames": 4}
    zero_snr = {"noise_schedule": {"rescale_betas_zero_snr": True}}
    assert trained_defaults(zero_snr, data) == {
        "schedule": {"window": 8, "strides": [7, 1]}, "canvas_size": 64, "global_frames": {"count": 4},
        "sampling": {"scheduler": "ddim"},
    }
    assert trained_defaults({}, {"resolution": [48, 64]}) == {"canvas_size": [64, 48]}
    assert trained_defaults({}, None) == {}


def test_readme_python_example_runs(tmp_path, monkeypatch):
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Outpainting from Python", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert len(code.strip().splitlines()) <= 6
    monkeypatch.chdir(ROOT)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    frames = namespace["result"].frames
    assert frames.dtype == np.uint8 and frames.ndim == 4 and abs(frames.shape[2] / frames.shape[1] - 9 / 16) < 0.02


def test_from_config_reads_a_predict_config():
    pipe = OutpaintingPipeline.from_config(ROOT / "configs" / "predict_tiny.yaml")
    assert list(pipe.unet.config.block_out_channels) == [32] * 4  # the config's fresh weights
    assert pipe.autoencoder.downscale == 8 and pipe.canvas_size == (64, 64)
    assert pipe.sampling.num_inference_steps == 2 and pipe.schedule.strides == (15, 5, 1)
    again = OutpaintingPipeline.from_config(ROOT / "configs" / "predict_tiny.yaml")
    assert _same_weights(pipe.unet, again.unet)  # drawn from init_seed
