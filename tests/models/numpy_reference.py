"""An independent numpy implementation of DigitNet's eval-mode forward pass, for checking torch results."""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, pad: int) -> np.ndarray:
    # x [N,C,H,W], w [O,C,k,k] → [N,O,H,W] (stride 1, zero padding)
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    windows = sliding_window_view(x, w.shape[2:], axis=(2, 3))  # [N,C,H,W,k,k]
    out = np.einsum("nchwij,ocij->nohw", windows, w)
    return out if b is None else out + b[None, :, None, None]


def max_pool2(x: np.ndarray) -> np.ndarray:
    n, c, h, w = x.shape
    return x.reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))


def batchnorm_eval(x: np.ndarray, mean, var, gamma, beta, eps: float) -> np.ndarray:
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps) * gamma.reshape(shape) + beta.reshape(shape)


def forward(state: dict[str, np.ndarray], cfg, image: np.ndarray, until: str | None = None) -> np.ndarray:
    """Eval-mode logits in float64. ``until`` in {"bn1", "bn2", "bn3"} returns that BN's input instead."""
    relu = lambda v: np.maximum(v, 0)  # noqa: E731
    pad = cfg.kernel_size // 2

    def bn(x, name):
        if not cfg.bn:
            return x
        return batchnorm_eval(x, state[f"{name}.running_mean"], state[f"{name}.running_var"],
                              state[f"{name}.weight"], state[f"{name}.bias"], cfg.bn_eps)

    x = (image.astype(np.float64) - cfg.normalize_mean) / cfg.normalize_std
    x = conv2d(x, state["conv1.weight"], state.get("conv1.bias"), pad)
    if until == "bn1":
        return x
    x = max_pool2(relu(bn(x, "bn1")))
    x = conv2d(x, state["conv2.weight"], state.get("conv2.bias"), pad)
    if until == "bn2":
        return x
    x = max_pool2(relu(bn(x, "bn2"))).reshape(len(x), -1)
    x = x @ state["fc1.weight"].T + (state["fc1.bias"] if "fc1.bias" in state else 0)
    if until == "bn3":
        return x
    x = relu(bn(x, "bn3"))
    return x @ state["fc2.weight"].T + state["fc2.bias"]


def numpy_state(model) -> dict[str, np.ndarray]:
    return {k: v.detach().double().numpy() for k, v in model.state_dict().items() if v.dtype.is_floating_point}
