"""Helpers for tests and fixtures: weights drawn so that no layer can hide.

Default initialisations (identity temporal convs, zero output projections, unit norm
scales, zero BatchNorm statistics) make many layers no-ops, so a model missing one
would still match a reference. Randomising every tensor makes each layer count.
"""

import torch
from torch import nn

_NORMS = (nn.GroupNorm, nn.LayerNorm, nn.BatchNorm2d, nn.BatchNorm1d, nn.BatchNorm3d)


@torch.no_grad()
def randomize_weights(model: nn.Module, generator: torch.Generator) -> nn.Module:
    """Matrices and convolutions ~ N(0, 1/fan_in), norm scales 1 + 0.2 N, biases 0.1 N,
    BatchNorm running mean 0.1 N and running variance U[0.5, 1.5]."""
    for module in model.modules():
        for name, tensor in list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False)):
            if name == "num_batches_tracked":
                continue
            noise = torch.randn(tensor.shape, generator=generator)
            if name == "running_var":
                value = 0.5 + torch.rand(tensor.shape, generator=generator)
            elif name == "running_mean":
                value = 0.1 * noise
            elif tensor.ndim >= 2:
                value = noise / tensor[0].numel() ** 0.5
            elif isinstance(module, _NORMS) and name == "weight":
                value = 1 + 0.2 * noise
            else:
                value = 0.1 * noise
            tensor.copy_(value.to(tensor.dtype))
    return model
