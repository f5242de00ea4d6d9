"""The weight-free autoencoders: exact properties and reconstruction quality on the sample clip."""

import math
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from scipy.fft import dctn

from lightning_m3ddm.autoencoders import PatchDCTAutoencoder, PixelUnshuffleAutoencoder, from_spec, patch_dct_basis

CLIP = Path(__file__).parent / "data" / "carphone_176x144_30fps_120f.mp4"


@pytest.fixture(scope="module")
def sample_clip_frames() -> torch.Tensor:
    """16 frames of the sample clip, (16, 3, 144, 176) in [-1, 1]."""
    with av.open(str(CLIP)) as container:
        frames = [f.to_ndarray(format="rgb24") for _, f in zip(range(16), container.decode(video=0))]
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1


def test_patch_dct_basis_rows_are_orthonormal():
    basis = patch_dct_basis(4, 6, 3).double()
    assert basis.shape == (12, 48)
    torch.testing.assert_close(basis @ basis.T, torch.eye(12, dtype=torch.float64), atol=1e-6, rtol=0)


def test_patch_dct_matches_scipy_dct_of_each_patch_times_its_gain():
    ae = PatchDCTAutoencoder(factor=4, luma_coefficients=16, chroma_coefficients=16, frequency_exponent=1.5, scale=2.0)
    rng = np.random.default_rng(0)
    frames = rng.uniform(-1, 1, (1, 3, 8, 8))
    z = ae.encode(torch.from_numpy(frames).float()).double().numpy()  # (1, 48, 2, 2)
    colour = np.array([[1, 1, 1], [1, 0, -1], [1, -2, 1]], float)
    colour /= np.linalg.norm(colour, axis=1, keepdims=True)
    zigzag = sorted(((u, v) for u in range(4) for v in range(4)), key=lambda uv: (uv[0] + uv[1], uv[0]))
    for i in range(2):
        for j in range(2):
            patch = np.einsum("ac,chw->ahw", colour, frames[0, :, 4 * i : 4 * i + 4, 4 * j : 4 * j + 4])
            coeffs = np.stack([dctn(p, norm="ortho") for p in patch])  # (axis, u, v)
            expected = [coeffs[a, u, v] * 2.0 / 4 * (1 + u + v) ** 1.5 for a in range(3) for u, v in zigzag]
            np.testing.assert_allclose(z[0, :, i, j], expected, atol=1e-5)


def test_patch_dct_is_lossless_with_every_coefficient():
    ae = PatchDCTAutoencoder(factor=4, luma_coefficients=16, chroma_coefficients=16)
    frames = torch.rand(3, 3, 16, 24) * 2 - 1
    assert ae.latent_channels == 48
    torch.testing.assert_close(ae.decode(ae.encode(frames)), frames, atol=1e-5, rtol=0)


def test_patch_dct_encode_of_decode_is_identity():
    ae = PatchDCTAutoencoder(factor=4, frequency_exponent=2.0, scale=0.7)
    z = torch.randn(2, ae.latent_channels, 5, 6)
    torch.testing.assert_close(ae.encode(ae.decode(z)), z, atol=1e-5, rtol=0)


def test_patch_dct_constant_grey_is_only_luma_dc():
    ae = PatchDCTAutoencoder(factor=4, scale=3.0)
    frames = torch.full((1, 3, 8, 8), 0.25)
    z = ae.encode(frames)
    # luma axis (R+G+B)/sqrt(3) of a grey 0.25 is sqrt(3)/4; the DC of an orthonormal 4x4 DCT is
    # 4x the mean; the DC's gain is scale / factor
    torch.testing.assert_close(z[:, 0], torch.full((1, 2, 2), 3.0 * math.sqrt(3) * 0.25), atol=1e-6, rtol=0)
    assert z[:, 1:].abs().max() < 1e-6


def test_patch_dct_drops_only_high_frequencies():
    ae = PatchDCTAutoencoder(factor=4, luma_coefficients=3, chroma_coefficients=1)
    y, x = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    smooth = torch.stack([0.5 * torch.cos(math.pi * x / 16)] * 3)[None]  # grey, slow horizontal ramp
    checker = torch.stack([((x + y) % 2) * 0.5 - 0.25] * 3)[None]  # the highest frequency
    err_smooth = (ae.decode(ae.encode(smooth)) - smooth).abs().max()
    err_checker = (ae.decode(ae.encode(checker)) - checker).abs().max()
    assert err_smooth < 0.05 < err_checker


def test_patch_dct_default_reconstructs_the_sample_clip_above_30_db(sample_clip_frames):
    ae = PatchDCTAutoencoder()
    frames = sample_clip_frames  # (N, 3, H, W) in [-1, 1], H and W multiples of 4
    mse = ((ae.decode(ae.encode(frames)) - frames) ** 2).mean()
    psnr = 10 * math.log10(4.0 / float(mse))
    assert psnr > 30.0, psnr


def test_patch_dct_default_gains_even_out_the_channels_of_generated_videos():
    from lightning_m3ddm.data.synthetic import SyntheticVideoSpec, render_frames

    video = np.stack(list(render_frames(SyntheticVideoSpec(width=64, height=64, num_frames=16, fps=24.0, seed=3))))
    frames = torch.from_numpy(video).permute(0, 3, 1, 2).float() / 127.5 - 1
    flat = PatchDCTAutoencoder(frequency_exponent=0.0).encode(frames).std(dim=(0, 2, 3))
    even = PatchDCTAutoencoder().encode(frames).std(dim=(0, 2, 3))
    assert float(flat.max() / flat.min()) > 5  # raw DCT: the DC spreads far more than the AC
    assert float(even.max() / even.min()) < 3


def test_spec_round_trip_rebuilds_the_same_autoencoder():
    for ae in (PatchDCTAutoencoder(factor=2, luma_coefficients=3, chroma_coefficients=1, scale=2.0), PixelUnshuffleAutoencoder(2)):
        again = from_spec(ae.spec())
        assert type(again) is type(ae) and again.init_args() == ae.init_args()
        frames = torch.rand(1, 3, 8, 8) * 2 - 1
        torch.testing.assert_close(again.encode(frames), ae.encode(frames))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(factor=0), "factor"),
        (dict(factor=2, luma_coefficients=5), "luma_coefficients"),
        (dict(chroma_coefficients=-1), "chroma_coefficients"),
        (dict(luma_coefficients=0, chroma_coefficients=0), "at least one"),
        (dict(scale=0.0), "scale"),
    ],
)
def test_patch_dct_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PatchDCTAutoencoder(**kwargs)
