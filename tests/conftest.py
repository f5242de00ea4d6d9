"""Shared fixtures: tiny model configurations that run on CPU in seconds."""

from pathlib import Path

import pytest
import torch

DATA = Path(__file__).parent / "data"

# A few-million-parameter UNet with the released layout (widths shrunk).
TINY_UNET = dict(block_out_channels=(32, 64, 64, 64), norm_num_groups=32, attention_head_dim=8)


@pytest.fixture
def tiny_unet_config() -> dict:
    return dict(TINY_UNET)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    torch.set_num_threads(2)
    yield
