from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.train import TrainConfig, train


def make_run(directory: Path, **overrides) -> Path:
    """A short real training run on the embedded sample (enough for non-trivial BN statistics)."""
    cfg = TrainConfig(**{"max_steps": 40, "batch_size": 64, "device": "cpu", "log_every": 10, **overrides})
    train(cfg, directory, progress=False)
    return directory


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("run") / "bn")


@pytest.fixture(scope="session")
def exported_run(tmp_path_factory, trained_run: Path) -> Path:
    """A copy of trained_run with model.onnx exported (folded) into it."""
    import shutil

    from pipeline.export import export_model

    run = tmp_path_factory.mktemp("exported") / "run"
    shutil.copytree(trained_run, run)
    export_model(run)
    return run
