from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from pipeline.cli import cli
from pipeline.compare import CompareConfig, mean_std, run_study, smooth, steps_to_reach
from pipeline.errors import PipelineError
from pipeline.train import TrainConfig, train


def test_steps_to_reach_on_a_synthetic_series() -> None:
    series = [{"step": s, "test_accuracy": a} for s, a in [(25, 0.90), (50, 0.969), (75, 0.97), (100, 0.965),
                                                             (125, 0.981)]]
    assert steps_to_reach(series, 0.97) == 75  # reaching it exactly counts; later dips do not matter
    assert steps_to_reach(series, 0.98) == 125
    assert steps_to_reach(series, 0.99) is None  # never
    assert steps_to_reach([], 0.5) is None
    assert steps_to_reach([{"step": 10, "test_accuracy": None}], 0.5) is None


def test_mean_std_over_seeds_and_missing_values() -> None:
    assert mean_std([1.0, 3.0]) == {"mean": 2.0, "std": 1.0, "n": 2, "of": 2}
    assert mean_std([5.0]) == {"mean": 5.0, "std": 0.0, "n": 1, "of": 1}
    assert mean_std([100.0, None]) == {"mean": None, "std": None, "n": 1, "of": 2}


def test_smoothing_is_a_trailing_mean() -> None:
    out = smooth([1.0, 3.0, 5.0, 7.0], window=2)
    np.testing.assert_allclose(out, [1.0, 2.0, 4.0, 6.0])


