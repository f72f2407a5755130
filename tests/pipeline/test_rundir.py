"""One owner per run directory: a lock, leftovers of killed writers cleaned, no silent overwrite, no
model left beside a checkpoint it was not exported from (pipeline/rundir.py)."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from pipeline.artifacts import atomic_path
from pipeline.cli import cli
from pipeline.rundir import remove_stale_temps, run_lock
from tests.helpers import assert_one_line_error
import pytest

QUICK = ("--max-steps", "2", "--batch-size", "16", "--stroke-digits", "0", "--non-digits", "0", "--quiet")


def pipeline(*args: str):
    return CliRunner().invoke(cli, list(args))


def test_a_second_trainer_on_the_same_directory_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    with run_lock(out):  # as a first `pipeline train` holds it
        assert_one_line_error(pipeline("train", "--out", str(out), *QUICK), "in use by another", "pipeline train")
        assert not (out / "checkpoint.pt").exists() and not (out / "config.json").exists()
    assert pipeline("train", "--out", str(out), *QUICK).exit_code == 0  # the lock went with its holder


def test_a_finished_run_is_replaced_only_with_overwrite(exported_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(exported_run, run)
    before = (run / "checkpoint.pt").read_bytes()
    assert_one_line_error(pipeline("train", "--out", str(run), *QUICK), "already holds a run", "--overwrite")
    assert (run / "checkpoint.pt").read_bytes() == before and (run / "model.onnx").exists()
    assert_one_line_error(pipeline("train", "--out", str(run), "--resume", "--overwrite", *QUICK), "pass one")
    result = pipeline("train", "--out", str(run), "--overwrite", *QUICK)
    assert result.exit_code == 0, result.output
    assert (run / "checkpoint.pt").read_bytes() != before
    # the model and reports exported from the old checkpoint went with it
    assert not (run / "model.onnx").exists() and not (run / "parity.json").exists()


def test_temp_files_of_killed_writers_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    left = tmp_path / f".checkpoint.pt.{int(dead.stdout)}.k3x9q1.tmp"
    left.write_bytes(b"half a checkpoint")
    mine = tmp_path / ".model.onnx.live.tmp"
    with atomic_path(tmp_path / "model.onnx") as writing:  # this process is writing it right now
        writing.write_bytes(b"in progress")
        mine.write_bytes(b"not ours: no writer id")
        assert remove_stale_temps(tmp_path) == 1
        assert not left.exists() and writing.exists() and mine.exists()
    assert (tmp_path / "model.onnx").read_bytes() == b"in progress"


def test_training_cleans_what_a_killed_trainer_left(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    left = out / f".checkpoint.pt.{int(dead.stdout)}.abcdef.tmp"
    left.write_bytes(bytes(1000))
    assert pipeline("train", "--out", str(out), *QUICK).exit_code == 0
    assert not left.exists() and not list(out.glob(".*.tmp"))


@pytest.mark.slow
def test_sigkill_during_a_checkpoint_write_keeps_the_last_one_and_resume_cleans_up(tmp_path: Path) -> None:
    import os
    import signal
    import time

    from pipeline.checkpoint import load_checkpoint

    out = tmp_path / "run"
    args = ["--out", str(out), "--batch-size", "16", "--stroke-digits", "0", "--non-digits", "0", "--quiet"]
    trainer = subprocess.Popen([sys.executable, "-m", "pipeline", "train", "--max-steps", "400",
                                "--checkpoint-every", "0", *args], cwd=Path(__file__).resolve().parents[2],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    assert trainer.stderr is not None
    try:
        # wait for the moment a checkpoint is being written after an earlier one exists, then kill
        while not ((out / "checkpoint.pt").exists() and list(out.glob(".checkpoint.pt.*.tmp"))):
            assert trainer.poll() is None, trainer.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no checkpoint write was seen"
            time.sleep(0.002)
        os.kill(trainer.pid, signal.SIGKILL)
    finally:
        trainer.wait(timeout=60)
        trainer.stderr.close()
    assert trainer.returncode == -signal.SIGKILL
    step = load_checkpoint(out)["step"]  # the last complete checkpoint, intact (its checksum holds)
    assert 1 <= step < 400
    assert list(out.glob(".checkpoint.pt.*.tmp"))  # the killed writer's half-written file
    resumed = pipeline("train", "--resume", "--max-steps", str(step + 2), *args)
    assert resumed.exit_code == 0, resumed.output
    assert load_checkpoint(out)["step"] == step + 2 and not list(out.glob(".*.tmp"))
