from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from pipeline.checkpoint import load_checkpoint, model_from_checkpoint
from pipeline.errors import PipelineError
from pipeline.train import TrainConfig, augment_batch, evaluate, lr_at, to_tensors, train

# the loop's own behaviour, on the data as given (generated data is tested in test_data and by the fixtures)
FAST = TrainConfig(epochs=2, batch_size=32, log_every=4, eval_every=8, device="cpu", stroke_digits=0, non_digits=0)


def without_times(metrics: dict) -> dict:
    drop = {"wall_time", "train_images_per_second"}
    clean = {k: v for k, v in metrics.items() if k not in drop}
    for key in ("log", "epochs"):
        clean[key] = [{k: v for k, v in r.items() if k not in drop} for r in metrics[key]]
    return clean


def test_same_seed_gives_identical_metrics_and_weights(tmp_path: Path, small_dataset) -> None:
    cfg = TrainConfig(**{**FAST.__dict__, "max_steps": 20})
    a = train(cfg, tmp_path / "a", progress=False, dataset=small_dataset)
    b = train(cfg, tmp_path / "b", progress=False, dataset=small_dataset)
    ca, cb = load_checkpoint(tmp_path / "a"), load_checkpoint(tmp_path / "b")
    assert without_times(ca["metrics"]) == without_times(cb["metrics"])
    for k in ca["model"]:
        assert torch.equal(ca["model"][k], cb["model"][k]), k
    assert a.test_accuracy == b.test_accuracy
    c = train(TrainConfig(**{**cfg.__dict__, "seed": 1}), tmp_path / "c", progress=False, dataset=small_dataset)
    assert without_times(load_checkpoint(tmp_path / "c")["metrics"]) != without_times(ca["metrics"])
    assert c.step == 20


def test_metrics_record_steps_epochs_and_the_final_accuracy(tmp_path: Path, small_dataset) -> None:
    result = train(FAST, tmp_path, progress=False, dataset=small_dataset)
    import json

    metrics = json.loads((tmp_path / "metrics.json").read_text())
    steps_per_epoch = 512 // 32
    assert result.step == 2 * steps_per_epoch
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2]
    assert [r["step"] for r in metrics["log"]] == list(range(4, 33, 4))
    assert all("test_accuracy" in r for r in metrics["log"] if r["step"] % 8 == 0)
    assert metrics["test_accuracy"] == metrics["epochs"][-1]["test_accuracy"] == result.test_accuracy
    for record in metrics["epochs"]:
        assert set(record) == {"epoch", "step", "train_loss", "test_loss", "test_accuracy", "wall_time"}
        assert 0 <= record["test_accuracy"] <= 1 and math.isfinite(record["train_loss"])
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["train"]["batch_size"] == 32 and config["model"]["bn"] is True
    # training actually learns: loss falls from ln(10)
    assert metrics["epochs"][-1]["train_loss"] < 1.5


def test_checkpoint_round_trip_rebuilds_the_same_model(tmp_path: Path, small_dataset) -> None:
    train(TrainConfig(**{**FAST.__dict__, "max_steps": 6}), tmp_path, progress=False, dataset=small_dataset)
    # the file loads with the safe unpickler on its own, too
    raw = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert set(raw["config"]) >= {"bn", "bn_eps", "bn_momentum", "normalize_mean", "normalize_std"}
    model = model_from_checkpoint(load_checkpoint(tmp_path / "checkpoint.pt"))
    assert not model.training
    x, y = to_tensors(small_dataset.test_images, small_dataset.test_labels, torch.device("cpu"))
    loss, acc = evaluate(model, x, y)
    assert acc == pytest.approx(raw["metrics"]["test_accuracy"])
    assert loss == pytest.approx(raw["metrics"]["test_loss"], rel=1e-6)


@pytest.mark.parametrize("stop_at", [5, 16])  # mid-epoch, and exactly at an epoch boundary
def test_resume_after_interruption_continues_exactly(tmp_path: Path, small_dataset, stop_at: int) -> None:
    full = train(FAST, tmp_path / "full", progress=False, dataset=small_dataset)

    polls = {"n": 0}

    def should_stop() -> bool:  # polled once after every step
        polls["n"] += 1
        return polls["n"] >= stop_at

    part = train(FAST, tmp_path / "run", progress=False, dataset=small_dataset, should_stop=should_stop)
    assert part.interrupted and part.step == stop_at
    saved = load_checkpoint(tmp_path / "run")
    assert saved["complete"] is False and saved["step"] == part.step
    resumed = train(FAST, tmp_path / "run", resume=True, progress=False, dataset=small_dataset)
    assert not resumed.interrupted and resumed.step == full.step
    a, b = load_checkpoint(tmp_path / "full"), load_checkpoint(tmp_path / "run")
    assert without_times(a["metrics"]) == without_times(b["metrics"])
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


