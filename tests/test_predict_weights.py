"""Where predict's weights come from: the released folder + an SD VAE, a folder of this framework, a config."""

from pathlib import Path

import av
import pytest
import torch
from diffusers import AutoencoderKL

from lightning_m3ddm.autoencoders import PixelUnshuffleAutoencoder, StableDiffusionVAE
from lightning_m3ddm.checkpoints import CheckpointError
from lightning_m3ddm.geometry import parse_ratio
from lightning_m3ddm.weights import UNetInit
from lightning_m3ddm.weights import build_unet as build_any_unet
from lightning_m3ddm.models.unet_3d import M3DDMUNet
from lightning_m3ddm.predict.datamodule import VideoJob
from lightning_m3ddm.predict.pipeline import SamplingConfig
from lightning_m3ddm.coarse_to_fine import ScheduleConfig
from lightning_m3ddm.predict.pipeline import GlobalFramesConfig
from lightning_m3ddm.predict.predictor import M3DDMPredictor, weight_defaults
from lightning_m3ddm.video.samples import write_sample_video
from lightning_m3ddm.predict.writer import OutpaintingWriter

def build_unet(weights, config, channels, seed=0):
    return build_any_unet(weights, config, channels, init_seed=seed, for_sampling=True)


GOLDEN = Path(__file__).parent / "data" / "official_golden_tiny"  # the released UNet's layout, small
SMALL = dict(block_out_channels=(8, 8, 8, 8), layers_per_block=1, norm_num_groups=8, attention_head_dim=2,
             cross_attention_dim=8, temporal_position_embed_dim=8)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def sd_folder(tmp_path):
    """A Stable Diffusion folder whose vae/ is a tiny AutoencoderKL (4 latent channels, 8x downscale)."""
    vae = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 8, 8),
        layers_per_block=1,
        norm_num_groups=8,
        latent_channels=4,
    )
    vae.save_pretrained(tmp_path / "sd" / "vae")
    return tmp_path / "sd"


def test_released_unet_with_the_vae_of_a_stable_diffusion_folder(tmp_path, sd_folder):
    video = write_sample_video(tmp_path / "clip.mp4", 6)
    model = M3DDMPredictor(
        weights=UNetInit(source="official", path=str(GOLDEN)),
        autoencoder=StableDiffusionVAE(sd_folder),
        sampling=SamplingConfig(num_inference_steps=2),
        canvas_size=64,
        progress=False,
    )
    assert list(model.unet.config.block_out_channels) == [16] * 4  # the released layout, loaded
    # the released script's settings, as nothing else was asked for
    assert model.pipeline.sampling.scheduler == "pndm" and model.pipeline.sampling.start_mode == "released"
    assert model.pipeline.global_frames.mode == "resize" and model.pipeline.schedule.compat == "released"
    prediction = model.outpaint_job(VideoJob(str(video), "clip", (parse_ratio("1:1"),)))
    assert prediction.ok, prediction.error
    writer = OutpaintingWriter(output_dir=str(tmp_path / "out"))
    (path,) = writer.write(prediction)
    with av.open(str(path)) as c:
        assert c.streams.video[0].frames == 6 and (c.streams.video[0].width, c.streams.video[0].height) == (64, 64)
    assert writer.failures == []


