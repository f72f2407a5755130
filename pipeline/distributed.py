"""Multi-process training under torchrun: process-group set-up and the per-step agreement between ranks.

torchrun (``python -m torch.distributed.run``) sets RANK, WORLD_SIZE and LOCAL_RANK for each process.
Every rank sees the same global batch order (a function of seed and epoch) and takes its own slice,
so the sequence of global batches is the same for any number of processes.
"""
from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn

from pipeline.errors import PipelineError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def local_slice(self, global_batch: int) -> slice:
        per_rank = global_batch // self.world_size
        return slice(self.rank * per_rank, (self.rank + 1) * per_rank)


def context_from_environment() -> DistContext:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    return DistContext(int(os.environ.get("RANK", "0")), world_size, int(os.environ.get("LOCAL_RANK", "0")))


def check_one_gpu_per_process(nproc: int) -> None:
    """Training on CUDA gives each process its own GPU (process i on cuda:i)."""
    import torch

    gpus = torch.cuda.device_count()
    if nproc > gpus:
        raise PipelineError(f"--nproc {nproc} with --device cuda needs one GPU per process; "
                            f"this machine has {gpus} (use --nproc {gpus}, or --device cpu)")


def start(ctx: DistContext, device: "torch.device", batch_size: int) -> "torch.device":
    """Join the process group (gloo on CPU, nccl on CUDA); return this rank's device."""
    import torch
    import torch.distributed as dist

    if batch_size % ctx.world_size:
        raise PipelineError(f"--batch-size {batch_size} (the global batch) must be divisible by the "
                            f"{ctx.world_size} processes")
    if batch_size // ctx.world_size < 2:
        raise PipelineError("each process needs at least 2 images per step for batch statistics")
    if device.type == "cuda":
        check_one_gpu_per_process(ctx.world_size)
        device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return device


def stop(ctx: DistContext, *, finished: bool) -> None:
    """Leave the process group. ``finished``: every rank returned normally, so they can meet first."""
    import torch.distributed as dist

    if not (ctx.enabled and dist.is_initialized()):
        return
    if finished:
        # Without this meeting a rank that is done first (rank 0 still evaluates and writes) exits
        # at once, and a gloo worker thread still releasing the last collective's tensors needs the
        # GIL while the interpreter shuts down: "terminate called without an active exception",
        # SIGABRT (1 in 12 runs here under load; 1 in 4 with rank 0 a second slower). Waiting here
        # frees the GIL for it.
        dist.barrier()
    dist.destroy_process_group()


def end_worker(status: int) -> NoReturn:
    """End a distributed worker process now, without the interpreter's finalization.

    After ``stop`` the work is done and written, but finalization still destroys torch's C++ objects
    in no particular order, and a gloo thread found still joinable there aborts the process
    ("terminate called without an active exception", SIGABRT; 6 of 30 runs of
    tests/pipeline/teardown_worker.py under CPU load, even with the barrier in ``stop``). Output is
    flushed first; nothing else is left to run."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(status)


def agree(ctx: DistContext, loss: float, stop_requested: bool, device: "torch.device") -> tuple[float, bool]:
    """The mean loss over ranks, and whether any rank was asked to stop, so all ranks stop on the same step."""
    if not ctx.enabled:
        return loss, stop_requested
    import torch
    import torch.distributed as dist

    values = torch.tensor([loss, 1.0 if stop_requested else 0.0], dtype=torch.float64, device=device)
    dist.all_reduce(values)
    return float(values[0]) / ctx.world_size, bool(values[1] > 0)
