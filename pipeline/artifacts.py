"""Atomic artifact writing: a reader never sees a half-written file."""
from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import os
import shutil
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


@contextlib.contextmanager
def atomic_directory(path: Path) -> Iterator[Path]:
    """Yield a temporary directory beside ``path``; if the block succeeds, it takes ``path``'s place in
    one step (an existing directory is exchanged with it, then deleted), so a reader sees the old
    directory or the new one, whole, never a mixture. Named like atomic_path's files (pid inside)."""
    path = Path(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp's 0700 would hide the model from a server's other user
        if not exchange(tmp, path):
            if path.exists():  # no atomic exchange here: the old one goes first, for a moment there is none
                remove_directory(path)
            os.rename(tmp, path)
    except OSError as exc:  # a full disk, a permission, a file in the way: the block only writes files
        raise PipelineError(f"cannot write {path}: {exc.strerror or exc}"
                            f"{'; the previous version is kept' if path.exists() else ''}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # after an exchange: the old directory


def remove_directory(path: Path) -> None:
    """Delete the directory ``path`` so that it disappears at once: renamed out of the way (a hidden,
    pid-named temporary name), then deleted."""
    path = Path(path)
    gone = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent))
    os.rename(path, gone)  # replaces the empty directory just made
    shutil.rmtree(gone, ignore_errors=True)


_AT_FDCWD, _RENAME_EXCHANGE = -100, 2  # <fcntl.h>, <linux/fs.h>


def exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one step (Linux renameat2 RENAME_EXCHANGE). False where that cannot
    be done: another system, an old kernel or C library, a file system without it, or ``b`` missing."""
    if not os.path.lexists(b):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.ENOENT):
        return False
    raise OSError(code, os.strerror(code), str(b))


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
