"""`pipeline compare`: what batch normalization does to training/test loss and convergence, measured.

Trains the BN network and the no-BN network (same initial weights, data order, augmentation and
optimizer for a given seed) for each learning rate and seed, with `pipeline train`'s own `train()`,
then summarizes and plots the curves (test accuracy against steps, as in the BN paper's Figure 1).
"""
from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.artifacts import atomic_path, ensure_writable_dir, write_json
from pipeline.data import Dataset, load_dataset
from pipeline.errors import PipelineError
from pipeline.train import TrainConfig, evaluate, to_tensors, train

VARIANTS = ("bn", "no-bn")
THRESHOLDS = (0.97, 0.98)


@dataclass(frozen=True)
class CompareConfig:
    data: str = "sample"
    data_dir: str | None = None
    epochs: int = 6
    seeds: int = 3
    lrs: tuple[float, ...] = (0.01, 0.1)
    optimizer: str = "sgd"
    batch_size: int = 64
    augment: bool = True
    eval_every: int = 25
    max_steps: int | None = None
    device: str = "auto"

    def validate(self) -> None:
        if self.seeds < 1:
            raise PipelineError(f"--seeds must be at least 1, got {self.seeds}")
        if not self.lrs:
            raise PipelineError("give at least one --lr")
        if self.eval_every < 1:
            raise PipelineError(f"--eval-every must be at least 1, got {self.eval_every}")
        for lr in self.lrs:
            self.train_config("bn", lr, 0).validate()

    def train_config(self, variant: str, lr: float, seed: int) -> TrainConfig:
        return TrainConfig(data=self.data, data_dir=self.data_dir, epochs=self.epochs, batch_size=self.batch_size,
                           lr=lr, optimizer=self.optimizer, seed=seed, bn=variant == "bn", augment=self.augment,
                           device=self.device, max_steps=self.max_steps, log_every=1, eval_every=self.eval_every,
                           # the study is the BN question on the data as given: no generated data,
                           # only the affine augmentation it was measured with
                           augment_real=False, stroke_digits=0, non_digits=0)


@dataclass
class RunRecord:
    variant: str
    lr: float
    seed: int
    directory: str
    diverged: bool
    metrics: dict[str, Any] = field(repr=False)


def run_name(variant: str, lr: float, seed: int) -> str:
    return f"{variant}-lr{lr:g}-seed{seed}"


def steps_to_reach(evaluations: list[dict[str, Any]], threshold: float, key: str = "test_accuracy") -> int | None:
    """The first step at which ``key`` reached ``threshold``, or None if it never did."""
    for record in evaluations:
        value = record.get(key)
        if value is not None and value >= threshold:
            return int(record["step"])
    return None


def smooth(values: list[float], window: int = 25) -> np.ndarray:
    """Trailing moving average (shorter windows at the start)."""
    values_arr = np.asarray(values, dtype=np.float64)
    if len(values_arr) == 0:
        return values_arr
    cumulative = np.cumsum(np.insert(values_arr, 0, 0.0))
    idx = np.arange(1, len(values_arr) + 1)
    start = np.maximum(0, idx - window)
    return (cumulative[idx] - cumulative[start]) / (idx - start)


def evaluations(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in metrics.get("log", []) if "test_accuracy" in r]


def run_summary(metrics: dict[str, Any], diverged: bool) -> dict[str, Any]:
    """``metrics`` from train(), plus ``final_train_eval`` = (loss, accuracy) on the training split in eval mode."""
    evals = evaluations(metrics)
    log = metrics.get("log", [])
    final = evals[-1] if evals else {}
    train_eval = metrics.get("final_train_eval")
    summary = {
        "diverged": diverged,
        "final_test_accuracy": None if diverged else final.get("test_accuracy"),
        "best_test_accuracy": max((r["test_accuracy"] for r in evals), default=None),
        # the running loss, with dropout and augmentation active, over the last 25 steps
        "final_running_train_loss": None if diverged or not log else float(np.mean([r["train_loss"] for r in log[-25:]])),
        # the same network as the test loss: eval mode, no dropout, no augmentation
        "final_train_loss": None if diverged or not train_eval else train_eval[0],
        "final_test_loss": None if diverged else final.get("test_loss"),
    }
    summary["train_test_loss_gap"] = (None if summary["final_test_loss"] is None or summary["final_train_loss"] is None
                                      else summary["final_test_loss"] - summary["final_train_loss"])
    for threshold in THRESHOLDS:
        summary[f"steps_to_{round(threshold * 100)}"] = steps_to_reach(evals, threshold)
    return summary


