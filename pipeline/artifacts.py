"""Atomic artifact writing: a reader never sees a half-written file."""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError

DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO}  # one line, the old file stays

# mkstemp creates files 0600; artifacts should get the permissions a plain open() would give.
_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.
    The temporary file's name carries this process's id, so a later run can tell a killed writer's
    leftover from a live one's (pipeline/rundir.py)."""
    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except OSError as exc:
        if exc.errno not in DISK_ERRORS:  # e.g. a download's HTTP error: the caller's to handle
            raise
        raise PipelineError(f"cannot write {path}: {exc.strerror or exc}"
                            f"{'; the previous version is kept' if path.exists() else ''}") from None
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: Path, data: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def ensure_writable_dir(path: Path) -> Path:
    """Create ``path`` if needed and check that files can be created in it."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test."):
            pass
    except OSError as exc:
        raise PipelineError(f"cannot write to output directory {path}: {exc.strerror or exc}") from None
    return path


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in blocks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
