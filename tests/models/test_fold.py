from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from models import DigitNet, DigitNetConfig, batchnorm_layers, fold_batchnorm, fold_bn_params, recompute_bn_statistics
from tests.models.numpy_reference import forward, numpy_state
from tests.models.helpers import images, randomize_bn

TINY = DigitNetConfig(conv1_channels=4, conv2_channels=6, hidden=16, bn_eps=1e-3)


def numpy_fold(w: np.ndarray, b: np.ndarray | None, mean, var, gamma, beta, eps):
    scale = gamma / np.sqrt(var + eps)
    b = np.zeros_like(mean) if b is None else b
    return w * scale.reshape((-1,) + (1,) * (w.ndim - 1)), (b - mean) * scale + beta


@pytest.mark.parametrize("layer", [nn.Conv2d(3, 5, 3, bias=False), nn.Conv2d(3, 5, 3, bias=True),
                                   nn.Linear(7, 4, bias=False), nn.Linear(7, 4, bias=True)])
def test_fold_bn_params_match_numpy(layer: nn.Conv2d | nn.Linear) -> None:
    torch.manual_seed(0)
    n = layer.weight.shape[0]
    bn = nn.BatchNorm1d(n, eps=0.05)
    assert bn.running_mean is not None and bn.running_var is not None
    with torch.no_grad():
        bn.running_mean.uniform_(-2, 2)
        bn.running_var.uniform_(0.01, 4)
        bn.weight.normal_()
        bn.bias.normal_()
    w, b = fold_bn_params(layer.weight, layer.bias, bn)
    n_ = lambda t: None if t is None else t.detach().double().numpy()  # noqa: E731
    ew, eb = numpy_fold(layer.weight.detach().double().numpy(), n_(layer.bias), n_(bn.running_mean), n_(bn.running_var),
                        n_(bn.weight), n_(bn.bias), bn.eps)
    np.testing.assert_allclose(w.detach().double().numpy(), ew, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(b.detach().double().numpy(), eb, rtol=1e-6, atol=1e-7)
    assert w.dtype == torch.float32 and w.shape == layer.weight.shape and b.shape == (n,)


@pytest.mark.parametrize("cfg", [DigitNetConfig(), TINY])
def test_folded_network_has_no_bn_and_matches_eval_logits(cfg: DigitNetConfig) -> None:
    torch.manual_seed(0)
    model = randomize_bn(DigitNet(cfg)).eval()
    folded = fold_batchnorm(model)
    assert not batchnorm_layers(folded) and folded.cfg.bn is False and not folded.training
    assert model.cfg.bn  # the original is untouched
    x = torch.cat([images(32), torch.zeros(1, 1, 28, 28), torch.ones(1, 1, 28, 28)])
    with torch.no_grad():
        ref, out = model(x), folded(x)
    assert (out - ref).abs().max() <= 1e-5 * max(1.0, float(ref.abs().max()))
    # and the folded network matches the independent numpy forward of the unfolded one
    np.testing.assert_allclose(out.double().numpy(), forward(numpy_state(model), model.cfg, x.numpy()),
                               rtol=1e-4, atol=1e-4)


def test_folding_a_network_without_bn_is_a_copy() -> None:
    model = DigitNet(DigitNetConfig(bn=False)).eval()
    folded = fold_batchnorm(model)
    assert folded is not model
    x = images(3)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=0, atol=0)


def test_recomputed_statistics_equal_a_direct_numpy_computation() -> None:
    torch.manual_seed(0)
    model = randomize_bn(DigitNet(TINY))
    batches = [images(50, seed=s) for s in range(3)] + [images(7, seed=9)]  # uneven last batch
    recompute_bn_statistics(model, batches)
    state = numpy_state(model)
    x = torch.cat(batches).numpy()
    for name in ("bn1", "bn2", "bn3"):
        # the inputs this BN sees at inference, the layers before it using their recomputed statistics
        seen = forward(state, TINY, x, until=name)
        per_channel = np.moveaxis(seen, 1, 0).reshape(seen.shape[1], -1)
        np.testing.assert_allclose(state[f"{name}.running_mean"], per_channel.mean(1), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(state[f"{name}.running_var"], per_channel.var(1, ddof=1), rtol=1e-5)
    assert not model.training


def test_recomputed_statistics_do_not_depend_on_batching() -> None:
    torch.manual_seed(0)
    a = randomize_bn(DigitNet(TINY))
    b = DigitNet(TINY)
    b.load_state_dict(a.state_dict())
    data = images(60)
    recompute_bn_statistics(a, [data])
    recompute_bn_statistics(b, list(data.split(7)))
    for bn_a, bn_b in zip(batchnorm_layers(a), batchnorm_layers(b)):
        torch.testing.assert_close(bn_a.running_mean, bn_b.running_mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(bn_a.running_var, bn_b.running_var, rtol=1e-5, atol=1e-6)