def test_resume_refuses_missing_and_incompatible_checkpoints(tmp_path: Path, small_dataset) -> None:
    with pytest.raises(PipelineError, match="no checkpoint"):
        train(FAST, tmp_path / "none", resume=True, progress=False, dataset=small_dataset)
    train(TrainConfig(**{**FAST.__dict__, "max_steps": 3}), tmp_path / "r", progress=False, dataset=small_dataset)
    with pytest.raises(PipelineError, match="bn=False differs"):
        train(TrainConfig(**{**FAST.__dict__, "bn": False}), tmp_path / "r", resume=True,
              given_options={"bn"}, progress=False, dataset=small_dataset)
    (tmp_path / "r" / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(PipelineError, match="not a readable checkpoint"):
        train(FAST, tmp_path / "r", resume=True, progress=False, dataset=small_dataset)


def test_resume_of_a_finished_run_asks_for_more_epochs(tmp_path: Path, small_dataset) -> None:
    cfg = TrainConfig(**{**FAST.__dict__, "epochs": 1})
    train(cfg, tmp_path, progress=False, dataset=small_dataset)
    with pytest.raises(PipelineError, match="already finished"):
        train(cfg, tmp_path, resume=True, given_options=set(), progress=False, dataset=small_dataset)
    more = train(TrainConfig(**{**cfg.__dict__, "epochs": 2}), tmp_path, resume=True, given_options={"epochs"},
                 progress=False, dataset=small_dataset)
    assert more.step == 2 * (512 // 32) and more.epoch == 2


@pytest.mark.parametrize("change, message", [
    ({"epochs": 0}, "--epochs must be at least 1"),
    ({"lr": -0.1}, "--lr must be a positive number"),
    ({"lr": float("nan")}, "--lr must be a positive number"),
    ({"batch_size": 1}, "--batch-size must be at least 2"),
    ({"max_steps": 0}, "--max-steps"),
])
def test_bad_options_are_rejected(tmp_path: Path, change: dict, message: str) -> None:
    with pytest.raises(PipelineError, match=message):
        train(TrainConfig(**{**FAST.__dict__, **change}), tmp_path, progress=False)


def test_augmentation_is_a_small_label_preserving_affine() -> None:
    x = torch.zeros(4, 1, 28, 28)
    x[:, :, 10:18, 12:16] = 1.0
    out = augment_batch(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and not torch.equal(out, x)
    # mass roughly preserved (scale 0.9–1.1 changes area by at most ~21%)
    ratio = out.sum(dim=(1, 2, 3)) / x.sum(dim=(1, 2, 3))
    assert ((ratio > 0.75) & (ratio < 1.3)).all()
    identity = augment_batch(x, torch.Generator().manual_seed(0), max_degrees=0, max_shift_px=0, scale_range=(1, 1))
    torch.testing.assert_close(identity, x, atol=1e-5, rtol=0)


def test_learning_rate_schedule_warms_up_then_decays_to_zero() -> None:
    total, base = 1000, 0.01
    lrs = [lr_at(s, total, base) for s in range(total)]
    assert lrs[0] < lrs[49] == pytest.approx(base)
    assert max(lrs) == pytest.approx(base)
    assert all(a >= b for a, b in zip(lrs[50:], lrs[51:]))
    assert lrs[-1] < base * 1e-3


def test_speed_options_still_give_a_float32_checkpoint(tmp_path: Path, small_dataset) -> None:
    cfg = TrainConfig(**{**FAST.__dict__, "max_steps": 4, "precision": "bf16", "channels_last": True})
    result = train(cfg, tmp_path, progress=False, dataset=small_dataset)
    assert result.step == 4 and result.test_accuracy is not None and 0 <= result.test_accuracy <= 1
    ckpt = load_checkpoint(tmp_path)
    assert ckpt["metrics"]["precision"] == "bf16"
    assert all(v.dtype in (torch.float32, torch.int64) for v in ckpt["model"].values())
    model = model_from_checkpoint(ckpt)
    x, y = to_tensors(small_dataset.test_images, small_dataset.test_labels, torch.device("cpu"))
    assert evaluate(model, x, y)[1] == pytest.approx(result.test_accuracy)


def test_precision_auto_follows_the_hardware(monkeypatch) -> None:
    import pipeline.train as train_module

    cpu = torch.device("cpu")
    monkeypatch.setattr(train_module, "cpu_has_bf16", lambda: True)
    assert train_module.use_bf16("auto", cpu) and not train_module.use_bf16("fp32", cpu)
    monkeypatch.setattr(train_module, "cpu_has_bf16", lambda: False)
    assert not train_module.use_bf16("auto", cpu) and train_module.use_bf16("bf16", cpu)


@pytest.mark.slow
def test_checkpoints_follow_the_interval(tmp_path: Path, small_dataset, monkeypatch) -> None:
    import pipeline.train as train_module

    saved = []
    real = train_module.save_checkpoint

    def recording_save(path, payload):
        saved.append(payload["step"])
        return real(path, payload)

    monkeypatch.setattr(train_module, "save_checkpoint", recording_save)
    train(TrainConfig(**{**FAST.__dict__, "epochs": 3, "checkpoint_every_s": 0}), tmp_path / "a", progress=False,
          dataset=small_dataset)
    assert saved == list(range(1, 49))  # after every step (interval 0), the last one being the final checkpoint
    saved.clear()
    train(TrainConfig(**{**FAST.__dict__, "epochs": 3, "checkpoint_every_s": 3600}), tmp_path / "b", progress=False,
          dataset=small_dataset)
    assert saved == [48]  # only the final one


def test_checkpoints_are_written_mid_epoch_when_due(tmp_path: Path, small_dataset) -> None:
    seen = []

    def on_step(step: int, loss: float) -> None:
        if step > 1:  # the checkpoint of the step before is on disk by now
            seen.append((step, load_checkpoint(tmp_path)["step"]))

    cfg = TrainConfig(**{**FAST.__dict__, "max_steps": 5, "checkpoint_every_s": 0.0})
    train(cfg, tmp_path, progress=False, dataset=small_dataset, on_step=on_step)
    assert 5 < 512 // cfg.batch_size  # all within the first epoch
    assert seen == [(s, s - 1) for s in range(2, 6)]