def mean_std(values: list[float | None]) -> dict[str, Any]:
    """Mean and standard deviation over seeds; None when any seed has no value (and how many have one)."""
    present = [v for v in values if v is not None]
    if len(present) < len(values) or not present:
        return {"mean": None, "std": None, "n": len(present), "of": len(values)}
    return {"mean": statistics.fmean(present), "std": statistics.pstdev(present) if len(present) > 1 else 0.0,
            "n": len(present), "of": len(values)}


def summarize(records: list[RunRecord], cfg: CompareConfig) -> dict[str, Any]:
    groups: dict[str, Any] = {}
    for lr in cfg.lrs:
        for variant in VARIANTS:
            runs = [r for r in records if r.lr == lr and r.variant == variant]
            per_run = [run_summary(r.metrics, r.diverged) for r in runs]
            keys = [k for k in per_run[0] if k != "diverged"] if per_run else []
            groups[f"{variant} lr={lr:g}"] = {
                "variant": variant, "lr": lr, "runs": len(runs),
                "diverged_runs": sum(p["diverged"] for p in per_run),
                **{k: mean_std([p[k] for p in per_run]) for k in keys},
                "per_seed": per_run,
            }
    return {"config": asdict(cfg), "groups": groups}


def format_value(stat: dict[str, Any], percent: bool = False, integer: bool = False) -> str:
    if stat["mean"] is None:
        return f"never ({stat['n']}/{stat['of']} reached)" if integer else f"n/a ({stat['n']}/{stat['of']})"
    if percent:
        return f"{stat['mean']:.2%} ± {stat['std']:.2%}"
    if integer:
        return f"{stat['mean']:.0f} ± {stat['std']:.0f}"
    return f"{stat['mean']:.4f} ± {stat['std']:.4f}"


