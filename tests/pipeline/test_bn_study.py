"""The BN study's measurements (pipeline/bn_study.py): the percentile probe, batch-statistics
inference, population-statistics error, the mistake runs, and export refusing what cannot fold."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from models import DigitNet, DigitNetConfig, recompute_bn_statistics
from pipeline.bn_study import (PERCENTILES, batch_statistics_accuracy, drift, mistake_runs, percentile_probe,
                               population_error)
from pipeline.cli import cli
from pipeline.errors import PipelineError
from pipeline.train import TrainConfig, train
from tests.helpers import assert_one_line_error
from tests.models.helpers import capture, images

TINY = DigitNetConfig(conv1_channels=4, conv2_channels=6, hidden=16)


def trained_a_little(model: DigitNet, x: torch.Tensor) -> DigitNet:
    model.train()
    for i in range(0, len(x), 16):
        model(x[i:i + 16])
    return model.eval()


def test_the_probe_reads_the_percentiles_of_the_unit_it_names() -> None:
    torch.manual_seed(0)
    model = trained_a_little(DigitNet(TINY), images(64))
    x = images(40, seed=3)
    record = percentile_probe(x, [2, 9])(model)
    relu_input = capture(model.bn3, model, x).numpy()  # what the ReLU after fc1 and BN receives
    for q in PERCENTILES:
        expected = np.percentile(relu_input[:, [2, 9]], q, axis=0)
        np.testing.assert_allclose(record[f"p{q}"], expected, rtol=1e-5, atol=1e-6)
    assert record["units"] == [2, 9]


def test_drift_measures_the_median_after_the_first_quarter_against_the_final_spread() -> None:
    medians = {0: 0.0, 10: 9.0, 30: 4.0, 40: 3.0}  # step 10 is in the first quarter: left out of the range
    evals = [{"step": step, "probe": {"p15": [m - 1], "p50": [m], "p85": [m + 1]}} for step, m in medians.items()]
    assert drift(evals) == {"median_start": 0.0, "median_end": 3.0, "spread_start": 2.0, "spread_end": 2.0,
                            "median_range_later": 1.0, "range_in_spreads": 0.5}
    assert drift(evals[:1]) is None


def test_batch_statistics_at_inference_by_test_batch_size() -> None:
    torch.manual_seed(0)
    model = trained_a_little(DigitNet(TINY), images(64))
    x, y = images(30, seed=5), torch.arange(30) % 10
    results = batch_statistics_accuracy(model, x, y, batch_sizes=(30, 1))
    # a batch of one normalizes every dense unit to 0: one answer for all, right for a tenth of these labels
    assert results[1]["test_accuracy"] == pytest.approx(0.1)
    assert set(results) == {30, 1} and 0 <= results[30]["test_accuracy"] <= 1
    assert model.bn1.running_mean is not None  # the model itself is left as it was


def test_population_error_is_zero_for_exact_statistics() -> None:
    torch.manual_seed(0)
    data = images(64)
    model = trained_a_little(DigitNet(TINY), data)
    before = population_error(model, data)
    assert before["mean_error_in_std"] > 0.05 and before["log_var_ratio"] > 0.05  # three moving-average steps
    recompute_bn_statistics(model, [data[:32], data[32:]])
    after = population_error(model, data)
    assert after["mean_error_in_std"] < 1e-4 and after["log_var_ratio"] < 1e-4


def test_every_mistake_but_inference_gets_its_own_run_and_eps_both_precisions() -> None:
    runs = dict(mistake_runs(TrainConfig(device="cpu", precision="bf16")))
    assert set(runs) == {"per-position moments", "decay 0.999", "bias after BN", "eps 1e-8", "correct BN, fp32",
                         "eps 1e-8, fp32"}
    assert runs["eps 1e-8, fp32"].bn_mistake == "eps 1e-8" and runs["eps 1e-8, fp32"].precision == "fp32"
    assert runs["correct BN, fp32"].bn_mistake is None
    with pytest.raises(PipelineError, match="unknown BN mistake"):
        TrainConfig(bn_mistake="typo").validate()
    with pytest.raises(PipelineError, match="needs a network with BN"):
        TrainConfig(bn_mistake="eps 1e-8", bn=False).validate()


@pytest.mark.slow
def test_training_records_the_probe_from_step_0_and_a_per_position_run_is_not_exported(tmp_path: Path,
                                                                                       small_dataset) -> None:
    cfg = TrainConfig(max_steps=4, batch_size=32, log_every=1, eval_every=2, device="cpu",
                      stroke_digits=0, non_digits=0, bn_mistake="per-position moments")
    x = torch.tensor(small_dataset.test_images[:20], dtype=torch.float32)[:, None] / 255
    train(cfg, tmp_path, progress=False, dataset=small_dataset, probe=percentile_probe(x, [0, 5]))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["initial_eval"]["step"] == 0 and metrics["initial_eval"]["probe"]["units"] == [0, 5]
    assert [r["step"] for r in metrics["log"] if "probe" in r] == [2, 4]
    result = CliRunner().invoke(cli, ["export", "--run", str(tmp_path)])
    assert_one_line_error(result, "cannot be exported", "per position")
    assert not (tmp_path / "model.onnx").exists()
