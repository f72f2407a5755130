"""The training loop behind ``pipeline train``: small functions with explicit arguments, plus one
orchestrator (``train``) that owns checkpoints, metrics, resume and clean interruption."""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.artifacts import ensure_writable_dir, write_json
from pipeline.checkpoint import CHECKPOINT_NAME, load_checkpoint, model_from_checkpoint, save_checkpoint
from pipeline.data import Dataset, load_dataset
from pipeline.distributed import agree, context_from_environment, start
from pipeline.errors import PipelineError

if TYPE_CHECKING:
    import torch
    from torch import nn

log = logging.getLogger(__name__)

OPTIMIZERS = ("adam", "sgd")
DIVERGED_LOSS = 1e3  # cross-entropy over 10 classes starts near 2.3; past this the run has blown up
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "bf16", "fp32")


@dataclass(frozen=True)
class TrainConfig:
    data: str = "sample"
    data_dir: str | None = None
    epochs: int = 15
    batch_size: int = 64
    lr: float = 2e-3
    optimizer: str = "adam"
    momentum: float = 0.9  # SGD only
    seed: int = 0
    bn: bool = True
    dropout: float = 0.5
    augment: bool = True
    device: str = "auto"
    max_steps: int | None = None
    log_every: int = 20
    eval_every: int = 0  # also evaluate on the test split every N steps (0: at epoch ends only)
    # speed options, measured by `make bench` (BENCHMARKS.md); weights and exports stay float32
    precision: str = "auto"  # bf16 autocast where the hardware has bf16 units, else fp32
    channels_last: bool = True
    compile: bool = False  # torch.compile the training forward pass
    checkpoint_every_s: float = 60.0  # epoch-end checkpoints at most this often (plus at the end and on stop)

    def validate(self) -> None:
        if self.epochs < 1:
            raise PipelineError(f"--epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 2:
            raise PipelineError(f"--batch-size must be at least 2 (BN needs 2 values per channel), got {self.batch_size}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise PipelineError(f"--lr must be a positive number, got {self.lr}")
        if self.optimizer not in OPTIMIZERS:
            raise PipelineError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.device not in DEVICES:
            raise PipelineError(f"--device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.max_steps is not None and self.max_steps < 1:
            raise PipelineError(f"--max-steps must be at least 1, got {self.max_steps}")
        if self.precision not in PRECISIONS:
            raise PipelineError(f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if not 0 <= self.dropout < 1:
            raise PipelineError(f"--dropout must be in [0, 1), got {self.dropout}")
        if self.log_every < 1 or self.eval_every < 0:
            raise PipelineError("--log-every must be at least 1 and --eval-every at least 0")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    epoch: int
    test_accuracy: float | None
    test_loss: float | None
    wall_time: float
    interrupted: bool
    diverged: bool = False


# --------------------------------------------------------------------------- building blocks


def resolve_device(name: str) -> "torch.device":
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise PipelineError("--device cuda requested but no CUDA device is available")
    return torch.device(name)


def cpu_has_bf16() -> bool:
    """Native bfloat16 arithmetic (AVX512-BF16 or AMX), where bf16 autocast pays off on a CPU."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            flags = next(line for line in cpuinfo if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def use_bf16(precision: str, device: "torch.device") -> bool:
    import torch

    if precision != "auto":
        return precision == "bf16"
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_has_bf16()


def to_tensors(images: np.ndarray, labels: np.ndarray, device: "torch.device") -> tuple["torch.Tensor", "torch.Tensor"]:
    """uint8 [N,28,28] → float32 [N,1,28,28] in [0,1]; labels → int64."""
    import torch

    x = torch.tensor(images, dtype=torch.float32, device=device).div_(255.0)
    return x.unsqueeze(1), torch.tensor(labels, dtype=torch.long, device=device)


def epoch_permutation(n: int, seed: int, epoch: int, device: "torch.device") -> "torch.Tensor":
    """The shuffling order of one epoch: a function of (seed, epoch) only, so resume needs no RNG state."""
    import torch

    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=gen).to(device)


def augment_batch(images: "torch.Tensor", generator: "torch.Generator", max_degrees: float = 10.0,
                  max_shift_px: float = 2.0, scale_range: tuple[float, float] = (0.9, 1.1)) -> "torch.Tensor":
    """A small random affine per image: rotation, shift and scale, like handwriting varies."""
    import torch
    from torch.nn import functional as F

    n, _, h, w = images.shape
    r = torch.rand(n, 4, generator=generator).to(images.device)
    angle = (r[:, 0] * 2 - 1) * math.radians(max_degrees)
    scale = scale_range[0] + r[:, 1] * (scale_range[1] - scale_range[0])
    shift = (r[:, 2:] * 2 - 1) * (2 * max_shift_px / torch.tensor([w, h], device=images.device))
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    # theta maps output coordinates to input coordinates (normalized to [-1, 1])
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def make_optimizer(model: "nn.Module", cfg: TrainConfig) -> "torch.optim.Optimizer":
    import torch

    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    return torch.optim.Adam(model.parameters(), lr=cfg.lr)


def lr_at(step: int, total_steps: int, base_lr: float) -> float:
    """Cosine decay from ``base_lr`` to 0 over the run, after a short linear warm-up."""
    warmup = min(100, max(1, total_steps // 20))
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total_steps - warmup)
    return base_lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def train_step(model: "nn.Module", optimizer: "torch.optim.Optimizer", images: "torch.Tensor",
               labels: "torch.Tensor", bf16: bool = False) -> float:
    import torch
    from torch.nn import functional as F

    model.train()
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=bf16):
        logits = model(images)
    loss = F.cross_entropy(logits.float(), labels)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def evaluate(model: "nn.Module", images: "torch.Tensor", labels: "torch.Tensor",
             batch_size: int = 1000) -> tuple[float, float]:
    """Mean cross-entropy and accuracy in eval mode (population statistics, no dropout)."""
    import torch
    from torch.nn import functional as F

    model.eval()
    total_loss, correct = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            logits = model(images[start:start + batch_size])
            target = labels[start:start + batch_size]
            total_loss += float(F.cross_entropy(logits, target, reduction="sum"))
            correct += int((logits.argmax(1) == target).sum())
    n = max(1, len(images))
    return total_loss / n, correct / n


def batches_of_epoch(n: int, batch_size: int, seed: int, epoch: int, start_batch: int,
                     device: "torch.device") -> Iterator["torch.Tensor"]:
    """Index tensors of one epoch's full batches (the last partial batch is dropped: BN needs >1 sample)."""
    order = epoch_permutation(n, seed, epoch, device)
    for b in range(start_batch, n // batch_size):
        yield order[b * batch_size:(b + 1) * batch_size]


# --------------------------------------------------------------------------- the orchestrator


def _check_resume_compatible(saved: TrainConfig, wanted: TrainConfig, changeable: set[str]) -> TrainConfig:
    """With --resume the saved config is used; only ``changeable`` options may differ."""
    for f in fields(TrainConfig):
        if f.name in changeable:
            continue
        if getattr(saved, f.name) != getattr(wanted, f.name):
            raise PipelineError(
                f"--resume: option {f.name.replace('_', '-')}={getattr(wanted, f.name)!r} differs from the "
                f"checkpoint's {getattr(saved, f.name)!r}; drop it to continue that run, or train into a new --out"
            )
    return replace(saved, **{k: getattr(wanted, k) for k in changeable})


RESUME_CHANGEABLE = {"epochs", "max_steps", "device", "log_every", "eval_every", "precision", "channels_last",
                     "compile", "checkpoint_every_s"}


def train(cfg: TrainConfig, out_dir: Path, *, resume: bool = False, given_options: set[str] | None = None,
          should_stop: Callable[[], bool] = lambda: False, progress: bool = True,
          dataset: Dataset | None = None, on_step: Callable[[int, float], None] | None = None) -> TrainResult:
    """Train (or resume) a run in ``out_dir``; write config.json, metrics.json and checkpoint.pt atomically.

    ``given_options``: the TrainConfig fields the user set explicitly; on resume, the others are taken
    from the checkpoint. ``should_stop`` is polled after every step: when it returns True a resumable
    checkpoint is saved and the function returns with ``interrupted=True``. A non-finite or exploding
    loss ends the run with ``diverged=True``: metrics.json says so, the checkpoint keeps the last
    saved state. ``on_step(step, loss)`` is called after every step.
    """
    import torch

    from models import DigitNet, DigitNetConfig
    from models.sync_bn import convert_sync_batchnorm

    cfg.validate()
    out_dir = Path(out_dir)
    ckpt_path = out_dir / CHECKPOINT_NAME
    state: dict[str, Any] | None = None
    if resume:
        if not ckpt_path.is_file():
            raise PipelineError(f"--resume: no checkpoint at {ckpt_path}")
        state = load_checkpoint(ckpt_path)
        if "train_config" not in state or "optimizer" not in state:
            raise PipelineError(f"--resume: {ckpt_path} holds no training state to resume from")
        saved = TrainConfig.from_dict(state["train_config"])
        wanted = cfg if given_options is None else replace(
            saved, **{k: getattr(cfg, k) for k in given_options if hasattr(cfg, k)})
        cfg = _check_resume_compatible(saved, wanted, RESUME_CHANGEABLE)
        cfg.validate()
    ctx = context_from_environment()
    if ctx.is_main:
        ensure_writable_dir(out_dir)

    if dataset is None:
        dataset = load_dataset(cfg.data, Path(cfg.data_dir) if cfg.data_dir else None)
    device = resolve_device(cfg.device)
    if ctx.enabled:
        device = start(ctx, device, cfg.batch_size)
    train_x, train_y = to_tensors(dataset.train_images, dataset.train_labels, device)
    test_x, test_y = to_tensors(dataset.test_images, dataset.test_labels, device)
    steps_per_epoch = len(train_x) // cfg.batch_size
    if steps_per_epoch < 1:
        raise PipelineError(f"--batch-size {cfg.batch_size} is larger than the training split ({len(train_x)} images)")
    total_steps = cfg.epochs * steps_per_epoch
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)

    torch.manual_seed(cfg.seed)
    if state is None:
        # Normalization constants of this training split, baked into the network (and the exported graph).
        pixels = dataset.train_images.astype(np.float64) / 255.0
        model_cfg = DigitNetConfig(bn=cfg.bn, num_classes=len(dataset.class_names), dropout=cfg.dropout,
                                   normalize_mean=round(float(pixels.mean()), 4),
                                   normalize_std=round(float(pixels.std()), 4))
        model = DigitNet(model_cfg).to(device)
        if ctx.enabled:
            convert_sync_batchnorm(model)  # before the optimizer: conversion makes new parameters
        optimizer = make_optimizer(model, cfg)
        augment_gen = torch.Generator().manual_seed(cfg.seed + 1)
        step, epoch, batch_in_epoch, elapsed = 0, 0, 0, 0.0
        metrics: dict[str, Any] = {"dataset": dataset.name, "log": [], "epochs": []}
    else:
        model = model_from_checkpoint(state, ckpt_path).to(device)
        model_cfg = model.cfg
        if ctx.enabled:
            convert_sync_batchnorm(model)
        optimizer = make_optimizer(model, cfg)
        optimizer.load_state_dict(state["optimizer"])
        augment_gen = torch.Generator()
        augment_gen.set_state(state["rng"]["augment"])
        torch.set_rng_state(state["rng"]["torch"])
        step, epoch, batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        elapsed = float(state["wall_time"])
        metrics = state["metrics"]
        if step >= total_steps:
            raise PipelineError(f"--resume: the run in {out_dir} already finished {step} steps; "
                                f"pass a larger --epochs (or --max-steps) to train further")
        log.info("resuming %s at step %d (epoch %d)", out_dir, step, epoch + 1)

    if ctx.is_main:
        write_json(out_dir / "config.json", {"model": model_cfg.to_dict(), "train": asdict(cfg),
                                             "class_names": list(dataset.class_names)})
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    # `forward_model` (DDP-wrapped and/or compiled) shares parameters with `model`; evaluation and
    # checkpoints use the plain `model`, so checkpoints hold no DDP or Sync wrapper state.
    forward_model = model
    if ctx.enabled:
        from torch.nn.parallel import DistributedDataParallel

        forward_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        torch.manual_seed(cfg.seed * 1_000_003 + 7919 * ctx.rank + step)  # distinct dropout masks per rank
    if cfg.compile:
        forward_model = torch.compile(forward_model)
    local = ctx.local_slice(cfg.batch_size)
    bf16 = use_bf16(cfg.precision, device)
    metrics["precision"] = "bf16" if bf16 else "fp32"
    last_checkpoint = time.perf_counter()

    def checkpoint(complete: bool) -> None:
        if not ctx.is_main:
            return
        save_checkpoint(ckpt_path, {
            "model": model.state_dict(), "config": model_cfg.to_dict(), "train_config": asdict(cfg),
            "class_names": list(dataset.class_names), "optimizer": optimizer.state_dict(),
            "step": step, "epoch": epoch, "batch_in_epoch": batch_in_epoch, "complete": complete,
            "rng": {"torch": torch.get_rng_state(), "augment": augment_gen.get_state()},
            "wall_time": elapsed, "metrics": metrics,
            "loss_window": window, "epoch_losses": epoch_losses,
        })
        write_json(out_dir / "metrics.json", metrics)

    bar = None
    if progress and ctx.is_main:
        from tqdm import tqdm

        bar = tqdm(total=total_steps, initial=step, unit="step", dynamic_ncols=True, leave=True)
    started = time.perf_counter() - elapsed
    # Losses not yet averaged into a log record / an epoch record; kept in checkpoints so a resumed
    # run logs exactly what an uninterrupted one would.
    window: list[float] = list(state["loss_window"]) if state else []
    epoch_losses: list[float] = list(state["epoch_losses"]) if state else []
    interrupted = diverged = False
    try:
        while step < total_steps and not diverged:
            for idx in batches_of_epoch(len(train_x), cfg.batch_size, cfg.seed, epoch, batch_in_epoch, device):
                # every rank augments the whole global batch alike, then trains on its own slice
                images = train_x[idx]
                if cfg.augment:
                    images = augment_batch(images, augment_gen)
                images = images[local].contiguous(memory_format=memory_format)
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(step, total_steps, cfg.lr)
                loss = train_step(forward_model, optimizer, images, train_y[idx][local], bf16=bf16)
                loss, stop_requested = agree(ctx, loss, should_stop(), device)
                step += 1
                batch_in_epoch += 1
                if not math.isfinite(loss) or loss > DIVERGED_LOSS:
                    diverged = True
                    break
                window.append(loss)
                epoch_losses.append(loss)
                if on_step is not None:
                    on_step(step, loss)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(epoch=epoch + 1, loss=f"{loss:.4f}", refresh=False)
                if step % cfg.log_every == 0 or step == total_steps:
                    record = {"step": step, "epoch": epoch + 1, "train_loss": float(np.mean(window)),
                              "lr": optimizer.param_groups[0]["lr"], "wall_time": time.perf_counter() - started}
                    if cfg.eval_every and step % cfg.eval_every == 0 and ctx.is_main:
                        record["test_loss"], record["test_accuracy"] = evaluate(model, test_x, test_y)
                    metrics["log"].append(record)
                    window = []
                if step >= total_steps:
                    break
                if stop_requested:
                    interrupted = True
                    break
            if diverged:
                break
            end_of_epoch = batch_in_epoch >= steps_per_epoch or step >= total_steps
            if end_of_epoch and ctx.is_main:  # evaluated once, on rank 0
                test_loss, test_acc = evaluate(model, test_x, test_y)
                metrics["epochs"].append({
                    "epoch": epoch + 1, "step": step, "train_loss": float(np.mean(epoch_losses)),
                    "test_loss": test_loss, "test_accuracy": test_acc, "wall_time": time.perf_counter() - started,
                })
                if bar is not None:
                    bar.write(f"epoch {epoch + 1}: train loss {np.mean(epoch_losses):.4f}  "
                              f"test loss {test_loss:.4f}  test accuracy {test_acc:.2%}")
            if end_of_epoch:
                epoch_losses = []
                if batch_in_epoch >= steps_per_epoch:
                    epoch, batch_in_epoch = epoch + 1, 0
            if interrupted:
                break
            # the final checkpoint is written after the loop; in between, at most every checkpoint_every_s
            if end_of_epoch and step < total_steps and time.perf_counter() - last_checkpoint >= cfg.checkpoint_every_s:
                elapsed = time.perf_counter() - started
                checkpoint(complete=False)
                last_checkpoint = time.perf_counter()
    finally:
        if bar is not None:
            bar.close()

    elapsed = time.perf_counter() - started
    if interrupted:
        checkpoint(complete=False)
        return TrainResult(out_dir, step, epoch, None, None, elapsed, interrupted=True)
    if diverged:
        log.warning("training diverged at step %d (loss %s)", step, loss)
        metrics.update(diverged=True, diverged_at_step=step, diverged_loss=loss if math.isfinite(loss) else repr(loss),
                       steps=step, wall_time=elapsed,
                       test_accuracy=None, test_loss=None)
        if ctx.is_main:
            write_json(out_dir / "metrics.json", metrics)
        return TrainResult(out_dir, step, epoch, None, None, elapsed, interrupted=False, diverged=True)
    if not ctx.is_main:
        return TrainResult(out_dir, step, epoch, None, None, elapsed, interrupted=False)
    last = metrics["epochs"][-1]
    metrics.update(test_accuracy=last["test_accuracy"], test_loss=last["test_loss"], steps=step,
                   wall_time=elapsed, train_images_per_second=step * cfg.batch_size / max(elapsed, 1e-9))
    checkpoint(complete=True)
    return TrainResult(out_dir, step, epoch, last["test_accuracy"], last["test_loss"], elapsed, interrupted=False)
