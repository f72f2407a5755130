"""Folding batch normalization into the preceding conv / dense layer, and exact population statistics.

In eval mode BN is an affine map per output channel, y = γ (z − μ) / √(σ² + ε) + β, and z = W x + b is
affine too, so the two compose into one layer with
    W' = W · γ / √(σ² + ε)        (scaled along the output-channel axis, dim 0)
    b' = (b − μ) · γ / √(σ² + ε) + β      (b = 0 where the layer has no bias).
"""
from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import replace

import torch
from torch import nn

from models.net import DigitNet, batchnorm_layers


def fold_bn_params(weight: torch.Tensor, bias: torch.Tensor | None,
                   bn: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (W', b') for a conv or dense ``weight``/``bias`` followed by ``bn`` in eval mode."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("cannot fold a BatchNorm without running statistics")
    if bn.running_mean.shape != (weight.shape[0],):
        raise ValueError(f"cannot fold a BatchNorm with statistics of shape {tuple(bn.running_mean.shape)} "
                         f"into a layer of {weight.shape[0]} output channels")
    # float64 so the folded parameters carry no more rounding than the final cast to float32.
    dtype = weight.dtype
    mean, var = bn.running_mean.double(), bn.running_var.double()
    gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(mean)
    beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(mean)
    after_bias = getattr(bn, "after_bias", None)  # the exercise's redundant second shift (bn_variants)
    if after_bias is not None:
        beta = beta + after_bias.double()
    scale = gamma / torch.sqrt(var + bn.eps)
    b = bias.double() if bias is not None else torch.zeros_like(mean)
    shape = (-1,) + (1,) * (weight.dim() - 1)
    folded_weight = weight.double() * scale.reshape(shape)
    folded_bias = (b - mean) * scale + beta
    return folded_weight.to(dtype), folded_bias.to(dtype)


@torch.no_grad()
def fold_batchnorm(model: DigitNet) -> DigitNet:
    """A copy of ``model`` (eval mode) with every BN folded away: a plain ``bn=False`` DigitNet."""
    if not model.cfg.bn:
        return copy.deepcopy(model).eval()
    blocker = model.cfg.why_not_foldable()
    if blocker:
        raise ValueError(f"cannot fold this network's batch normalization: {blocker}")
    folded = DigitNet(replace(model.cfg, bn=False, bias_after_bn=False)).to(next(model.parameters()).device)
    bn_names = tuple(bn for _, bn in model.FOLD_PAIRS)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith(tuple(f"{b}." for b in bn_names))}
    for layer_name, bn_name in model.FOLD_PAIRS:
        layer = getattr(model, layer_name)
        w, b = fold_bn_params(layer.weight, layer.bias, getattr(model, bn_name))
        state[f"{layer_name}.weight"], state[f"{layer_name}.bias"] = w, b
    folded.load_state_dict(state)
    assert not batchnorm_layers(folded)
    return folded.eval()


@torch.no_grad()
def recompute_bn_statistics(model: nn.Module, batches: Iterable[torch.Tensor]) -> None:
    """Replace every BN's moving averages with the exact population mean and unbiased variance.

    The BN paper's inference procedure. Layers are done in order, one pass over ``batches`` each, so
    every BN's statistics are those of the inputs it sees at inference time (the layers before it
    already use their own exact statistics). The model runs in eval mode (no dropout).
    ``batches`` must be re-iterable (a list or a re-iterable loader).
    """
    model.eval()
    for bn in batchnorm_layers(model):
        if bn.running_mean is None or bn.running_var is None:
            raise ValueError(f"{type(bn).__name__} keeps no running statistics to recompute")
        total = torch.zeros(bn.num_features, dtype=torch.float64, device=bn.running_mean.device)
        total_sq = torch.zeros_like(total)
        count = 0

        def accumulate(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            nonlocal total, total_sq, count
            x = inputs[0].double()
            # per channel over (N, H, W) for conv inputs, over N for dense inputs
            x = x.transpose(0, 1).reshape(x.shape[1], -1)
            total += x.sum(dim=1)
            total_sq += (x * x).sum(dim=1)
            count += x.shape[1]

        handle = bn.register_forward_pre_hook(accumulate)
        try:
            for batch in batches:
                model(batch)
        finally:
            handle.remove()
        if count < 2:
            raise ValueError("need at least two values per channel to estimate a variance")
        mean = total / count
        var = (total_sq - count * mean * mean) / (count - 1)
        bn.running_mean.copy_(mean.to(bn.running_mean.dtype))
        bn.running_var.copy_(var.clamp_min(0).to(bn.running_var.dtype))
