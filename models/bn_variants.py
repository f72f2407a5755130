"""Batch normalization the way the exercise this project grew out of did it, one switch per mistake.

The exercise's TensorFlow code computed conv moments over the batch axis only (one mean and variance
per channel *and position*), normalized with batch statistics at inference (its population averages
were never used), added a bias after BN, and used decay 0.999 and eps 1e-8. ``pipeline compare``
trains each mistake as a variant of the one network (``DigitNetConfig``) to measure what it costs.
Decay and eps are plain ``bn_momentum``/``bn_eps`` settings of ``nn.BatchNorm``; the other three need
the layer below. Pure PyTorch, no I/O.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

# What each mistake changes in DigitNetConfig (the correct network is the config's defaults).
MISTAKES: dict[str, dict[str, Any]] = {
    "per-position moments": {"bn_moments": "position"},
    "batch statistics at inference": {"bn_inference": "batch"},
    "decay 0.999": {"bn_momentum": 0.001},
    "bias after BN": {"bias_after_bn": True},
    "eps 1e-8": {"bn_eps": 1e-8},
}
BN_MOMENTS = ("channel", "position")
BN_INFERENCE = ("population", "batch")


class ExerciseBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BN over [N, C] or [N, C, H, W] with the exercise's choices as switches.

    ``moments="position"``: statistics over N only, one per (c, h, w), so the running statistics have
    the shape ``positions`` (C, H, W); per channel they are over (N, H, W), as ``nn.BatchNorm2d``.
    ``inference="batch"``: the batch's own statistics in eval mode too, and no running statistics at
    all (nothing to fold). ``bias_after``: a second, redundant shift ``after_bias`` added after BN's beta.
    Batch variance at inference is the biased one, as ``tf.nn.moments`` gives: a batch of one image
    then normalizes every dense unit to 0 (the output is beta), where ``nn.BatchNorm1d`` would raise.
    """

    def __init__(self, num_features: int, *, positions: tuple[int, int, int] | None = None,
                 moments: str = "channel", inference: str = "population", bias_after: bool = False,
                 eps: float = 1e-5, momentum: float = 0.1) -> None:
        if moments not in BN_MOMENTS or inference not in BN_INFERENCE:
            raise ValueError(f"unknown BN variant: moments={moments!r}, inference={inference!r}")
        if moments == "position" and positions is None:
            raise ValueError("per-position moments need the (C, H, W) shape of the input")
        super().__init__(num_features, eps=eps, momentum=momentum, affine=True,
                         track_running_stats=inference == "population")
        self.per_position = moments == "position"
        if self.per_position and self.track_running_stats:
            assert positions is not None  # checked above: per-position moments need the shape
            self.register_buffer("running_mean", torch.zeros(positions))
            self.register_buffer("running_var", torch.ones(positions))
        self.after_bias = nn.Parameter(torch.zeros(num_features)) if bias_after else None

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() not in (2, 4):
            raise ValueError(f"expected a 2D or 4D input, got {input.dim()}D")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(input)
        x = input.float()  # statistics in fp32 under bf16 autocast too, as nn.BatchNorm accumulates them
        spatial = x.dim() == 4
        dims = (0,) if self.per_position or not spatial else (0, 2, 3)
        channel_shape = (1, -1, 1, 1) if spatial else (1, -1)
        if self.training or self.running_mean is None:
            mean = x.mean(dims, keepdim=True)
            var = x.var(dims, unbiased=False, keepdim=True)
            if self.training and self.running_mean is not None:
                self._update_running(mean, var, x.numel() // mean.numel())
        else:
            mean, var = self._running(channel_shape)
        y = (x - mean) / torch.sqrt(var + self.eps) * self.weight.view(channel_shape) + self.bias.view(channel_shape)
        if self.after_bias is not None:
            y = y + self.after_bias.view(channel_shape)
        return y.to(input.dtype)

    def _running(self, channel_shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.running_mean is not None and self.running_var is not None  # forward checks running_mean
        if self.per_position:
            return self.running_mean.unsqueeze(0), self.running_var.unsqueeze(0)
        return self.running_mean.view(channel_shape), self.running_var.view(channel_shape)

    @torch.no_grad()
    def _update_running(self, mean: torch.Tensor, var: torch.Tensor, count: int) -> None:
        # forward checks running_mean; the rest come with it, and momentum is a float (never the cumulative None)
        assert self.running_mean is not None and self.running_var is not None
        assert self.num_batches_tracked is not None and self.momentum is not None
        unbiased = var * count / max(count - 1, 1)
        shape = self.running_mean.shape
        self.running_mean.lerp_(mean.reshape(shape).to(self.running_mean.dtype), self.momentum)
        self.running_var.lerp_(unbiased.reshape(shape).to(self.running_var.dtype), self.momentum)
        self.num_batches_tracked += 1
