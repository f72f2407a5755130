"""The digit CNN: conv 5x5x32 → BN → ReLU → pool → conv 5x5x64 → BN → ReLU → pool → fc 1024 → BN → ReLU
→ dropout → fc 10.

Pure PyTorch: no files, no printing. Batch normalization is done the way the exercise this project
grew out of did not:
- conv BN statistics are per channel over (N, H, W) (``BatchNorm2d``), dense BN over N (``BatchNorm1d``);
- running (population) statistics are updated in training and used in eval mode;
- the layer before a BN has no bias: BN's beta is that bias;
- momentum 0.1 (PyTorch's convention: weight of the new batch), i.e. decay 0.9, so population
  statistics track the data after a few dozen steps instead of staying at their initial values
  as with a 0.999 decay.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from models.bn_variants import BN_INFERENCE, BN_MOMENTS, ExerciseBatchNorm

IMAGE_SIZE = 28
# The label of the extra class a model trained with generated negatives has: what it answers for
# letters, shapes and scribbles instead of a confident wrong digit.
REJECT_LABEL = "not a digit"
# MNIST's geometry, which serving reproduces from any image: the digit's longer side BOX px, its
# centre of mass at (CENTRE, CENTRE) in the IMAGE_SIZE field.
FIELD = {"size": IMAGE_SIZE, "box": 20, "centre": 14.0}


@dataclass(frozen=True)
class DigitNetConfig:
    num_classes: int = 10
    conv1_channels: int = 32
    conv2_channels: int = 64
    kernel_size: int = 5
    hidden: int = 1024
    bn: bool = True
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1
    # The exercise's BN mistakes, for `pipeline compare` to measure (models/bn_variants.py); the
    # defaults are correct BN. A network with either of the first two cannot be folded or exported.
    bn_moments: str = "channel"  # "position": conv moments over the batch axis only
    bn_inference: str = "population"  # "batch": batch statistics in eval mode too
    bias_after_bn: bool = False  # a redundant bias added after BN
    dropout: float = 0.5
    # Input normalization happens inside the network, so an exported graph takes pixels in [0, 1].
    normalize_mean: float = 0.1307
    normalize_std: float = 0.3081

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DigitNetConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def flops(self) -> int:
        """Multiply-adds x2 of one image's forward pass: the convolutions and dense layers (pooling, BN
        and ReLU are negligible). Convolutions keep the size ('same' padding); each pool halves it."""
        k2 = self.kernel_size ** 2
        conv1 = IMAGE_SIZE ** 2 * self.conv1_channels * k2 * 1
        conv2 = (IMAGE_SIZE // 2) ** 2 * self.conv2_channels * k2 * self.conv1_channels
        fc1 = self.conv2_channels * (IMAGE_SIZE // 4) ** 2 * self.hidden
        fc2 = self.hidden * self.num_classes
        return 2 * (conv1 + conv2 + fc1 + fc2)

    @property
    def exercise_bn(self) -> bool:
        """BN layers need ExerciseBatchNorm (one of the exercise's mistakes is switched on)."""
        return self.bn and (self.bn_moments, self.bn_inference, self.bias_after_bn) != ("channel", "population", False)

    def why_not_foldable(self) -> str | None:
        """Why BN cannot be folded into the layers before it (None when it can)."""
        if not self.bn:
            return None
        if self.bn_moments not in BN_MOMENTS or self.bn_inference not in BN_INFERENCE:
            return f"unknown BN variant (moments {self.bn_moments!r}, inference {self.bn_inference!r})"
        if self.bn_moments == "position":
            return "its conv BN has one mean and variance per position, not per channel: no per-channel scale to fold"
        if self.bn_inference == "batch":
            return "its BN uses batch statistics at inference: the output depends on the other images in the batch"
        return None


class DigitNet(nn.Module):
    normalize_mean: torch.Tensor  # buffers (register_buffer in __init__)
    normalize_std: torch.Tensor

    def __init__(self, cfg: DigitNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c1, c2, k = cfg.conv1_channels, cfg.conv2_channels, cfg.kernel_size
        pooled = IMAGE_SIZE // 4
        rng_state = torch.get_rng_state()

        def norm(kind: type[nn.Module], channels: int, side: int | None = None) -> nn.Module:
            if not cfg.bn:
                return nn.Identity()
            if not cfg.exercise_bn:
                return kind(channels, eps=cfg.bn_eps, momentum=cfg.bn_momentum)
            return ExerciseBatchNorm(channels, positions=None if side is None else (channels, side, side),
                                     moments=cfg.bn_moments if side else "channel", inference=cfg.bn_inference,
                                     bias_after=cfg.bias_after_bn, eps=cfg.bn_eps, momentum=cfg.bn_momentum)

        self.register_buffer("normalize_mean", torch.tensor(cfg.normalize_mean), persistent=False)
        self.register_buffer("normalize_std", torch.tensor(cfg.normalize_std), persistent=False)
        self.conv1 = nn.Conv2d(1, c1, k, padding=k // 2, bias=not cfg.bn)
        self.bn1 = norm(nn.BatchNorm2d, c1, IMAGE_SIZE)
        self.conv2 = nn.Conv2d(c1, c2, k, padding=k // 2, bias=not cfg.bn)
        self.bn2 = norm(nn.BatchNorm2d, c2, IMAGE_SIZE // 2)
        self.fc1 = nn.Linear(c2 * pooled * pooled, cfg.hidden, bias=not cfg.bn)
        self.bn3 = norm(nn.BatchNorm1d, cfg.hidden)
        self.dropout = nn.Dropout(cfg.dropout)
        self.fc2 = nn.Linear(cfg.hidden, cfg.num_classes)
        torch.set_rng_state(rng_state)
        self._draw_parameters()

    @torch.no_grad()
    def _draw_parameters(self) -> None:
        """PyTorch's default init, drawn in a fixed order: every weight, then fc2's bias, then the
        other biases. With the same seed the BN and no-BN variants thus start from identical weights
        (BN layers draw nothing), and the BN variant gets exactly the values its layers' constructors
        would have drawn."""
        layers = (self.conv1, self.conv2, self.fc1, self.fc2)
        for layer in layers:
            nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5))
        for layer in (self.fc2, self.conv1, self.conv2, self.fc1):
            if layer.bias is not None:
                fan_in = layer.weight[0].numel()
                nn.init.uniform_(layer.bias, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.dropout(F.relu(self.hidden_preactivation(image)))  # [N, hidden]
        return self.fc2(x)  # [N, num_classes] logits

    def hidden_preactivation(self, image: torch.Tensor) -> torch.Tensor:
        """[N, hidden]: what the last hidden layer's ReLU receives (fc1, then BN where there is one);
        the distribution the BN paper's Figure 1 follows during training."""
        # image: [N, 1, 28, 28], pixels in [0, 1], white ink on black
        x = (image - self.normalize_mean) / self.normalize_std
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)  # [N, c1, 14, 14]
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)  # [N, c2, 7, 7]
        x = torch.flatten(x, 1)  # [N, c2*49]
        return self.bn3(self.fc1(x))  # [N, hidden]

    # (layer, the BN right after it): the pairs BN folding merges, by attribute name.
    FOLD_PAIRS = (("conv1", "bn1"), ("conv2", "bn2"), ("fc1", "bn3"))

    def linear_bn_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(getattr(self, layer), getattr(self, bn)) for layer, bn in self.FOLD_PAIRS]


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


class WithProbabilities(nn.Module):
    """The exported interface: ``image`` [N,1,28,28] → (``logits`` [N,C], ``probabilities`` [N,C])."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.net(image)
        return logits, torch.softmax(logits, dim=1)
