"""Scheduler settings shared by training previews and predict."""

import pytest
import torch

from lightning_m3ddm.sampling import Guidance, NoiseSchedule, denoising_timesteps, make_scheduler


@pytest.mark.parametrize("name", ["ddpm", "ddim", "pndm", "dpm++"])
def test_schedulers_use_stable_diffusions_settings(name):
    s = make_scheduler(name)
    assert s.config.num_train_timesteps == 1000 and s.config.beta_schedule == "scaled_linear"
    assert (s.config.beta_start, s.config.beta_end) == (0.00085, 0.012)
    assert not s.config.get("clip_sample", False)  # latents are not in [-1, 1]
    if name != "dpm++":
        assert s.config.steps_offset == 1


def test_ddpm_step_does_not_clip_large_latents():
    s = make_scheduler("ddpm")
    s.set_timesteps(10)
    x = torch.full((1, 4, 1, 2, 2), 3.0)
    out = s.step(torch.zeros_like(x), s.timesteps[-1], x).prev_sample
    assert out.abs().max() > 1.5  # clipping x0 to [-1, 1] would bound it near 1


def test_unknown_scheduler_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown scheduler 'euler'"):
        make_scheduler("euler")


@pytest.mark.parametrize("name", ["ddpm", "ddim", "pndm", "dpm++"])
def test_trailing_spacing_starts_from_the_last_training_timestep(name):
    leading, trailing = make_scheduler(name), make_scheduler(name, timestep_spacing="trailing")
    leading.set_timesteps(4)
    trailing.set_timesteps(4)
    assert int(trailing.timesteps[0]) == 999  # pure noise is x_T: the first step must be at T
    if name != "dpm++":  # Stable Diffusion's leading spacing starts well below T with few steps
        assert int(leading.timesteps[0]) < 900


def test_unknown_timestep_spacing_is_a_clear_error():
    with pytest.raises(ValueError, match="timestep_spacing must be one of"):
        make_scheduler("ddim", timestep_spacing="backwards")


ZERO_SNR = NoiseSchedule(prediction_type="v_prediction", rescale_betas_zero_snr=True)


@pytest.mark.parametrize("name", ["ddpm", "ddim", "dpm++"])
def test_zero_terminal_snr_leaves_no_signal_at_t_and_samples_from_t(name):
    plain, rescaled = make_scheduler(name, NoiseSchedule(prediction_type="v_prediction")), make_scheduler(name, ZERO_SNR)
    assert float(plain.alphas_cumprod[-1]) > 1e-3  # Stable Diffusion's schedule keeps some signal at T
    assert float(rescaled.alphas_cumprod[-1]) < 1e-6
    rescaled.set_timesteps(4)
    assert int(rescaled.timesteps[0]) == 999  # trailing by default: sampling starts at T
    explicit = make_scheduler(name, ZERO_SNR, timestep_spacing="leading")
    assert explicit.config.timestep_spacing == "leading"  # an explicit spacing still wins
    # the training loss reads the same rescaled schedule: x_T is pure noise
    x0, noise = torch.randn(1, 4, 1, 2, 2), torch.randn(1, 4, 1, 2, 2)
    if name == "ddpm":
        assert torch.allclose(rescaled.add_noise(x0, noise, torch.tensor([999])), noise, atol=1e-3)


def test_zero_terminal_snr_needs_v_prediction_and_a_supporting_scheduler():
    with pytest.raises(ValueError, match="needs prediction_type 'v_prediction'"):
        NoiseSchedule(rescale_betas_zero_snr=True)
    with pytest.raises(ValueError, match="'pndm' does not support rescale_betas_zero_snr"):
        make_scheduler("pndm", ZERO_SNR)


def test_guidance_branch_selection():
    assert Guidance(2, 4).branches() == ("00", "10", "11")
    assert Guidance(1, 4).branches() == ("10", "11")
    assert Guidance(1, 1).branches() == ("11",)
    e = {k: torch.randn(3) for k in ("00", "10", "11")}
    torch.testing.assert_close(Guidance(1, 4).combine({"10": e["10"], "11": e["11"]}), e["10"] + 4 * (e["11"] - e["10"]))
    # s2 = 0: the global frames are not read at all
    assert Guidance(2, 0).branches() == ("00", "10") and Guidance(1, 0).branches() == ("10",)
    torch.testing.assert_close(Guidance(2, 0).combine({"00": e["00"], "10": e["10"]}), e["00"] + 2 * (e["10"] - e["00"]))


def test_null_global_guidance_never_reads_the_global_tokens():
    """Found by the ablations (benchmarks/ablations.py): a model trained without global frames
    (p2 = 1) sampled with s2 = 0 gave NaN, because eq. 4 still ran its ε(c1, c2) branch on real
    global frames its encoder had never seen (non-finite) and multiplied it by 0."""
    from lightning_m3ddm.conditioning import Condition
    from lightning_m3ddm.sampling import guided_noise

    calls = []

    def unet(x, t, fps, global_tokens):
        calls.append(global_tokens)
        return type("Out", (), {"sample": x[:, :4] * 0 + global_tokens.mean()})()

    latents = torch.randn(2, 4, 3, 4, 4)
    condition = Condition(torch.randn(2, 4, 3, 4, 4), torch.ones(2, 1, 3, 4, 4))
    tokens, null_tokens = torch.full((2, 5, 8), float("inf")), torch.zeros(2, 5, 8)
    for guidance in (Guidance(2, 0), Guidance(1, 0)):
        eps = guided_noise(unet, latents, torch.tensor(999), condition, condition, tokens, null_tokens, torch.tensor([8, 8]), guidance)
        assert torch.isfinite(eps).all() and torch.equal(calls[-1], torch.zeros_like(calls[-1]))


def test_released_start_of_pndm_is_t961_then_timesteps_after_the_first():
    """The released script: 50 PNDM steps, start noised to t = 961, 50 UNet calls over timesteps[1:]."""
    s = make_scheduler("pndm")
    s.set_timesteps(50)
    noise_at, steps = denoising_timesteps(s.timesteps, 50, "released")
    assert int(noise_at) == 961
    assert [int(t) for t in steps[:3]] == [961, 961, 941] and int(steps[-1]) == 1 and len(steps) == 50
    full_at, full_steps = denoising_timesteps(s.timesteps, 50, "full")
    assert int(full_at) == 981 and len(full_steps) == 51


def test_released_start_of_ddpm_noises_to_the_first_timestep_and_skips_it():
    s = make_scheduler("ddpm")
    s.set_timesteps(4)
    noise_at, steps = denoising_timesteps(s.timesteps, 4, "released")
    assert int(noise_at) == 751 and [int(t) for t in steps] == [501, 251, 1]


def test_start_mode_errors_are_clear():
    with pytest.raises(ValueError, match="start must be one of"):
        denoising_timesteps(torch.arange(3), 3, "late")
    with pytest.raises(ValueError, match="needs at least 2 timesteps"):
        denoising_timesteps(torch.arange(1), 1, "released")
