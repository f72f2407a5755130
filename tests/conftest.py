from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from pipeline.data import Dataset, load_dataset
from pipeline.train import TrainConfig, train


@pytest.fixture(scope="session")
def sample_dataset() -> Dataset:
    return load_dataset("sample")


@pytest.fixture(scope="session")
def small_dataset(sample_dataset: Dataset) -> Dataset:
    """The first 512 training and 200 test digits of the sample: enough for a few real steps."""
    return dataclasses.replace(
        sample_dataset,
        train_images=sample_dataset.train_images[:512], train_labels=sample_dataset.train_labels[:512],
        test_images=sample_dataset.test_images[:200], test_labels=sample_dataset.test_labels[:200],
    )


def make_run(directory: Path, **overrides) -> Path:
    """A real training run on the embedded sample."""
    cfg = TrainConfig(**{"max_steps": 40, "batch_size": 64, "device": "cpu", "log_every": 10,
                         # fewer generated images than the default, for speed; still 11 classes
                         "stroke_digits": 1000, "non_digits": 1000, **overrides})
    train(cfg, directory, progress=False)
    return directory


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """Six epochs on the sample (~97% test accuracy): non-trivial BN statistics and a useful model."""
    return make_run(tmp_path_factory.mktemp("run") / "bn", max_steps=None, epochs=6)


@pytest.fixture(scope="session")
def exported_run(tmp_path_factory, trained_run: Path) -> Path:
    """A copy of trained_run with model.onnx exported (BN folded) into it."""
    from pipeline.export import export_model

    run = tmp_path_factory.mktemp("exported") / "run"
    shutil.copytree(trained_run, run)
    export_model(run)
    return run


@pytest.fixture
def quick_calibration(monkeypatch: pytest.MonkeyPatch) -> None:
    """Exports in this test calibrate the refusal threshold on a tenth of the validation images (1 s
    instead of 10): for tests of other things. The full calibration is checked on ``exported_run``."""
    from pipeline import export

    monkeypatch.setattr(export, "THRESHOLD_VALIDATION", export.QUICK_THRESHOLD_VALIDATION)
