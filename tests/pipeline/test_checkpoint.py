"""Checkpoints are untrusted files: damaged ones are refused in one line, and export names the bytes it
really loaded (pipeline/checkpoint.py, pipeline/export.py)."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner

import pipeline.export as export_module
from pipeline.checkpoint import load_checkpoint, save_checkpoint
from pipeline.cli import cli
from pipeline.errors import PipelineError
from pipeline.export import export_model
from tests.helpers import assert_one_line_error


def copy_run(trained_run: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    return run


def test_flipped_bytes_inside_the_weights_are_refused(trained_run: Path, tmp_path: Path) -> None:
    run = copy_run(trained_run, tmp_path)
    path = run / "checkpoint.pt"
    data = bytearray(path.read_bytes())
    weights = load_checkpoint(run)["model"]["fc1.weight"].numpy().tobytes()
    at = data.find(weights[:64])
    assert at > 0  # the tensor's bytes are stored as they are in the zip
    data[at + 4096:at + 4112] = bytes(b ^ 0xFF for b in data[at + 4096:at + 4112])
    path.write_bytes(bytes(data))
    with pytest.raises(PipelineError, match="do not match their checksum"):
        load_checkpoint(run)
    assert_one_line_error(CliRunner().invoke(cli, ["export", "--run", str(run)]), "damaged")
    assert not (run / "model.onnx").exists()


@pytest.mark.parametrize("content", [b"", bytes(np.random.default_rng(0).integers(0, 256, 4096, np.uint8)),
                                     b"PK\x03\x04" + bytes(2000)])
def test_random_bytes_are_one_line_errors_for_export_and_resume(trained_run: Path, tmp_path: Path,
                                                               content: bytes) -> None:
    run = copy_run(trained_run, tmp_path)
    (run / "checkpoint.pt").write_bytes(content)
    assert_one_line_error(CliRunner().invoke(cli, ["export", "--run", str(run)]), "not a readable checkpoint")
    assert_one_line_error(CliRunner().invoke(cli, ["train", "--out", str(run), "--resume", "--quiet"]),
                          "not a readable checkpoint")


def test_weights_that_miss_the_recorded_accuracy_are_not_exported(trained_run: Path, tmp_path: Path) -> None:
    run = copy_run(trained_run, tmp_path)
    ckpt = load_checkpoint(run)
    assert ckpt["complete"] and ckpt["metrics"]["test_accuracy"] > 0.9
    ckpt["model"]["fc2.bias"][3] += 50.0  # checksum recomputed on save: only the accuracy can tell
    save_checkpoint(run / "checkpoint.pt", {k: v for k, v in ckpt.items() if k not in ("format", "version")})
    with pytest.raises(PipelineError, match=r"give \d+\.\d+% on the test split, but the run recorded"):
        export_model(run, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.slow
@pytest.mark.usefixtures("quick_calibration")
def test_export_records_the_checkpoint_bytes_it_loaded(trained_run: Path, tmp_path: Path, monkeypatch) -> None:
    run = copy_run(trained_run, tmp_path)
    loaded = hashlib.sha256((run / "checkpoint.pt").read_bytes()).hexdigest()
    real_read = export_module.read_checkpoint

    def read_then_rewritten(path):
        result = real_read(path)
        ckpt = load_checkpoint(path)  # a training run still going rewrites the file meanwhile
        save_checkpoint(Path(path), {**{k: v for k, v in ckpt.items() if k not in ("format", "version")},
                                     "step": ckpt["step"] + 1})
        return result

    monkeypatch.setattr(export_module, "read_checkpoint", read_then_rewritten)
    export_model(run, tmp_path / "m.onnx")
    props = {p.key: p.value for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    assert props["checkpoint_sha256"] == loaded
    assert hashlib.sha256((run / "checkpoint.pt").read_bytes()).hexdigest() != loaded
    assert json.loads(props["test_accuracy"]) > 0.9


def test_save_and_load_round_trip_keeps_the_checksum(tmp_path: Path) -> None:
    weights = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3), "n": torch.tensor(3)}
    save_checkpoint(tmp_path / "c.pt", {"model": weights, "config": {}})
    loaded = load_checkpoint(tmp_path / "c.pt")
    assert torch.equal(loaded["model"]["w"], weights["w"]) and len(loaded["model_sha256"]) == 64


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 60 MB tmpfs: room for one checkpoint (~40 MB with Adam's state) but not for its atomic rewrite."""
    import os
    import subprocess

    if os.geteuid() != 0:
        pytest.skip("a full disk is simulated with a small tmpfs, which needs root to mount")
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=60m", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()[:100]}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_full_disk_during_training_is_one_line_and_keeps_the_last_checkpoint(small_disk: Path) -> None:
    out = small_disk / "run"
    result = CliRunner().invoke(cli, ["train", "--out", str(out), "--max-steps", "6", "--batch-size", "16",
                                      "--stroke-digits", "0", "--non-digits", "0", "--checkpoint-every", "0",
                                      "--quiet"])
    assert_one_line_error(result, "cannot write", "checkpoint.pt", "the previous checkpoint is kept")
    assert load_checkpoint(out)["step"] == 1  # the first one, intact
    assert not list(out.glob(".*.tmp"))


@pytest.mark.slow
@pytest.mark.usefixtures("quick_calibration")
def test_a_full_disk_during_export_is_one_line_and_writes_no_model(trained_run: Path, small_disk: Path) -> None:
    run = small_disk / "run"
    run.mkdir()
    shutil.copy(trained_run / "checkpoint.pt", run)
    filler = small_disk / "filler"
    free = shutil.disk_usage(small_disk).free
    filler.write_bytes(bytes(free - 4_000_000))  # 4 MB left: the model needs 13
    assert_one_line_error(CliRunner().invoke(cli, ["export", "--run", str(run)]), "cannot write", "model.onnx")
    assert not (run / "model.onnx").exists() and not list(run.glob(".*.tmp"))
    assert load_checkpoint(run)["complete"]
