"""M3DDMLitModule: dual-condition dropout, null values, loss, EMA, non-finite steps."""

import math

import lightning as L
import pytest
import torch

from lightning_m3ddm.autoencoders import PixelUnshuffleAutoencoder
from lightning_m3ddm.conditioning import Condition, black_frame_latent, guide_frames, null_condition
from lightning_m3ddm.data.augmentation import augment
from lightning_m3ddm.lit_module import ConditionDropout, M3DDMLitModule, OptimizerConfig, drop_conditions, lr_multiplier
from lightning_m3ddm.seeding import stable_seed

TINY = dict(block_out_channels=(32, 32, 32, 32), norm_num_groups=8, attention_head_dim=4, layers_per_block=1)


def make_batch(b=2, f=4, g=2, size=32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    video = torch.rand(b, f, 3, size, size, generator=gen) * 2 - 1
    global_frames = torch.rand(b, g, 3, size, size, generator=gen) * 2 - 1
    aug = augment(video, gen, global_frames=global_frames)
    return dict(
        video=video,
        masked_video=aug.masked_video,
        mask=aug.mask,
        global_frames=aug.global_frames,
        fps=torch.randint(1, 31, (b,), generator=gen),
    )


def make_module(**kwargs):
    return M3DDMLitModule(unet=TINY, autoencoder=PixelUnshuffleAutoencoder(4), **kwargs)


def test_unet_channels_follow_the_autoencoder():
    module = make_module()
    assert module.unet.config.in_channels == 2 * 48 + 1 and module.unet.config.out_channels == 48
    with pytest.raises(ValueError, match="latent channels"):
        M3DDMLitModule(unet={**TINY, "in_channels": 9, "out_channels": 4}, autoencoder=PixelUnshuffleAutoencoder(4))


def test_condition_dropout_rates_are_as_configured():
    n, p1, p2 = 20000, 0.1, 0.3
    cond = Condition(torch.randn(n, 2, 2, 1, 1), torch.ones(n, 1, 2, 1, 1))
    g = torch.randn(n, 1, 2, 1, 1)
    _, new_g, drop_c, drop_g = drop_conditions(
        cond, g, torch.zeros(2, 1, 1), ConditionDropout(p1, p2), torch.Generator().manual_seed(0)
    )
    for observed, p in [(drop_c.float().mean(), p1), (drop_g.float().mean(), p2), ((drop_c & drop_g).float().mean(), p1 * p2)]:
        assert abs(observed - p) < 4 * math.sqrt(p * (1 - p) / n)
    assert torch.all(new_g[drop_g] == 0) and torch.equal(new_g[~drop_g], g[~drop_g])


def test_null_context_is_black_latent_with_all_ones_mask_and_keeps_guides():
    ae = PixelUnshuffleAutoencoder(4)
    black = black_frame_latent(ae, 32, 32, torch.device("cpu"))
    assert torch.all(black == -1)  # lossless autoencoder: a black frame stays -1
    masked = torch.randn(1, 48, 3, 8, 8)
    mask = torch.ones(1, 1, 3, 8, 8)
    mask[:, :, 0] = 0  # frame 0 is a guide, given whole
    null = null_condition(Condition(masked, mask), black)
    assert guide_frames(mask).tolist() == [[True, False, False]]
    assert torch.equal(null.masked_latents[:, :, 0], masked[:, :, 0]) and torch.all(null.mask[:, :, 0] == 0)
    assert torch.all(null.masked_latents[:, :, 1:] == -1) and torch.all(null.mask[:, :, 1:] == 1)


def _forward_process_by_hand(module, batch, seed, zero_terminal_snr=False):
    """The draws of ``diffusion_loss(generator=seed)`` and the DDPM forward process written out:
    (clip latents, noise, alpha_bar (B,1,1,1,1), the UNet's prediction)."""
    gen = torch.Generator().manual_seed(seed)
    latents, condition, global_latents, _ = module.encode_batch(batch)
    noise = torch.randn(latents.shape, generator=gen)
    t = torch.randint(0, 1000, (latents.shape[0],), generator=gen)
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    all_abar = torch.cumprod(1 - betas, 0)
    if zero_terminal_snr:  # Lin et al. 2024, Algorithm 1: shift and scale sqrt(alpha_bar) to end at 0
        root = all_abar.sqrt()
        all_abar = ((root - root[-1]) * root[0] / (root[0] - root[-1])) ** 2
    abar = all_abar[t].float().view(-1, 1, 1, 1, 1)
    noisy = abar.sqrt() * latents + (1 - abar).sqrt() * noise
    x = torch.cat([noisy, condition.masked_latents, condition.mask], 1)
    with torch.no_grad():
        pred = module.unet(x, t, fps=batch["fps"], global_latents=global_latents).sample
    return latents, noise, abar, pred


def test_loss_on_a_fixed_batch_matches_an_independent_computation():
    module = make_module().eval()
    batch = make_batch()
    loss = module.diffusion_loss(batch, module.unet, dropout=None, generator=torch.Generator().manual_seed(5))
    again = module.diffusion_loss(batch, module.unet, dropout=None, generator=torch.Generator().manual_seed(5))
    assert torch.equal(loss, again) and torch.isfinite(loss) and loss > 0

    _, noise, _, pred = _forward_process_by_hand(module, batch, 5)
    torch.testing.assert_close(loss, ((pred - noise) ** 2).mean(), rtol=1e-5, atol=1e-6)


def test_v_prediction_loss_targets_velocity():
    module = make_module(noise_schedule={"prediction_type": "v_prediction"}).eval()
    batch = make_batch()
    loss = module.diffusion_loss(batch, module.unet, dropout=None, generator=torch.Generator().manual_seed(5))

    latents, noise, abar, pred = _forward_process_by_hand(module, batch, 5)
    velocity = abar.sqrt() * noise - (1 - abar).sqrt() * latents
    torch.testing.assert_close(loss, ((pred - velocity) ** 2).mean(), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(loss, ((pred - noise) ** 2).mean(), rtol=1e-3)
    assert module.hparams.noise_schedule["prediction_type"] == "v_prediction"


def test_zero_terminal_snr_trains_on_the_rescaled_schedule():
    schedule = {"prediction_type": "v_prediction", "rescale_betas_zero_snr": True}
    module = make_module(noise_schedule=schedule).eval()
    batch = make_batch()
    loss = module.diffusion_loss(batch, module.unet, dropout=None, generator=torch.Generator().manual_seed(5))

    latents, noise, abar, pred = _forward_process_by_hand(module, batch, 5, zero_terminal_snr=True)
    velocity = abar.sqrt() * noise - (1 - abar).sqrt() * latents
    torch.testing.assert_close(loss, ((pred - velocity) ** 2).mean(), rtol=1e-4, atol=1e-5)
    assert float(module.noise_scheduler.alphas_cumprod[-1]) < 1e-6
    assert module.hparams.noise_schedule["rescale_betas_zero_snr"] is True


def test_lr_warms_up_then_stays_constant_by_default():
    assert [lr_multiplier(s, 4) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]


def test_cosine_decay_after_warm_up_reaches_the_floor_at_decay_steps():
    lrs = [lr_multiplier(s, 10, "cosine", 110, 0.1) for s in range(120)]
    assert lrs[:10] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert lrs[59] == pytest.approx(0.1 + 0.9 * 0.5)  # half-way through the decay
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))  # never rises after the warm-up
    assert lrs[109] == pytest.approx(0.1) and lrs[119] == pytest.approx(0.1)


