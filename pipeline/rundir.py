"""A run directory has one owner at a time: `pipeline train` locks it, cleans up what a killed
process left behind, and never leaves models beside a checkpoint they were not exported from."""
from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from pipeline.artifacts import ensure_writable_dir
from pipeline.checkpoint import CHECKPOINT_NAME
from pipeline.errors import PipelineError

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"
# What `pipeline export` derives from a checkpoint: stale the moment the checkpoint is replaced.
EXPORTED = ("model.onnx", "model-int8.onnx", "parity.json", "parity-int8.json", "checkpoint-exact-bn.pt")


@contextlib.contextmanager
def owned_run(out_dir: Path, *, resume: bool, overwrite: bool) -> Iterator[None]:
    """Hold ``out_dir`` for one training process: refuse a second one, clean leftover temp files,
    and (unless resuming) refuse to replace an existing run without ``overwrite``."""
    out_dir = ensure_writable_dir(out_dir)
    with run_lock(out_dir):
        removed = remove_stale_temps(out_dir)
        if removed:
            log.info("removed %d temporary file(s) left by a killed process in %s", removed, out_dir)
        if not resume:
            clear_previous_run(out_dir, overwrite)
        yield


@contextlib.contextmanager
def run_lock(out_dir: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``out_dir/.lock``: released by the kernel when the process
    ends, however it ends (a SIGKILLed trainer leaves no stale lock)."""
    path = out_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "another process"
            raise PipelineError(f"{out_dir} is in use by another `pipeline train` (pid {holder}); "
                                "wait for it, or train into another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def remove_stale_temps(out_dir: Path) -> int:
    """Delete the temporary files and directories of atomic writes whose writer is gone
    (``.NAME.PID.XXXX.tmp``, see artifacts.atomic_path and atomic_directory): what a killed process
    left. Those of a live process (an export running beside the training) stay."""
    removed = 0
    for path in out_dir.glob(".*.tmp"):
        pid = writer_pid(path.name)
        if pid is None or process_alive(pid):
            continue
        with contextlib.suppress(OSError):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed += 1
    return removed


def writer_pid(temp_name: str) -> int | None:
    parts = temp_name[:-len(".tmp")].rsplit(".", 2)
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def clear_previous_run(out_dir: Path, overwrite: bool) -> None:
    """Refuse to train over an existing run unless ``overwrite``; then delete its checkpoint and
    everything exported from it, so no model is left beside a checkpoint it did not come from."""
    if not (out_dir / CHECKPOINT_NAME).exists():
        return
    if not overwrite:
        raise PipelineError(f"{out_dir} already holds a run ({CHECKPOINT_NAME}); pass --resume to continue it "
                            "or --overwrite to replace it (its checkpoint and exported models are deleted)")
    for name in (CHECKPOINT_NAME, *EXPORTED):
        with contextlib.suppress(FileNotFoundError):
            (out_dir / name).unlink()
