from __future__ import annotations

import json
import re
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import numpy as np
from click.testing import CliRunner, Result

from pipeline.cli import cli
from pipeline.data import write_idx
from tests.helpers import assert_one_line_error

REPO = Path(__file__).resolve().parents[2]


# fewer generated images than the default 6,500 (8 s to draw) where the defaults are not what is tested
FEW_DRAWN = ("--stroke-digits", "200", "--non-digits", "200")


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def test_failures_look_like_serve_s_own_and_usage_errors_stay_click_s(tmp_path: Path) -> None:
    result = run("export", "--run", str(tmp_path / "missing"))
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.startswith("pipeline: error: run directory") and result.stderr.count("\n") == 1
    usage = run("train", "--epochs", "many")
    assert usage.exit_code == 2 and "Usage: " in usage.stderr and "Error: Invalid value for '--epochs'" in usage.stderr


def test_help_lists_the_commands_and_options() -> None:
    result = run("--help")
    assert result.exit_code == 0 and "train" in result.output
    result = run("train", "--help")
    for option in ("--data", "--data-dir", "--epochs", "--batch-size", "--lr", "--optimizer", "--seed", "--no-bn",
                   "--augment / --no-augment", "--out", "--device", "--max-steps", "--resume", "--download"):
        assert option in result.output, option


def test_both_commands_say_their_version_from_the_package_metadata() -> None:
    from importlib.metadata import version

    from serve.cli import cli as serve_cli

    assert run("--version").output.strip() == f"pipeline, version {version('foldserve')}"
    assert CliRunner().invoke(serve_cli, ["--version"]).output.strip() == f"serve, version {version('foldserve')}"


@pytest.mark.slow
def test_train_a_few_steps_writes_the_run_directory(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = run("train", "--out", str(out), "--max-steps", "3", "--batch-size", "16", "--quiet")
    assert result.exit_code == 0, result.output
    assert "test accuracy" in result.output and str(out) in result.output
    assert {p.name for p in out.iterdir()} == {"config.json", "metrics.json", "checkpoint.pt", ".lock"}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 3 and 0 <= metrics["test_accuracy"] <= 1
    assert metrics["dataset"] == "sample"


@pytest.mark.slow
def test_no_bn_and_sgd_options_reach_the_run(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = run("train", "--out", str(out), "--max-steps", "2", "--no-bn", "--optimizer", "sgd", "--lr", "0.05",
                 "--no-augment", "--quiet", *FEW_DRAWN)
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["bn"] is False
    assert config["train"]["optimizer"] == "sgd" and config["train"]["augment"] is False


@pytest.mark.parametrize("args, fragments", [
    (["--epochs", "0"], ["--epochs must be at least 1"]),
    (["--lr", "-0.01"], ["--lr must be a positive number"]),
    (["--data", "mnist"], ["--data mnist needs --data-dir"]),
    (["--data", "mnist", "--data-dir", "/nonexistent/dir"], ["/nonexistent/dir", "does not exist"]),
    (["--data", "fashion-mnist", "--data-dir", "/nonexistent/fm"], ["/nonexistent/fm", "does not exist"]),
])
def test_bad_options_give_one_clear_line(tmp_path: Path, args: list[str], fragments: list[str]) -> None:
    assert_one_line_error(run("train", "--out", str(tmp_path / "r"), "--quiet", *args), *fragments)


def test_non_idx_and_truncated_files_are_named(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for split, n in (("train", 4), ("t10k", 2)):
        write_idx(data / f"{split}-images-idx3-ubyte", np.zeros((n, 28, 28), "uint8"), compress=False)
        write_idx(data / f"{split}-labels-idx1-ubyte", np.zeros(n, "uint8"), compress=False)
    (data / "train-labels-idx1-ubyte").write_bytes(b"hello, not idx")
    assert_one_line_error(run("train", "--data", "mnist", "--data-dir", str(data), "--out", str(tmp_path / "r")),
                          "train-labels-idx1-ubyte", "not an IDX file")
    write_idx(data / "train-labels-idx1-ubyte", np.zeros(3, "uint8"), compress=False)
    assert_one_line_error(run("train", "--data", "mnist", "--data-dir", str(data), "--out", str(tmp_path / "r")),
                          "4 images", "3 labels")
    write_idx(data / "train-labels-idx1-ubyte", np.zeros(4, "uint8"), compress=False)
    raw = (data / "t10k-images-idx3-ubyte").read_bytes()
    (data / "t10k-images-idx3-ubyte").write_bytes(raw[:-10])
    assert_one_line_error(run("train", "--data", "mnist", "--data-dir", str(data), "--out", str(tmp_path / "r")),
                          "t10k-images-idx3-ubyte", "truncated")


def test_unwritable_out_is_reported(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert_one_line_error(run("train", "--out", str(blocker / "run"), "--max-steps", "1", "--quiet"),
                          "cannot write to output directory", str(blocker / "run"))


@pytest.mark.slow
def test_resume_errors(tmp_path: Path) -> None:
    assert_one_line_error(run("train", "--out", str(tmp_path / "none"), "--resume", "--quiet"), "no checkpoint")
    out = tmp_path / "r"
    assert run("train", "--out", str(out), "--max-steps", "2", "--quiet", *FEW_DRAWN).exit_code == 0
    assert_one_line_error(run("train", "--out", str(out), "--resume", "--no-bn", "--quiet"), "bn=False differs")
    (out / "checkpoint.pt").write_bytes(b"\x00" * 100)
    assert_one_line_error(run("train", "--out", str(out), "--resume", "--quiet"), "not a readable checkpoint")


@pytest.mark.slow
def test_ctrl_c_saves_a_resumable_checkpoint_and_resume_finishes(tmp_path: Path) -> None:
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "pipeline", "train", "--out", str(out), "--epochs", "2", "--batch-size", "32",
           "--max-steps", "200", *FEW_DRAWN]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # wait for the progress bar to show a few steps done, then press Ctrl-C
    seen = ""
    assert proc.stderr is not None
    while not re.search(r"\b([3-9]|\d\d+)/200\b", seen):
        chunk = proc.stderr.read(1)
        assert chunk, f"training ended before it was interrupted: {seen[-2000:]}"
        seen += chunk
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=60)
    stderr = seen + rest
    assert proc.returncode == 128 + signal.SIGINT, stderr
    assert "Traceback" not in stderr and "--resume" in stderr
    from pipeline.checkpoint import load_checkpoint

    saved = load_checkpoint(out)
    assert saved["complete"] is False and saved["step"] > 0
    result = subprocess.run(cmd + ["--resume"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert load_checkpoint(out)["step"] == 200
