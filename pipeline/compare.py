"""`pipeline compare`: what batch normalization does to training/test loss and convergence, measured.

Trains the BN network and the no-BN network (same initial weights, data order, augmentation and
optimizer for a given seed) for each learning rate and seed, with `pipeline train`'s own `train()`,
then summarizes and plots the curves (test accuracy against steps, as in the BN paper's Figure 1),
with the percentiles of a few hidden units' inputs over training (Figure 1's other panels). Then,
unless turned off, the exercise's BN mistakes as variants of the BN run (pipeline/bn_study.py).
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
from pipeline.bn_study import (PERCENTILES, PROBE_IMAGES, TEST_BATCH_SIZES, batch_statistics_accuracy, drift,
                               mistake_runs, percentile_probe, population_error, probe_units)
from pipeline.train import TrainConfig, evaluate, to_tensors, train

VARIANTS = ("bn", "no-bn")
COLOURS = {"bn": "tab:blue", "no-bn": "tab:orange"}  # of each variant in every figure
LABELS = {"bn": "with BN", "no-bn": "without BN"}
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
    mistakes: bool = True  # also train the exercise's BN mistakes (pipeline/bn_study.py)
    mistake_lr: float | None = None  # their learning rate (default: the largest of lrs)

    @property
    def lr_of_mistakes(self) -> float:
        return self.mistake_lr if self.mistake_lr is not None else max(self.lrs)

    def validate(self) -> None:
        if self.seeds < 1:
            raise PipelineError(f"--seeds must be at least 1, got {self.seeds}")
        if not self.lrs:
            raise PipelineError("give at least one --lr")
        if self.eval_every < 1:
            raise PipelineError(f"--eval-every must be at least 1, got {self.eval_every}")
        for lr in self.lrs:
            self.train_config("bn", lr, 0).validate()
        if self.mistakes:
            self.train_config("bn", self.lr_of_mistakes, 0).validate()

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
    """Every evaluation of a run in step order, the one before training (step 0) first."""
    initial = [metrics["initial_eval"]] if "initial_eval" in metrics else []
    return initial + [r for r in metrics.get("log", []) if "test_accuracy" in r]


def run_summary(metrics: dict[str, Any], diverged: bool) -> dict[str, Any]:
    """``metrics`` from train(), plus ``final_train_eval`` = (loss, accuracy) on the training split in eval mode."""
    evals = evaluations(metrics)
    log = metrics.get("log", [])
    # the final model's (evaluated at the end of training); the last periodic evaluation may be earlier
    final = metrics if metrics.get("test_accuracy") is not None else (evals[-1] if evals else {})
    train_eval = metrics.get("final_train_eval")
    summary = {
        "diverged": diverged,
        "final_test_accuracy": None if diverged else final.get("test_accuracy"),
        "best_test_accuracy": max((r["test_accuracy"] for r in evals), default=None),
        # the running loss, with dropout and augmentation active, over the last 25 steps
        "final_running_train_loss": None if diverged or not log
        else float(np.mean([r["train_loss"] for r in log[-25:]])),
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
                "unit_drift": unit_drift([r for r in runs if r.seed == 0]),
            }
    return {"config": asdict(cfg), "groups": groups}


def unit_drift(runs: list[RunRecord]) -> list[dict[str, float]]:
    """How each probed unit's input distribution moved during the first of ``runs`` (bn_study.drift)."""
    if not runs or runs[0].diverged:
        return []
    evals = evaluations(runs[0].metrics)
    probed = next((e["probe"] for e in evals if "probe" in e), None)
    if probed is None:
        return []
    return [{"unit": unit, **(drift(evals, i) or {})} for i, unit in enumerate(probed["units"])]


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
        f"{step_limit}, augmentation {'on' if cfg['augment'] else 'off'}, {cfg['seeds']} seed(s); "
        "test split evaluated every "
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
    lines += drift_markdown(summary)
    if "mistakes" in summary:
        lines += mistakes_markdown(summary["mistakes"], cfg)
    return "\n".join(lines) + "\n"


