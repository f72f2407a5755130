from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from torch import nn

from models import DigitNet, DigitNetConfig, batchnorm_layers
from tests.models.helpers import capture, images, randomize_bn
from tests.models.numpy_reference import forward, numpy_state


def test_shapes_and_layers() -> None:
    model = DigitNet(DigitNetConfig())
    assert model(images(3)).shape == (3, 10)
    assert [type(m).__name__ for m in batchnorm_layers(model)] == ["BatchNorm2d", "BatchNorm2d", "BatchNorm1d"]
    # beta is the bias: no bias in the layer before a BN
    assert model.conv1.bias is None and model.conv2.bias is None and model.fc1.bias is None
    assert model.fc2.bias is not None
    assert model.fc1.in_features == 64 * 7 * 7 and model.fc1.out_features == 1024


def test_no_bn_variant_has_biases_and_no_batchnorm() -> None:
    model = DigitNet(DigitNetConfig(bn=False))
    assert not batchnorm_layers(model)
    assert all(layer.bias is not None for layer in (model.conv1, model.conv2, model.fc1))


def test_train_mode_conv_bn_normalizes_per_channel_over_n_h_w() -> None:
    torch.manual_seed(0)
    model = DigitNet(DigitNetConfig()).train()
    out = capture(model.bn2, model, images(16))  # [N, 64, 14, 14]
    mean = out.mean(dim=(0, 2, 3))
    var = out.var(dim=(0, 2, 3), unbiased=False)
    assert torch.allclose(mean, torch.zeros(64), atol=1e-5)
    assert torch.allclose(var, torch.ones(64), atol=1e-3)
    # The seed's bug (moments over the batch axis only) would leave per-position means at 0;
    # per-channel moments do not: individual positions keep their structure.
    assert out.mean(dim=0).abs().max() > 0.1


def test_train_mode_dense_bn_normalizes_over_the_batch() -> None:
    torch.manual_seed(0)
    model = DigitNet(DigitNetConfig()).train()
    out = capture(model.bn3, model, images(32))  # [N, 1024]
    assert torch.allclose(out.mean(0), torch.zeros(1024), atol=1e-5)
    assert torch.allclose(out.var(0, unbiased=False), torch.ones(1024), atol=1e-2)


def test_running_statistics_are_updated_in_training_and_used_in_eval() -> None:
    torch.manual_seed(0)
    model = DigitNet(DigitNetConfig()).train()
    bn = model.bn1
    assert isinstance(bn, nn.BatchNorm2d) and bn.running_mean is not None and bn.running_var is not None
    x = images(32)
    conv_out = capture(bn, model, x, inputs=True)
    batch_mean = conv_out.mean(dim=(0, 2, 3))
    batch_var = conv_out.var(dim=(0, 2, 3), unbiased=True)
    m = model.cfg.bn_momentum
    # running = (1 - momentum) * running + momentum * batch, from the initial 0 / 1
    assert torch.allclose(bn.running_mean, m * batch_mean, atol=1e-6)
    assert torch.allclose(bn.running_var, (1 - m) + m * batch_var, atol=1e-5)
    assert bn.num_batches_tracked == 1

    model.eval()
    randomize_bn(model)
    out = capture(bn, model, x)
    expected = ((conv_out - bn.running_mean[None, :, None, None])
                / torch.sqrt(bn.running_var[None, :, None, None] + bn.eps))
    expected = expected * bn.weight[None, :, None, None] + bn.bias[None, :, None, None]
    assert torch.allclose(out, expected, atol=1e-5)


def test_eval_output_of_one_image_does_not_depend_on_the_rest_of_the_batch() -> None:
    torch.manual_seed(0)
    model = randomize_bn(DigitNet(DigitNetConfig())).eval()
    x = images(8)
    with torch.no_grad():
        alone = model(x[:1])
        with_batch = model(x)[:1]
        with_other = model(torch.cat([x[:1], images(40, seed=5) * 0.2]))[:1]
    torch.testing.assert_close(alone, with_batch, rtol=0, atol=1e-5)
    torch.testing.assert_close(alone, with_other, rtol=0, atol=1e-5)
    # ...whereas in train mode it does (that is what batch statistics mean).
    model.train()
    with torch.no_grad():
        assert not torch.allclose(model(x)[:1], model(torch.cat([x[:2], images(6, seed=9)]))[:1], atol=1e-3)


@pytest.mark.parametrize("bn", [True, False])
def test_eval_forward_matches_an_independent_numpy_implementation(bn: bool) -> None:
    torch.manual_seed(1)
    model = DigitNet(DigitNetConfig(bn=bn))
    if bn:
        randomize_bn(model)
    model.eval()
    x = images(4)
    with torch.no_grad():
        logits = model(x).double().numpy()
    expected = forward(numpy_state(model), model.cfg, x.numpy())
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)


def test_config_round_trip_and_unknown_keys() -> None:
    cfg = DigitNetConfig(bn=False, dropout=0.25, normalize_mean=0.2)
    assert DigitNetConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown model config keys"):
        DigitNetConfig.from_dict({**cfg.to_dict(), "bogus": 1})


def test_bn_and_no_bn_variants_start_from_identical_weights() -> None:
    torch.manual_seed(3)
    with_bn = DigitNet(DigitNetConfig(bn=True))
    torch.manual_seed(3)
    without = DigitNet(DigitNetConfig(bn=False))
    for name in ("conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight", "fc2.bias"):
        assert torch.equal(with_bn.state_dict()[name], without.state_dict()[name]), name
    # and the BN variant's values are PyTorch's own default initialization, in constructor order
    torch.manual_seed(3)
    conv1 = nn.Conv2d(1, 32, 5, padding=2, bias=False)
    conv2 = nn.Conv2d(32, 64, 5, padding=2, bias=False)
    fc1 = nn.Linear(3136, 1024, bias=False)
    fc2 = nn.Linear(1024, 10)
    for ours, reference in ((with_bn.conv1, conv1), (with_bn.conv2, conv2), (with_bn.fc1, fc1), (with_bn.fc2, fc2)):
        assert torch.equal(ours.weight, reference.weight)
    assert torch.equal(with_bn.fc2.bias, fc2.bias)
    bound = 1 / math.sqrt(25)
    assert without.conv1.bias is not None
    assert without.conv1.bias.abs().max() <= bound and without.conv1.bias.std() > 0


@pytest.mark.parametrize("cfg", [DigitNetConfig(), DigitNetConfig(conv1_channels=4, conv2_channels=6, hidden=16,
                                                                   num_classes=11, kernel_size=3)])
def test_flops_count_every_conv_and_dense_multiply_add_of_a_forward_pass(cfg: DigitNetConfig) -> None:
    model = DigitNet(cfg).eval()
    counted = []

    def count(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        assert isinstance(module, (nn.Conv2d, nn.Linear))
        per_output = module.weight[0].numel()  # multiply-adds behind one output value
        counted.append(2 * per_output * output[0].numel())

    for layer in (model.conv1, model.conv2, model.fc1, model.fc2):
        layer.register_forward_hook(count)
    model(images(1))
    assert cfg.flops() == sum(counted)