def summary_markdown(summary: dict[str, Any], wall_time: float) -> str:
    cfg = summary["config"]
    step_limit = "" if cfg["max_steps"] is None else f" (at most {cfg['max_steps']} steps)"
    lines = [
        "# BN vs no-BN",
        "",
        f"Data `{cfg['data']}`, optimizer `{cfg['optimizer']}`, batch {cfg['batch_size']}, {cfg['epochs']} epochs"
        f"{step_limit}, augmentation {'on' if cfg['augment'] else 'off'}, {cfg['seeds']} seed(s); test split evaluated every "
        f"{cfg['eval_every']} steps in eval mode. Mean ± standard deviation over seeds. Took {wall_time:.0f} s.",
        "",
        "Train loss is the final model's loss on the training split in eval mode (as the test loss); running "
        "loss is the training objective over the last 25 steps, with dropout and augmentation.",
        "",
        "| variant | lr | steps to 97% | steps to 98% | final test acc | best test acc | final train loss "
        "| final test loss | test − train loss | running loss | diverged |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for group in summary["groups"].values():
        lines.append(
            f"| {group['variant']} | {group['lr']:g} | {format_value(group['steps_to_97'], integer=True)} "
            f"| {format_value(group['steps_to_98'], integer=True)} "
            f"| {format_value(group['final_test_accuracy'], percent=True)} "
            f"| {format_value(group['best_test_accuracy'], percent=True)} "
            f"| {format_value(group['final_train_loss'])} | {format_value(group['final_test_loss'])} "
            f"| {format_value(group['train_test_loss_gap'])} | {format_value(group['final_running_train_loss'])} "
            f"| {group['diverged_runs']}/{group['runs']} |")
    return "\n".join(lines) + "\n"


def plot_curves(records: list[RunRecord], cfg: CompareConfig, path: Path) -> None:
    """Rows: smoothed training loss, test loss, test accuracy against step; one column per learning rate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"bn": "tab:blue", "no-bn": "tab:orange"}
    labels = {"bn": "with BN", "no-bn": "without BN"}
    rows = [("train_loss", "training loss (smoothed)", True), ("test_loss", "test loss", True),
            ("test_accuracy", "test accuracy", False)]
    fig, axes = plt.subplots(len(rows), len(cfg.lrs), figsize=(5.2 * len(cfg.lrs), 9.5), squeeze=False,
                             sharex="col")
    for col, lr in enumerate(cfg.lrs):
        for variant in VARIANTS:
            runs = [r for r in records if r.lr == lr and r.variant == variant]
            for row, (key, title, log_scale) in enumerate(rows):
                ax = axes[row][col]
                series = []
                for r in runs:
                    source = r.metrics.get("log", []) if key == "train_loss" else evaluations(r.metrics)
                    steps = np.array([rec["step"] for rec in source])
                    values = [rec[key] for rec in source]
                    if key == "train_loss":
                        values = smooth(values)
                    series.append((steps, np.asarray(values, dtype=np.float64)))
                if not series or not len(series[0][0]):
                    continue
                # runs may stop early (divergence): plot the common prefix as mean and min-max band
                length = min(len(s[0]) for s in series)
                steps = series[0][0][:length]
                stacked = np.stack([s[1][:length] for s in series])
                diverged = sum(r.diverged for r in runs)
                label = labels[variant] + (f" ({diverged} diverged)" if diverged else "")
                ax.plot(steps, stacked.mean(0), color=colours[variant], label=label, linewidth=1.5)
                if len(series) > 1:
                    ax.fill_between(steps, stacked.min(0), stacked.max(0), color=colours[variant], alpha=0.2,
                                    linewidth=0)
                if log_scale:
                    ax.set_yscale("log")
                if key == "test_accuracy":
                    low = max(0.0, float(np.nanmin(stacked.mean(0)[len(steps) // 5:], initial=1.0)) - 0.02)
                    ax.set_ylim(min(low, 0.9), 1.0)
                    ax.axhline(0.98, color="grey", linewidth=0.6, linestyle=":")
                ax.set_title(f"{title}, lr {lr:g}", fontsize=10)
                ax.grid(True, alpha=0.3)
        axes[-1][col].set_xlabel("training step")
        axes[0][col].legend(fontsize=9)
    for row, (_, title, _) in enumerate(rows):
        axes[row][0].set_ylabel(title)
    fig.suptitle(f"Batch normalization vs none: {cfg.data}, {cfg.optimizer}, mean and min–max over "
                 f"{cfg.seeds} seed(s)", fontsize=11)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def training_split_loss(run_dir: Path, dataset: Dataset) -> tuple[float, float]:
    """Loss and accuracy of a run's final model on its training split, in eval mode."""
    import torch

    from pipeline.checkpoint import load_checkpoint, model_from_checkpoint

    model = model_from_checkpoint(load_checkpoint(run_dir))
    x, y = to_tensors(dataset.train_images, dataset.train_labels, torch.device("cpu"))
    return evaluate(model, x, y)


@dataclass
class StudyResult:
    out_dir: Path
    summary: dict[str, Any]
    wall_time: float


def run_study(cfg: CompareConfig, out_dir: Path, progress: bool = True) -> StudyResult:
    """Train every (lr, variant, seed) into ``out_dir/runs/`` and write curves.png, summary.json, summary.md."""
    cfg.validate()
    out_dir = ensure_writable_dir(Path(out_dir))
    dataset = load_dataset(cfg.data, Path(cfg.data_dir) if cfg.data_dir else None)
    steps_per_run = cfg.epochs * (len(dataset.train_images) // cfg.batch_size)
    if cfg.max_steps is not None:
        steps_per_run = min(steps_per_run, cfg.max_steps)
    plan = [(lr, variant, seed) for lr in cfg.lrs for seed in range(cfg.seeds) for variant in VARIANTS]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=steps_per_run * len(plan), unit="step", dynamic_ncols=True)
    started = time.perf_counter()
    records = []
    try:
        for lr, variant, seed in plan:
            name = run_name(variant, lr, seed)
            if bar is not None:
                bar.set_description(name)
            done_before = bar.n if bar is not None else 0
            result = train(cfg.train_config(variant, lr, seed), out_dir / "runs" / name, progress=False, overwrite=True,
                           dataset=dataset, on_step=(lambda step, loss: bar.update(1)) if bar is not None else None)
            if bar is not None:  # a diverged run stops early: account for the steps it skipped
                bar.update(done_before + steps_per_run - bar.n)
                if result.diverged:
                    bar.write(f"{name}: diverged at step {result.step}")
            metrics = json.loads((out_dir / "runs" / name / "metrics.json").read_text())
            if not result.diverged:
                metrics["final_train_eval"] = training_split_loss(out_dir / "runs" / name, dataset)
            records.append(RunRecord(variant, lr, seed, str(out_dir / "runs" / name), result.diverged, metrics))
    finally:
        if bar is not None:
            bar.close()
    wall_time = time.perf_counter() - started
    summary = summarize(records, cfg)
    summary["wall_time"] = wall_time
    write_json(out_dir / "summary.json", summary)
    with atomic_path(out_dir / "summary.md") as tmp:
        tmp.write_text(summary_markdown(summary, wall_time))
    plot_curves(records, cfg, out_dir / "curves.png")
    return StudyResult(out_dir, summary, wall_time)