def test_folder_of_this_framework_and_config_weights(tmp_path):
    channels = PixelUnshuffleAutoencoder(4).latent_channels
    fields = dict(in_channels=2 * channels + 1, out_channels=channels, global_latent_channels=channels, **SMALL)
    saved = M3DDMUNet(**fields)
    saved.save_pretrained(tmp_path / "unet")
    loaded = build_unet(UNetInit(source="pretrained", path=str(tmp_path / "unet")), None, channels)
    for (name, a), b in zip(saved.state_dict().items(), loaded.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    # fresh weights are drawn from init_seed: every rank builds the same model
    one, two, other = (build_unet(UNetInit(source="config"), SMALL, channels, seed) for seed in (3, 3, 4))
    w = "conv_in.weight"
    assert torch.equal(one.state_dict()[w], two.state_dict()[w])
    assert not torch.equal(one.state_dict()[w], other.state_dict()[w])


def test_framework_checkpoint_brings_its_autoencoder_and_noise_schedule(tmp_path):
    import lightning as L

    from lightning_m3ddm.autoencoders import PatchDCTAutoencoder
    from lightning_m3ddm.lit_module import M3DDMLitModule
    from lightning_m3ddm.predict.pipeline import scheduler_for

    ae = PatchDCTAutoencoder(factor=4, luma_coefficients=3, chroma_coefficients=1)
    module = M3DDMLitModule(
        unet=SMALL, autoencoder=ae, noise_schedule={"prediction_type": "v_prediction", "rescale_betas_zero_snr": True}
    )
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, max_steps=0)
    trainer.strategy.connect(module)
    trainer.save_checkpoint(tmp_path / "run.ckpt")
    weights = UNetInit(source="pretrained", path=str(tmp_path / "run.ckpt"))

    predictor = M3DDMPredictor(weights=weights, sampling=SamplingConfig(scheduler="ddim"))
    assert isinstance(predictor.autoencoder, PatchDCTAutoencoder)
    assert predictor.autoencoder.init_args() == ae.init_args()
    assert predictor.pipeline.sampling.prediction_type == "v_prediction"
    assert predictor.pipeline.sampling.rescale_betas_zero_snr is True
    scheduler = scheduler_for(predictor.pipeline.sampling)
    assert scheduler.config.prediction_type == "v_prediction" and scheduler.config.rescale_betas_zero_snr
    assert scheduler.config.timestep_spacing == "trailing"
    # given explicitly, the setting wins over the checkpoint's
    forced = M3DDMPredictor(
        weights=weights, sampling=SamplingConfig(prediction_type="epsilon", rescale_betas_zero_snr=False)
    )
    assert forced.pipeline.sampling.prediction_type == "epsilon"
    assert not scheduler_for(forced.pipeline.sampling).config.get("rescale_betas_zero_snr", False)


def test_unusable_weights_say_what_is_wrong(tmp_path):
    with pytest.raises(CheckpointError, match="StableDiffusionVAE"):  # 4-channel UNet, 48-channel stand-in
        build_unet(UNetInit(source="official", path=str(GOLDEN)), None, 48)
    with pytest.raises(CheckpointError, match="does not exist"):
        build_unet(UNetInit(source="official", path=str(tmp_path / "nowhere")), None, 4)
    with pytest.raises(CheckpointError, match="needs weights.path"):
        build_unet(UNetInit(source="pretrained"), None, 4)


@pytest.mark.parametrize(
    "source, expected",
    [("official", ("pndm", "released", "resize")), ("pretrained", ("ddpm", "framework", "masked")), ("config", ("ddpm", "framework", "masked"))],
)
def test_unset_settings_follow_the_weights(source, expected):
    """Released weights: the released script's settings; this framework's: what it trains with."""
    sampling, schedule, glob = weight_defaults(source, SamplingConfig(), ScheduleConfig(), GlobalFramesConfig())
    assert (sampling.scheduler, schedule.compat, glob.mode) == expected
    given = weight_defaults(
        source, SamplingConfig(scheduler="ddim"), ScheduleConfig(compat="framework"), GlobalFramesConfig(mode="masked")
    )
    assert (given[0].scheduler, given[1].compat, given[2].mode) == ("ddim", "framework", "masked")  # explicit wins


def test_released_start_with_one_step_is_a_clear_error():
    with pytest.raises(ValueError, match="use num_inference_steps >= 2 or start: full"):
        SamplingConfig(scheduler="pndm", num_inference_steps=1)


def test_from_pretrained_takes_the_released_layout_with_a_stable_diffusion_vae(sd_folder):
    from lightning_m3ddm import OutpaintingPipeline

    pipe = OutpaintingPipeline.from_pretrained(GOLDEN, autoencoder=StableDiffusionVAE(sd_folder), canvas_size=64)
    assert list(pipe.unet.config.block_out_channels) == [16] * 4 and pipe.autoencoder.latent_channels == 4
    assert pipe.sampling.prediction_type is None and pipe.schedule.window == 16  # the paper's, nothing recorded
    # the released weights sample as the released script runs them
    assert (pipe.sampling.scheduler, pipe.schedule.compat, pipe.global_frames.mode) == ("pndm", "released", "resize")
