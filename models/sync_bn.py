"""Batch normalization whose training statistics are those of the global batch across processes.

With plain DistributedDataParallel each process normalizes with its own slice of the batch and keeps
its own running statistics. ``torch.nn.SyncBatchNorm`` fixes that on GPUs but refuses CPU tensors,
so this is the same math in plain differentiable ops: the per-channel sum and the sum of squared
deviations are all-reduced, with gradients all-reduced on the way back, so the forward pass, its gradient
and the running statistics equal those of one
process holding the whole batch. Outside training, or without an initialized process group of more
than one process, it is ordinary batch normalization. Its state_dict is BatchNorm's.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class _AllReduceSum(torch.autograd.Function):
    """Sum over processes. Every process's loss depends on the sum, so each gradient is the sum of theirs."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        import torch.distributed as dist

        total = tensor.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        import torch.distributed as dist

        total = grad.clone()
        dist.all_reduce(total)
        return total


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    return _AllReduceSum.apply(tensor)


class SyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() not in (2, 4):
            raise ValueError(f"expected 2D or 4D input, got {input.dim()}D")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(input)
        import torch.distributed as dist

        distributed = self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        if not distributed:
            momentum = self.momentum if self.momentum is not None else 0.0
            if self.training and self.num_batches_tracked is not None:
                self.num_batches_tracked.add_(1)
            return F.batch_norm(input, self.running_mean, self.running_var, self.weight, self.bias,
                                self.training or self.running_mean is None, momentum, self.eps)

        dims = [0] + list(range(2, input.dim()))  # per channel over (N, H, W), or over N for dense input
        shape = (1, -1) + (1,) * (input.dim() - 2)
        count = torch.tensor([input.numel() // input.shape[1]], dtype=torch.float64, device=input.device)
        dist.all_reduce(count)
        n = float(count.item())
        # two passes, as single-process BN computes them: global mean, then global squared deviation
        mean = all_reduce_sum(input.sum(dims)) / n
        centred = input - mean.reshape(shape)
        var = all_reduce_sum((centred * centred).sum(dims)) / n  # biased, used to normalize
        output = centred * torch.rsqrt(var + self.eps).reshape(shape)
        if self.affine:
            output = output * self.weight.reshape(shape) + self.bias.reshape(shape)
        if self.track_running_stats:
            # _BatchNorm registers these buffers whenever it tracks running statistics
            assert self.running_mean is not None and self.running_var is not None
            assert self.num_batches_tracked is not None
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * (n / (n - 1)), alpha=m)  # unbiased
        return output


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm1d/2d in ``module`` (in place) by SyncBatchNorm with the same parameters and buffers."""
    for name, child in module.named_children():
        if isinstance(child, (nn.BatchNorm1d, nn.BatchNorm2d)):
            sync = SyncBatchNorm(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats)
            sync.load_state_dict(child.state_dict())
            sync.to(child.running_mean.device if child.running_mean is not None else "cpu")
            sync.train(child.training)
            setattr(module, name, sync)
        else:
            convert_sync_batchnorm(child)
    return module
