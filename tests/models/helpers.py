"""Helpers the model tests share: random images, non-trivial BN statistics, a layer's input or output."""
from __future__ import annotations

import torch

from models import DigitNet, batchnorm_layers


def randomize_bn(model: DigitNet, seed: int = 0) -> DigitNet:
    """Give every BN non-trivial running statistics and affine parameters."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bn in batchnorm_layers(model):
            n = bn.num_features
            assert bn.running_mean is not None and bn.running_var is not None
            bn.running_mean.copy_(torch.randn(n, generator=gen) * 0.5)
            bn.running_var.copy_(torch.rand(n, generator=gen) * 2 + 0.1)
            bn.weight.copy_(torch.randn(n, generator=gen))
            bn.bias.copy_(torch.randn(n, generator=gen))
    return model


def capture(module: torch.nn.Module, model: DigitNet, x: torch.Tensor, inputs: bool = False) -> torch.Tensor:
    seen = []
    if inputs:
        handle = module.register_forward_pre_hook(lambda m, i: seen.append(i[0].detach()))
    else:
        handle = module.register_forward_hook(lambda m, i, o: seen.append(o.detach()))
    model(x)
    handle.remove()
    return seen[0]


def images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))