def test_decay_start_holds_the_full_rate_then_decays_over_the_rest():
    lrs = [lr_multiplier(s, 10, "cosine", 110, 0.0, decay_start=60) for s in range(120)]
    assert lrs[:10] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert lrs[9:59] == pytest.approx([1.0] * 50)  # held until the decay starts
    assert lrs[84] == pytest.approx(0.5)  # half-way through steps 60..110
    assert lrs[109] == pytest.approx(0.0) and all(a >= b for a, b in zip(lrs[59:], lrs[60:]))
    with pytest.raises(ValueError, match="decay_start must be >= warmup_steps"):
        lr_multiplier(0, 10, "cosine", 110, decay_start=5)
    with pytest.raises(ValueError, match=r"decay_steps > decay_start \(60\)"):
        lr_multiplier(0, 10, "cosine", 60, decay_start=60)


def test_cosine_decay_follows_the_trainers_max_steps():
    module = make_module(optimizer=OptimizerConfig(warmup_steps=2, decay="cosine"))
    module.trainer = L.Trainer(max_steps=12, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    sched = module.configure_optimizers()["lr_scheduler"]["scheduler"]
    factors = [sched.lr_lambdas[0](s) for s in (0, 1, 11)]
    assert factors == pytest.approx([0.5, 1.0, 0.0])


@pytest.mark.parametrize(
    "kwargs, message",
    [(dict(decay="linear"), "decay must be"), (dict(min_lr_ratio=2.0), "min_lr_ratio")],
)
def test_bad_lr_schedule_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        OptimizerConfig(**kwargs)


def test_cosine_decay_without_a_length_is_refused_before_training():
    with pytest.raises(ValueError, match="decay_steps"):
        lr_multiplier(0, 10, "cosine", 5)
    module = make_module(optimizer=OptimizerConfig(decay="cosine"))
    module.trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    with pytest.raises(ValueError, match="decay_steps or trainer.max_steps"):
        module.configure_optimizers()
    module = make_module(optimizer=OptimizerConfig(warmup_steps=10, decay="cosine", decay_steps=5))
    with pytest.raises(ValueError, match="decay_steps > warmup_steps"):
        module.configure_optimizers()  # raised by LambdaLR's evaluation of step 0


def test_unknown_prediction_type_is_refused():
    with pytest.raises(ValueError, match="prediction_type"):
        make_module(noise_schedule={"prediction_type": "sample"})


def test_ema_update_is_an_exponential_average():
    module = make_module(ema_decay=0.9)
    with torch.no_grad():
        for p in module.unet.parameters():
            p.add_(1.0)
    before = [p.clone() for p in module.ema_unet.parameters()]
    module.update_ema()  # global_step 0: decay warms up to min(0.9, 1/10)
    d = min(0.9, 1 / 10)
    for e, b, p in zip(module.ema_unet.parameters(), before, module.unet.parameters()):
        torch.testing.assert_close(e, d * b + (1 - d) * p)
    assert module.denoiser() is module.ema_unet


def test_frozen_autoencoder_and_ema_stay_in_eval_mode():
    module = make_module(ema_decay=0.9)
    module.train()  # what Lightning calls at the start of fit
    assert module.unet.training and not module.autoencoder.training and not module.ema_unet.training
    assert not any(m.training for m in module.ema_unet.modules())
    module.eval()
    assert not module.unet.training


def test_nonfinite_loss_skips_the_step_and_stops_after_too_many():
    module = make_module(max_nonfinite_steps=3)
    bad = make_batch()
    bad["video"] = torch.full_like(bad["video"], float("nan"))
    assert module.training_step(bad, 0) is None
    assert module.training_step(bad, 1) is None
    assert module.nonfinite_total == 2
    assert module.training_step(make_batch(), 2) is not None and module.nonfinite_in_row == 0
    module.training_step(bad, 3)
    module.training_step(bad, 4)
    with pytest.raises(RuntimeError, match="3 training steps in a row"):
        module.training_step(bad, 5)


class _Batches(torch.utils.data.Dataset):
    def __init__(self, bad):
        self.bad = bad

    def __len__(self):
        return len(self.bad)

    def __getitem__(self, i):
        batch = {k: v[0] for k, v in make_batch(b=1, seed=i).items()}
        if self.bad[i]:
            batch["video"] = torch.full_like(batch["video"], float("inf"))
        return batch


def _fit(module, bad, tmp_path):
    loader = torch.utils.data.DataLoader(_Batches(bad), batch_size=1)
    trainer = L.Trainer(
        max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, default_root_dir=tmp_path,
    )
    trainer.fit(module, loader)


def test_trainer_leaves_weights_untouched_on_nonfinite_loss(tmp_path):
    module = make_module(optimizer=OptimizerConfig(warmup_steps=1))
    before = [p.clone() for p in module.unet.parameters()]
    _fit(module, [True, True], tmp_path)
    assert module.nonfinite_total == 2
    assert all(torch.equal(a, b) for a, b in zip(before, module.unet.parameters()))
    _fit(module, [False], tmp_path)
    assert not all(torch.equal(a, b) for a, b in zip(before, module.unet.parameters()))


class _RecordsDraws(M3DDMLitModule):
    """Records the seed of every training batch's draws with its (step, batch_idx); a cheap
    loss instead of the UNet's keeps the test fast (only the seeds are looked at)."""

    def training_step(self, batch, batch_idx):
        self.draws.append((self.global_step, batch_idx, self.step_generator(batch["video"].device, batch_idx).initial_seed()))
        return self.unet.conv_in.weight.square().sum()


def test_each_micro_batch_of_an_accumulated_step_draws_its_own_noise(tmp_path):
    module = _RecordsDraws(unet=TINY, autoencoder=PixelUnshuffleAutoencoder(4))
    module.draws = []
    clip = {k: v[0] for k, v in make_batch(b=1).items()}
    loader = torch.utils.data.DataLoader([clip] * 4, batch_size=1)
    trainer = L.Trainer(
        max_epochs=1, accumulate_grad_batches=2, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
    )
    trainer.fit(module, loader)
    assert [(step, idx) for step, idx, _ in module.draws] == [(0, 0), (0, 1), (1, 2), (1, 3)]
    assert len({seed for *_, seed in module.draws}) == 4  # before: one seed per step, shared by its micro-batches
    # a function of (seed, step, micro-batch, rank) alone, so a resumed run redraws the same
    assert [seed for *_, seed in module.draws] == [stable_seed(0, s, m, 0) for s in (0, 1) for m in (0, 1)]