def drift_markdown(summary: dict[str, Any]) -> list[str]:
    lines = ["", "## A hidden unit's input over training (the BN paper's Figure 1, distribution.png)", "",
             f"Percentiles of the last hidden layer's pre-activation (its ReLU's input) on {PROBE_IMAGES} fixed test "
             "images, eval mode, seed 0. Later range: how far the median ranges (max − min) after the first quarter "
             "of training, in units of the final 15th–85th percentile spread (this unit; mean over the probed "
             "units).", "",
             "| variant | lr | unit | median start → end | 15–85 spread start → end | median's later range "
             "| in spreads (this unit; mean of units) |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for group in summary["groups"].values():
        drifts = [d for d in group.get("unit_drift", []) if "median_start" in d]
        if not drifts:
            continue
        first = drifts[0]
        mean_range = statistics.fmean(d["range_in_spreads"] for d in drifts)
        lines.append(f"| {group['variant']} | {group['lr']:g} | {first['unit']} "
                     f"| {first['median_start']:.2f} → {first['median_end']:.2f} "
                     f"| {first['spread_start']:.2f} → {first['spread_end']:.2f} "
                     f"| {first['median_range_later']:.2f} | {first['range_in_spreads']:.2f}; {mean_range:.2f} |")
    return lines


def mistakes_markdown(mistakes: dict[str, Any], cfg: dict[str, Any]) -> list[str]:
    correct = mistakes["rows"]["correct BN"]
    reference = correct["test_accuracy"]["mean"]
    lines = ["", f"## The exercise's BN mistakes (lr {mistakes['lr']:g}, {cfg['seeds']} seed(s), same initial weights)",
             "", "Population statistics off by: mean |running − exact mean| in exact standard deviations, and mean "
             "|log(running var / exact var)|, over every BN channel (exact: recomputed over the training split).", "",
             "| variant | test accuracy | vs correct | test loss | population statistics off by (mean; var) "
             "| parameters | diverged |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, row in mistakes["rows"].items():
        accuracy = row["test_accuracy"]["mean"]
        delta = "" if accuracy is None or reference is None or name == "correct BN" else \
            f"{(accuracy - reference) * 100:+.2f} points"
        off = "n/a (no per-channel statistics)" if row["mean_error_in_std"]["mean"] is None else \
            f"{format_value(row['mean_error_in_std'])}; {format_value(row['log_var_ratio'])}"
        lines.append(f"| {name} | {format_value(row['test_accuracy'], percent=True)} | {delta} "
                     f"| {format_value(row['test_loss'])} | {off} | {row['parameters'] or 'n/a'} "
                     f"| {row['diverged_runs']}/{row['runs']} |")
    lines += ["", "Batch statistics at inference: the correct runs' weights, each test batch normalized with its own "
              "statistics (the exercise's inference), against the population statistics:", "",
              "| test batch size | test accuracy | test loss |", "| --- | --- | --- |",
              f"| population statistics (any size) | {format_value(correct['test_accuracy'], percent=True)} "
              f"| {format_value(correct['test_loss'])} |"]
    for size, row in mistakes["batch_statistics"].items():
        lines.append(f"| {size} | {format_value(row['test_accuracy'], percent=True)} "
                     f"| {format_value(row['test_loss'])} |")
    return lines


def plot_curves(records: list[RunRecord], cfg: CompareConfig, path: Path) -> None:
    """Rows: smoothed training loss, test loss, test error against step; one column per learning rate.
    Test error (1 - accuracy) on a log axis shows the first evaluations and the last tenths of a
    point alike, where an accuracy axis would crop one or flatten the other."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [("train_loss", "training loss (smoothed)"), ("test_loss", "test loss"),
            ("test_error", "test error (1 − accuracy)")]
    fig, axes = plt.subplots(len(rows), len(cfg.lrs), figsize=(5.2 * len(cfg.lrs), 9.5), squeeze=False,
                             sharex="col")
    for col, lr in enumerate(cfg.lrs):
        for variant in VARIANTS:
            runs = [r for r in records if r.lr == lr and r.variant == variant]
            for row, (key, title) in enumerate(rows):
                ax = axes[row][col]
                series = [curve(r.metrics, key) for r in runs]
                if not series or not len(series[0][0]):
                    continue
                # runs may stop early (divergence): plot the common prefix as mean and min-max band
                length = min(len(s[0]) for s in series)
                steps = series[0][0][:length]
                stacked = np.stack([s[1][:length] for s in series])
                diverged = sum(r.diverged for r in runs)
                label = LABELS[variant] + (f" ({diverged} diverged)" if diverged else "")
                ax.plot(steps, stacked.mean(0), color=COLOURS[variant], label=label, linewidth=1.5)
                if len(series) > 1:
                    ax.fill_between(steps, stacked.min(0), stacked.max(0), color=COLOURS[variant], alpha=0.2,
                                    linewidth=0)
                ax.set_yscale("log")
                ax.set_title(f"{title}, lr {lr:g}", fontsize=10)
                ax.grid(True, alpha=0.3)
        for threshold in THRESHOLDS:
            error = 1 - threshold
            axes[-1][col].axhline(error, color="grey", linewidth=0.7, linestyle=":")
            axes[-1][col].annotate(f"{threshold:.0%} accuracy", (0.99, error), xycoords=("axes fraction", "data"),
                                   ha="right", va="bottom", fontsize=8, color="grey")
        axes[-1][col].set_xlabel("training step")
        axes[0][col].legend(fontsize=9)
    for row, (_, title) in enumerate(rows):
        axes[row][0].set_ylabel(title)
    spread = f"mean and min–max over {cfg.seeds} seeds" if cfg.seeds > 1 else "one seed"
    fig.suptitle(f"Batch normalization vs none: {cfg.data}, {cfg.optimizer}, {spread}", fontsize=11)
    fig.tight_layout()
    save_figure(fig, path)


def curve(metrics: dict[str, Any], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of one run: the smoothed training loss, or an evaluated quantity."""
    if key == "train_loss":
        log = metrics.get("log", [])
        return np.array([r["step"] for r in log]), smooth([r["train_loss"] for r in log])
    evals = evaluations(metrics)
    values = [1 - r["test_accuracy"] if key == "test_error" else r[key] for r in evals]
    return np.array([r["step"] for r in evals]), np.asarray(values, dtype=np.float64)


def save_figure(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def plot_distributions(records: list[RunRecord], cfg: CompareConfig, path: Path) -> None:
    """The BN paper's Figure 1 on this network, seed 0, one row per learning rate: test error against
    steps with and without BN, then the 15th/50th/85th percentiles of one hidden unit's input
    (before its ReLU, on the fixed probe batch, eval mode) without BN and with BN."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(cfg.lrs), 3, figsize=(14, 3.6 * len(cfg.lrs)), squeeze=False)
    for row, lr in enumerate(cfg.lrs):
        runs = {r.variant: r for r in records if r.lr == lr and r.seed == 0}
        ax = axes[row][0]
        for variant, run in runs.items():
            steps, error = curve(run.metrics, "test_error")
            ax.plot(steps, error, color=COLOURS[variant], label=LABELS[variant])
        ax.set_yscale("log")
        ax.set_title(f"(a) test error, lr {lr:g}", fontsize=10)
        ax.set_ylabel("test error (1 − accuracy)")
        ax.legend(fontsize=9)
        for col, variant in ((1, "no-bn"), (2, "bn")):
            ax = axes[row][col]
            probed = [e for e in evaluations(runs[variant].metrics) if "probe" in e] if variant in runs else []
            if not probed:
                continue
            probe_steps = [e["step"] for e in probed]
            unit = probed[0]["probe"]["units"][0]
            for q, style in zip(PERCENTILES, (":", "-", "--")):
                ax.plot(probe_steps, [e["probe"][f"p{q}"][0] for e in probed], color=COLOURS[variant], linestyle=style,
                        label=f"{q}th percentile")
            ax.axhline(0, color="grey", linewidth=0.6)
            ax.set_title(f"({'b' if col == 1 else 'c'}) {LABELS[variant]}: input of hidden unit {unit}, lr {lr:g}",
                         fontsize=10)
            ax.legend(fontsize=8)
        for ax in axes[row]:
            ax.grid(True, alpha=0.3)
            ax.set_xlabel("training step")
    fig.suptitle(f"As in the BN paper's Figure 1: {cfg.data}, {cfg.optimizer}, seed 0; percentiles over "
                 f"{PROBE_IMAGES} fixed test images", fontsize=11)
    fig.tight_layout()
    save_figure(fig, path)


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


@dataclass
class Job:
    """One training run of the study: its record's name, variant, lr and seed, and its config."""
    name: str
    variant: str
    lr: float
    seed: int
    config: TrainConfig


def study_jobs(cfg: CompareConfig) -> tuple[list[Job], list[Job]]:
    """The BN vs no-BN runs, and the mistake runs (each mistake per seed; variant = the mistake's row)."""
    main = [Job(run_name(variant, lr, seed), variant, lr, seed, cfg.train_config(variant, lr, seed))
            for lr in cfg.lrs for seed in range(cfg.seeds) for variant in VARIANTS]
    if not cfg.mistakes:
        return main, []
    lr = cfg.lr_of_mistakes
    mistakes = []
    for seed in range(cfg.seeds):
        base = cfg.train_config("bn", lr, seed)
        if lr not in cfg.lrs:  # the correct reference at this rate is not among the main runs
            mistakes.append(Job(run_name("bn", lr, seed), "bn", lr, seed, base))
        for row, config in mistake_runs(base):
            mistakes.append(Job(f"{row.replace(' ', '-').replace(',', '')}-seed{seed}", row, lr, seed, config))
    return main, mistakes


def run_study(cfg: CompareConfig, out_dir: Path, progress: bool = True, dataset: Dataset | None = None) -> StudyResult:
    """Train every job into ``out_dir/runs/`` and write curves.png, distribution.png, summary.json, summary.md.
    ``dataset``: instead of loading ``cfg.data`` (tests pass a small one)."""
    import torch

    from models import DigitNetConfig

    cfg.validate()
    out_dir = ensure_writable_dir(Path(out_dir))
    if dataset is None:
        dataset = load_dataset(cfg.data, Path(cfg.data_dir) if cfg.data_dir else None)
    steps_per_run = cfg.epochs * (len(dataset.train_images) // cfg.batch_size)
    if cfg.max_steps is not None:
        steps_per_run = min(steps_per_run, cfg.max_steps)
    main_jobs, mistake_jobs = study_jobs(cfg)
    test_x, _ = to_tensors(dataset.test_images[:PROBE_IMAGES], dataset.test_labels[:PROBE_IMAGES], torch.device("cpu"))
    probe = percentile_probe(test_x, probe_units(DigitNetConfig().hidden))
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=steps_per_run * (len(main_jobs) + len(mistake_jobs)), unit="step", dynamic_ncols=True)
    started = time.perf_counter()
    try:
        records = [train_job(job, out_dir, dataset, steps_per_run, bar, probe) for job in main_jobs]
        mistake_records = [train_job(job, out_dir, dataset, steps_per_run, bar, None) for job in mistake_jobs]
    finally:
        if bar is not None:
            bar.close()
    summary = summarize(records, cfg)
    if cfg.mistakes:
        summary["mistakes"] = summarize_mistakes(records + mistake_records, cfg, dataset)
    wall_time = time.perf_counter() - started
    summary["wall_time"] = wall_time
    write_json(out_dir / "summary.json", summary)
    with atomic_path(out_dir / "summary.md") as tmp:
        tmp.write_text(summary_markdown(summary, wall_time))
    plot_curves(records, cfg, out_dir / "curves.png")
    plot_distributions(records, cfg, out_dir / "distribution.png")
    return StudyResult(out_dir, summary, wall_time)


def train_job(job: Job, out_dir: Path, dataset: Dataset, steps_per_run: int, bar: Any, probe: Any) -> RunRecord:
    directory = out_dir / "runs" / job.name
    if bar is not None:
        bar.set_description(job.name)
    done_before = bar.n if bar is not None else 0
    result = train(job.config, directory, progress=False, overwrite=True, dataset=dataset, probe=probe,
                   on_step=(lambda step, loss: bar.update(1)) if bar is not None else None)
    if bar is not None:  # a diverged run stops early: account for the steps it skipped
        bar.update(done_before + steps_per_run - bar.n)
        if result.diverged:
            bar.write(f"{job.name}: diverged at step {result.step}")
    metrics = json.loads((directory / "metrics.json").read_text())
    if not result.diverged:
        metrics["final_train_eval"] = training_split_loss(directory, dataset)
    return RunRecord(job.variant, job.lr, job.seed, str(directory), result.diverged, metrics)


def summarize_mistakes(records: list[RunRecord], cfg: CompareConfig, dataset: Dataset) -> dict[str, Any]:
    """Per mistake (and the correct BN at the same rate): test accuracy and loss, how far the
    population statistics are from the data, parameters; and the correct runs' weights evaluated
    with batch statistics at several test batch sizes."""
    import torch

    from pipeline.checkpoint import load_checkpoint, model_from_checkpoint

    lr = cfg.lr_of_mistakes
    cpu = torch.device("cpu")
    train_x, _ = to_tensors(dataset.train_images, dataset.train_labels, cpu)
    test_x, test_y = to_tensors(dataset.test_images, dataset.test_labels, cpu)
    rows: dict[str, Any] = {}
    batch_stats: dict[int, list[dict[str, float]]] = {size: [] for size in TEST_BATCH_SIZES}
    names = ["bn"] + list(dict.fromkeys(r.variant for r in records if r.variant not in VARIANTS))
    for name in names:
        runs = [r for r in records if r.variant == name and r.lr == lr]
        per_seed = []
        for run in runs:
            entry: dict[str, Any] = {"diverged": run.diverged, "test_accuracy": run.metrics.get("test_accuracy"),
                                     "test_loss": run.metrics.get("test_loss")}
            if not run.diverged:
                model = model_from_checkpoint(load_checkpoint(Path(run.directory))).eval()
                entry["parameters"] = sum(p.numel() for p in model.parameters())
                if model.cfg.why_not_foldable() is None:
                    entry.update(population_error(model, train_x))
                if name == "bn":
                    for size, result in batch_statistics_accuracy(model, test_x, test_y).items():
                        batch_stats[size].append(result)
            per_seed.append(entry)
        keys = ("test_accuracy", "test_loss", "mean_error_in_std", "log_var_ratio")
        rows["correct BN" if name == "bn" else name] = {
            "runs": len(runs), "diverged_runs": sum(e["diverged"] for e in per_seed),
            "parameters": next((e["parameters"] for e in per_seed if "parameters" in e), None),
            **{k: mean_std([e.get(k) for e in per_seed]) for k in keys}, "per_seed": per_seed}
    return {"lr": lr, "rows": rows,
            "batch_statistics": {str(size): {k: mean_std([r[k] for r in results])
                                             for k in ("test_accuracy", "test_loss")}
                                 for size, results in batch_stats.items()}}
