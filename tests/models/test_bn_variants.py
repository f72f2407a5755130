"""The exercise's BN mistakes compute what they claim (models/bn_variants.py), and the hidden
pre-activation is what the last ReLU receives."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from models import DigitNet, DigitNetConfig, batchnorm_layers, fold_batchnorm
from models.bn_variants import MISTAKES, ExerciseBatchNorm
from tests.models.helpers import capture, images

TINY = DigitNetConfig(conv1_channels=4, conv2_channels=6, hidden=16)


def tiny(**overrides) -> DigitNet:
    torch.manual_seed(0)
    return DigitNet(replace(TINY, **overrides))


def trained_a_little(model: DigitNet, steps: int = 3) -> DigitNet:
    model.train()
    for step in range(steps):
        model(images(16, seed=step))
    return model.eval()


def test_per_position_moments_differ_from_per_channel_ones_on_a_crafted_input() -> None:
    # one channel, 2x2 positions; position (0, 0) is bright in every image, the others dim
    x = torch.tensor([[[[10.0, 1.0], [2.0, 0.0]]], [[[12.0, 0.0], [1.0, 1.0]]], [[[11.0, 2.0], [0.0, 2.0]]]])
    channel = ExerciseBatchNorm(1, moments="channel").train()
    position = ExerciseBatchNorm(1, positions=(1, 2, 2), moments="position").train()
    per_channel, per_position = channel(x), position(x)
    # per position: every position has mean 0 and (biased) variance 1 over the batch alone
    torch.testing.assert_close(per_position.mean(0), torch.zeros(1, 2, 2), atol=1e-5, rtol=0)
    torch.testing.assert_close(per_position.var(0, unbiased=False), torch.ones(1, 2, 2), atol=1e-3, rtol=0)
    # per channel: one mean over batch and positions, so the bright position stays far above 0
    assert per_channel.mean(0)[0, 0, 0] > 1.0
    torch.testing.assert_close(per_channel.mean(), torch.tensor(0.0), atol=1e-5, rtol=0)
    assert position.running_mean is not None and channel.running_mean is not None
    assert position.running_mean.shape == (1, 2, 2) and channel.running_mean.shape == (1,)


def test_exercise_bn_with_the_correct_switches_is_torch_batchnorm() -> None:
    x = torch.randn(8, 3, 5, 5) * 2 + 1
    ours, torch_bn = ExerciseBatchNorm(3, momentum=0.2), nn.BatchNorm2d(3, momentum=0.2)
    with torch.no_grad():
        for bn in (ours, torch_bn):
            bn.weight.copy_(torch.tensor([0.5, 1.5, -1.0]))
            bn.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    torch.testing.assert_close(ours.train()(x), torch_bn.train()(x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours.running_mean, torch_bn.running_mean)
    torch.testing.assert_close(ours.running_var, torch_bn.running_var)
    torch.testing.assert_close(ours.eval()(x), torch_bn.eval()(x), atol=1e-5, rtol=1e-5)


def test_batch_statistics_at_inference_depend_on_the_other_images_in_the_batch() -> None:
    x = images(8)
    exercise = trained_a_little(tiny(**MISTAKES["batch statistics at inference"]))
    correct = trained_a_little(tiny())
    alone_a, alone_b = exercise(torch.cat([x[:1], x[1:4]])), exercise(torch.cat([x[:1], x[4:8]]))
    assert (alone_a[0] - alone_b[0]).abs().max() > 1e-3  # the same image, another answer
    torch.testing.assert_close(correct(torch.cat([x[:1], x[1:4]]))[0], correct(torch.cat([x[:1], x[4:8]]))[0])
    # a batch of one: every dense unit is normalized to 0, so every image gets the same logits
    torch.testing.assert_close(exercise(x[:1]), exercise(x[5:6]))
    assert all(bn.running_mean is None for bn in batchnorm_layers(exercise))


def test_decay_0999_moves_the_population_statistics_a_thousandth_per_step() -> None:
    model = tiny(**MISTAKES["decay 0.999"]).train()
    bn = model.bn3
    assert isinstance(bn, nn.modules.batchnorm._BatchNorm) and bn.running_mean is not None
    x = images(16)
    batch_mean = capture(bn, model, x, inputs=True).mean(0)
    bn.running_mean.zero_()
    model(x)
    torch.testing.assert_close(bn.running_mean, 0.001 * batch_mean, atol=1e-6, rtol=1e-4)


def test_a_bias_after_bn_is_a_redundant_parameter_that_folds() -> None:
    correct, doubled = tiny(), tiny(**MISTAKES["bias after BN"])
    extra = sum(bn.num_features for bn in batchnorm_layers(doubled))
    assert sum(p.numel() for p in doubled.parameters()) == sum(p.numel() for p in correct.parameters()) + extra
    # same initial weights, and the second bias starts at 0: the same function (same dropout masks too)
    x = images(8)
    outputs = []
    for model in (doubled, correct):
        torch.manual_seed(1)
        outputs.append(model.train()(x))
    torch.testing.assert_close(*outputs)
    # beta and the bias after it get the same gradient: they only ever move together
    F.cross_entropy(doubled(x), torch.arange(8) % 10).backward()
    bn3 = doubled.bn3
    assert isinstance(bn3, ExerciseBatchNorm) and bn3.after_bias is not None
    torch.testing.assert_close(bn3.after_bias.grad, bn3.bias.grad)
    with torch.no_grad():
        bn3.after_bias.fill_(0.5)
    trained_a_little(doubled)
    torch.testing.assert_close(fold_batchnorm(doubled)(x), doubled(x), atol=1e-5, rtol=1e-5)


def test_eps_reaches_every_bn_layer() -> None:
    assert {bn.eps for bn in batchnorm_layers(tiny(**MISTAKES["eps 1e-8"]))} == {1e-8}
    assert all(type(bn) in (nn.BatchNorm1d, nn.BatchNorm2d) for bn in batchnorm_layers(tiny(bn_eps=1e-8)))


@pytest.mark.parametrize("mistake", ["per-position moments", "batch statistics at inference"])
def test_bn_that_cannot_fold_is_refused_by_name(mistake: str) -> None:
    model = trained_a_little(tiny(**MISTAKES[mistake]))
    assert model.cfg.why_not_foldable()
    with pytest.raises(ValueError, match="cannot fold this network's batch normalization"):
        fold_batchnorm(model)


@pytest.mark.parametrize("bn", [True, False])
def test_the_hidden_preactivation_is_what_the_last_relu_receives(bn: bool) -> None:
    model = trained_a_little(tiny(bn=bn))
    x = images(6)
    pre = model.hidden_preactivation(x)
    # what forward feeds the ReLU: bn3's output with BN, fc1's without
    torch.testing.assert_close(pre, capture(model.bn3 if bn else model.fc1, model, x))
    torch.testing.assert_close(model.fc2(F.relu(pre)), model(x))