@pytest.mark.slow
def test_a_tiny_study_writes_every_output(tmp_path: Path, small_dataset) -> None:
    cfg = CompareConfig(epochs=1, seeds=1, lrs=(0.05,), max_steps=6, eval_every=2, device="cpu")
    result = run_study(cfg, tmp_path, progress=False, dataset=small_dataset)
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    with Image.open(tmp_path / "curves.png") as image:
        width, height = image.size
    assert width > 400 and height > 600
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary["groups"]) == {"bn lr=0.05", "no-bn lr=0.05"}
    for group in summary["groups"].values():
        assert group["runs"] == 1 and group["diverged_runs"] == 0
        seed = group["per_seed"][0]
        assert 0 <= seed["final_test_accuracy"] <= 1 and seed["final_train_loss"] > 0
        assert seed["train_test_loss_gap"] == pytest.approx(seed["final_test_loss"] - seed["final_train_loss"])
    md = (tmp_path / "summary.md").read_text()
    assert md.count("\n| bn |") == 2 and md.count("\n| no-bn |") == 2  # the main table and the drift table
    for variant in ("bn", "no-bn"):
        metrics = json.loads((tmp_path / "runs" / f"{variant}-lr0.05-seed0" / "metrics.json").read_text())
        assert [r["step"] for r in metrics["log"]] == [1, 2, 3, 4, 5, 6]  # training loss at every step
        assert [r["step"] for r in metrics["log"] if "test_accuracy" in r] == [2, 4, 6]
    assert result.wall_time > 0
    # Figure 1's panels, and the mistakes at the study's one learning rate
    assert (tmp_path / "distribution.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for group in summary["groups"].values():
        assert [d["unit"] for d in group["unit_drift"]] == [0, 256, 512, 768]
        assert all(d["spread_end"] > 0 and d["range_in_spreads"] >= 0 for d in group["unit_drift"])
    mistakes = summary["mistakes"]
    assert set(mistakes["rows"]) >= {"correct BN", "per-position moments", "decay 0.999", "bias after BN", "eps 1e-8"}
    rows = mistakes["rows"]
    assert rows["bias after BN"]["parameters"] == rows["correct BN"]["parameters"] + 32 + 64 + 1024  # one per BN unit
    assert mistakes["rows"]["per-position moments"]["mean_error_in_std"]["mean"] is None  # nothing per channel
    assert set(mistakes["batch_statistics"]) == {"1000", "100", "10", "1"}  # 1000: one batch of the 200
    assert "## The exercise's BN mistakes" in md and "| per-position moments |" in md


def test_both_variants_see_the_same_data_and_start_from_the_same_weights(tmp_path: Path, small_dataset,
                                                                          monkeypatch) -> None:
    import pipeline.train

    seen: dict[bool, list] = {True: [], False: []}
    real_step = pipeline.train.train_step

    def recording_step(model, optimizer, images, labels, bf16=False):
        has_bn = model.cfg.bn
        if not seen[has_bn]:  # the starting weights, before the first update
            seen[has_bn].append({k: v.clone() for k, v in model.state_dict().items() if k.endswith("weight")})
        seen[has_bn].append((images.clone(), labels.clone()))
        return real_step(model, optimizer, images, labels, bf16)

    monkeypatch.setattr(pipeline.train, "train_step", recording_step)
    cfg = CompareConfig(epochs=1, seeds=1, lrs=(0.05,), max_steps=3, eval_every=3, device="cpu", mistakes=False)
    run_study(cfg, tmp_path, progress=False, dataset=small_dataset)
    (bn_weights, *bn_batches), (plain_weights, *plain_batches) = seen[True], seen[False]
    assert len(bn_batches) == len(plain_batches) == 3
    for (bn_x, bn_y), (plain_x, plain_y) in zip(bn_batches, plain_batches):
        assert torch.equal(bn_x, plain_x) and torch.equal(bn_y, plain_y)  # same images, same augmentation
    for name in ("conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight"):
        assert torch.equal(bn_weights[name], plain_weights[name]), name


def test_a_diverging_run_is_recorded_not_raised(tmp_path: Path) -> None:
    cfg = CompareConfig(epochs=1, seeds=1, lrs=(1e6,), max_steps=20, eval_every=5, device="cpu", augment=False)
    result = run_study(cfg, tmp_path, progress=False)
    groups = result.summary["groups"]
    assert groups["no-bn lr=1e+06"]["diverged_runs"] == 1
    diverged = groups["no-bn lr=1e+06"]["per_seed"][0]
    assert diverged["diverged"] and diverged["final_test_accuracy"] is None
    assert (tmp_path / "curves.png").is_file() and "1/1" in (tmp_path / "summary.md").read_text()
    metrics = json.loads((tmp_path / "runs" / "no-bn-lr1e+06-seed0" / "metrics.json").read_text())
    assert metrics["diverged"] is True and metrics["diverged_at_step"] <= 20


@pytest.mark.slow
def test_train_cli_reports_divergence_in_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["train", "--out", str(tmp_path), "--no-bn", "--optimizer", "sgd", "--lr", "1e6",
                                      "--max-steps", "30", "--quiet", "--no-augment"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "diverged at step" in lines[0] and "lower --lr" in lines[0]


def test_compare_rejects_bad_options(tmp_path: Path) -> None:
    with pytest.raises(PipelineError, match="--seeds"):
        run_study(CompareConfig(seeds=0), tmp_path, progress=False)
    with pytest.raises(PipelineError, match="--lr must be a positive"):
        run_study(CompareConfig(lrs=(0.1, -1.0)), tmp_path, progress=False)
    result = CliRunner().invoke(cli, ["compare", "--out", str(tmp_path), "--epochs", "0"])
    assert result.exit_code == 1 and "--epochs must be at least 1" in result.output


@pytest.mark.slow
def test_same_seed_same_curves(tmp_path: Path, small_dataset) -> None:
    cfg = TrainConfig(max_steps=5, batch_size=32, log_every=1, eval_every=5, device="cpu", bn=False)
    train(cfg, tmp_path / "a", progress=False, dataset=small_dataset)
    train(cfg, tmp_path / "b", progress=False, dataset=small_dataset)
    a = json.loads((tmp_path / "a" / "metrics.json").read_text())["log"]
    b = json.loads((tmp_path / "b" / "metrics.json").read_text())["log"]
    assert [r["train_loss"] for r in a] == [r["train_loss"] for r in b]
