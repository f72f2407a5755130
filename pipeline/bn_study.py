"""The deeper half of `pipeline compare`: the BN paper's Figure 1 on this network, and the exercise's
BN mistakes measured one by one.

- ``percentile_probe``: the 15th/50th/85th percentiles of a few fixed units of the last hidden layer's
  pre-activation (what its ReLU receives) on a fixed probe batch, recorded at every evaluation.
- ``mistake_runs``: each of ``models.bn_variants.MISTAKES`` as a variant of the same run (same seed,
  so the same initial weights and data order) at one learning rate; eps also under the other precision.
- ``batch_statistics_accuracy``: a correct run's final weights evaluated the exercise's way, with the
  test batch's own statistics, for several test batch sizes (training is the same, so no new run).
- ``population_error``: how far a run's population statistics are from the training data's exact ones.
"""
from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.train import Probe, TrainConfig, resolve_device, use_bf16

if TYPE_CHECKING:
    import torch

    from models import DigitNet

PERCENTILES = (15, 50, 85)
PROBE_IMAGES = 256  # the first test images: the same batch at every evaluation and in every run
UNIT_FRACTIONS = (0.0, 0.25, 0.5, 0.75)  # fixed units, spread over the hidden layer
TEST_BATCH_SIZES = (1000, 100, 10, 1)
EPS_MISTAKE = "eps 1e-8"
BATCH_INFERENCE = "batch statistics at inference"  # evaluated on the correct runs' weights, not trained


def probe_units(hidden: int) -> list[int]:
    return [int(f * hidden) for f in UNIT_FRACTIONS]


def percentile_probe(images: "torch.Tensor", units: Sequence[int]) -> Probe:
    """A probe recording the percentiles of ``units`` of the hidden pre-activation over ``images``."""
    import torch

    levels = torch.tensor([p / 100 for p in PERCENTILES])

    def probe(model: "DigitNet") -> dict[str, Any]:
        pre = model.hidden_preactivation(images.to(next(model.parameters()).device))[:, list(units)].float()
        q = torch.quantile(pre.cpu(), levels, dim=0)  # [percentile, unit]
        return {"units": list(units), **{f"p{p}": q[i].tolist() for i, p in enumerate(PERCENTILES)}}

    return probe


def other_precision(cfg: TrainConfig) -> str:
    """The precision ``cfg``'s runs do not use, for eps's second measurement."""
    return "fp32" if use_bf16(cfg.precision, resolve_device(cfg.device)) else "bf16"


def mistake_runs(base: TrainConfig) -> list[tuple[str, TrainConfig]]:
    """(row name, config) for every mistake that needs its own training run, plus the correct BN
    under the other precision as eps's reference there."""
    from models.bn_variants import MISTAKES

    other = other_precision(base)
    runs = [(name, replace(base, bn_mistake=name)) for name in MISTAKES if name != BATCH_INFERENCE]
    runs += [(f"correct BN, {other}", replace(base, precision=other)),
             (f"{EPS_MISTAKE}, {other}", replace(base, bn_mistake=EPS_MISTAKE, precision=other))]
    return runs


def batch_statistics_accuracy(model: "DigitNet", images: "torch.Tensor", labels: "torch.Tensor",
                              batch_sizes: Sequence[int] = TEST_BATCH_SIZES) -> dict[int, dict[str, float]]:
    """Test loss and accuracy of ``model``'s weights when BN normalizes with each test batch's own
    statistics (consecutive batches of each size), as the exercise's inference did."""
    import torch
    from torch.nn import functional as F

    from models import DigitNet
    from models.bn_variants import MISTAKES

    exercise = DigitNet(replace(model.cfg, **MISTAKES[BATCH_INFERENCE])).to(images.device)
    state = {k: v for k, v in model.state_dict().items() if "running_" not in k and "num_batches" not in k}
    exercise.load_state_dict(state)
    exercise.eval()
    results = {}
    with torch.no_grad():
        for size in batch_sizes:
            logits = torch.cat([exercise(images[i:i + size]) for i in range(0, len(images), size)]).float()
            results[size] = {"test_loss": float(F.cross_entropy(logits, labels)),
                             "test_accuracy": float((logits.argmax(1) == labels).float().mean())}
    return results


def population_error(model: "DigitNet", train_images: "torch.Tensor", batch_size: int = 500) -> dict[str, float]:
    """How far the running (population) statistics are from the exact statistics of the training
    split, over every BN channel: mean |Δmean| / exact std, and mean |log(running var / exact var)|."""
    import torch

    from models import batchnorm_layers, recompute_bn_statistics

    exact = copy.deepcopy(model)
    recompute_bn_statistics(exact, [train_images[i:i + batch_size] for i in range(0, len(train_images), batch_size)])
    mean_errors, var_errors = [], []
    for running, true in zip(batchnorm_layers(model), batchnorm_layers(exact)):
        # recompute_bn_statistics refuses a BN without running statistics, and exact is a copy of model
        assert running.running_mean is not None and running.running_var is not None
        assert true.running_mean is not None and true.running_var is not None
        std = true.running_var.double().clamp_min(1e-12).sqrt()
        mean_errors.append(((running.running_mean.double() - true.running_mean.double()).abs() / std).flatten())
        ratio = running.running_var.double().clamp_min(1e-12) / true.running_var.double().clamp_min(1e-12)
        var_errors.append(ratio.log().abs().flatten())
    return {"mean_error_in_std": float(torch.cat(mean_errors).mean()),
            "log_var_ratio": float(torch.cat(var_errors).mean())}


def drift(evaluations: list[dict[str, Any]], unit_index: int = 0,
          settled_after: float = 0.25) -> dict[str, float] | None:
    """How much one unit's input distribution moves: its median at the start and the end, the 15-85
    spread at the start and the end, and how far the median ranges (max - min) over the run after
    its first ``settled_after`` of steps, in units of the final spread. The first steps are left out
    because there BN's population averages (what eval mode uses) still lag the changing weights."""
    probed = [(e["step"], e["probe"]) for e in evaluations if "probe" in e]
    if len(probed) < 2:
        return None
    steps = np.array([step for step, _ in probed])
    p15, p50, p85 = (np.array([p[f"p{q}"][unit_index] for _, p in probed]) for q in PERCENTILES)
    spread = float(p85[-1] - p15[-1])
    later = p50[steps > settled_after * steps[-1]]
    return {"median_start": float(p50[0]), "median_end": float(p50[-1]),
            "spread_start": float(p85[0] - p15[0]), "spread_end": spread,
            "median_range_later": float(later.max() - later.min()),
            "range_in_spreads": float((later.max() - later.min()) / max(spread, 1e-12))}
