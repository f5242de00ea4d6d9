"""throughput.py: the UNet's FLOPs per sample, device peaks, the ThroughputMonitor's settings."""

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from lightning_m3ddm.models import M3DDMUNet
from lightning_m3ddm.throughput import TrainingThroughput, peak_flops_of, unet_flops_per_sample

TINY = dict(block_out_channels=(32, 32, 32, 32), norm_num_groups=8, attention_head_dim=4, layers_per_block=1)


def test_meta_count_equals_a_real_run_and_scales_with_the_batch():
    frames, size, g = 2, 8, 2
    unet = M3DDMUNet(**TINY)
    sample = torch.randn(2, unet.config.in_channels, frames, size, size)
    global_latents = torch.randn(2, g, 4, size, size)
    # the math attention kernel, as on the meta device: the CPU's fused kernel has no FLOP formula
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        unet(sample, torch.tensor([3, 5]), fps=torch.tensor([8, 8]), global_latents=global_latents).sample.sum().backward()
    per_sample = unet_flops_per_sample(dict(unet.config), frames, (size, size), g)
    # within 0.2%: a few small terms (embedding MLPs, norms' affine backward) do not scale with the batch
    assert 2 * per_sample == pytest.approx(counter.get_total_flops(), rel=0.005)
    forward = unet_flops_per_sample(dict(unet.config), frames, (size, size), g, backward=False)
    assert 2.5 < per_sample / forward < 3.5  # backward costs about twice the forward


def test_device_peaks():
    assert peak_flops_of("NVIDIA H200") == 989e12
    assert peak_flops_of("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_flops_of("NVIDIA H100 PCIe") == 756e12
    assert peak_flops_of("NVIDIA A100-SXM4-80GB") == 312e12
    assert peak_flops_of("NVIDIA GeForce RTX 4090") is None
    with pytest.raises(ValueError, match="unknown device 'v100'"):
        TrainingThroughput(peak_flops="v100")
