"""MNIST-format data: the IDX file reader/writer and the three datasets the pipeline knows.

Everything here is numpy only, so reading data never needs torch.
"""
from __future__ import annotations

import gzip
import logging
import struct
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from pipeline.artifacts import atomic_path, file_digest
from pipeline.errors import PipelineError

log = logging.getLogger(__name__)

IDX_UBYTE = 0x08
DIGIT_LABELS = tuple(str(d) for d in range(10))
FASHION_LABELS = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
DATASETS = ("sample", "mnist", "fashion-mnist")
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
# The standard file names (the same for MNIST and Fashion-MNIST).
SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# The mirrors torchvision uses, with the md5 sums torchvision verifies against.
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}


class DataError(PipelineError):
    """A data file or directory that cannot be used."""


@dataclass(frozen=True)
class Dataset:
    """Images are uint8 [N, 28, 28], white ink on black (MNIST polarity); labels int64 [N]."""

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: tuple[str, ...]


# --------------------------------------------------------------------------- IDX files


def model_input(images: np.ndarray) -> np.ndarray:
    """uint8 [N, H, W] images → float32 [N, 1, H, W] in [0, 1]: what the network and the exported
    graph take (normalization happens inside them)."""
    return images.astype(np.float32)[:, None] / 255.0


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file of unsigned bytes (gzip-compressed or raw), validating its header."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{path}: corrupt gzip data ({exc})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path}: not an IDX file (bad magic number)")
    dtype_code, ndim = raw[2], raw[3]
    if dtype_code != IDX_UBYTE:
        raise DataError(f"{path}: unsupported IDX element type 0x{dtype_code:02x} (expected unsigned bytes, 0x08)")
    if ndim == 0:
        raise DataError(f"{path}: IDX file declares zero dimensions")
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise DataError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", raw[4:header_len])
    expected = int(np.prod(shape, dtype=np.int64))
    actual = len(raw) - header_len
    if actual < expected:
        raise DataError(f"{path}: truncated: header declares shape {shape} ({expected} bytes), file has {actual}")
    if actual > expected:
        raise DataError(f"{path}: {actual - expected} unexpected bytes after the data of shape {shape}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header_len).reshape(shape)


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> None:
    """Write a uint8 array as an IDX file (gzip with a fixed timestamp, so output is reproducible)."""
    array = np.ascontiguousarray(array)
    if array.dtype != np.uint8:
        raise ValueError(f"IDX writer supports uint8 only, got {array.dtype}")
    header = bytes([0, 0, IDX_UBYTE, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.tobytes()
    if compress:
        payload = gzip.compress(payload, compresslevel=9, mtime=0)
    with atomic_path(Path(path)) as tmp:
        tmp.write_bytes(payload)


def read_split(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataError(f"{images_path}: expected images of shape [N, 28, 28], got {list(images.shape)}")
    if labels.ndim != 1:
        raise DataError(f"{labels_path}: expected a 1-D label file, got shape {list(labels.shape)}")
    if len(images) != len(labels):
        raise DataError(
            f"{images_path} has {len(images)} images but {labels_path.name} has {len(labels)} labels"
        )
    if len(labels) and labels.max() > 9:
        raise DataError(f"{labels_path}: label {int(labels.max())} out of range 0-9")
    return images, labels.astype(np.int64)


def with_generated(dataset: Dataset, stroke_digits: int, non_digits: int, seed: int) -> Dataset:
    """``dataset`` with generated training images added (pipeline/synth.py): digits drawn from
    stroke skeletons, and "not a digit" examples as an extra class. Digit datasets only; the test
    split is left as it is. Deterministic in ``seed``."""
    from models.net import REJECT_LABEL
    from pipeline.synth import non_digits as draw_non_digits
    from pipeline.synth import stroke_digits as draw_digits

    if dataset.class_names != DIGIT_LABELS or (stroke_digits == 0 and non_digits == 0):
        return dataset
    rng = np.random.default_rng([seed, 20261125])
    images, labels = [dataset.train_images], [dataset.train_labels]
    if stroke_digits:
        drawn, drawn_labels = draw_digits(stroke_digits, rng)
        images.append(drawn)
        labels.append(drawn_labels.astype(np.int64))
    class_names = dataset.class_names
    if non_digits:
        images.append(draw_non_digits(non_digits, rng))
        labels.append(np.full(non_digits, len(DIGIT_LABELS), np.int64))
        class_names = DIGIT_LABELS + (REJECT_LABEL,)
    log.info("added %d stroke-drawn digits and %d non-digits to %s", stroke_digits, non_digits, dataset.name)
    return Dataset(dataset.name, np.concatenate(images), np.concatenate(labels), dataset.test_images,
                   dataset.test_labels, class_names)


# --------------------------------------------------------------------------- locating files


def _find_file(directory: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (directory / name).is_file():
            return directory / name
    return None


def find_split_files(data_dir: Path) -> dict[str, tuple[Path, Path]]:
    """Find the four standard files in ``data_dir`` or a torchvision-style ``*/raw`` below it."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"data directory {data_dir} does not exist")
    candidates = [data_dir, data_dir / "raw", data_dir / "MNIST" / "raw", data_dir / "FashionMNIST" / "raw"]
    for directory in candidates:
        found = {
            split: (_find_file(directory, img), _find_file(directory, lab))
            for split, (img, lab) in SPLIT_FILES.items()
        }
        if all(p is not None for pair in found.values() for p in pair):
            return found  # type: ignore[return-value]
    wanted = ", ".join(f"{s}[.gz]" for pair in SPLIT_FILES.values() for s in pair)
    raise DataError(f"{data_dir}: MNIST-format files not found (looked for {wanted}, also under MNIST/raw)")


def sample_data_dir() -> Path:
    return Path(str(resources.files("pipeline") / "sample_data"))


def load_dataset(name: str, data_dir: Path | None = None, download: bool = False) -> Dataset:
    """Load ``sample`` (embedded), ``mnist`` (from ``data_dir``) or ``fashion-mnist``."""
    if name == "sample":
        directory, class_names = sample_data_dir(), DIGIT_LABELS
    elif name == "mnist":
        if data_dir is None:
            raise DataError("--data mnist needs --data-dir DIR (add --download to fetch the files into it)")
        directory, class_names = Path(data_dir), DIGIT_LABELS
        if download:
            download_files(directory, MNIST_MD5, MNIST_MIRRORS)
    elif name == "fashion-mnist":
        directory, class_names = Path(data_dir or FASHION_MNIST_DIR), FASHION_LABELS
        if download:
            raise DataError("--download is only available for --data mnist; "
                            "Fashion-MNIST comes from the Debian package dataset-fashion-mnist")
        if not directory.is_dir():
            raise DataError(f"data directory {directory} does not exist "
                            "(install the Debian package dataset-fashion-mnist, or pass --data-dir)")
    else:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    files = find_split_files(directory)
    train_images, train_labels = read_split(*files["train"])
    test_images, test_labels = read_split(*files["test"])
    log.info("loaded %s: %d train, %d test images", name, len(train_images), len(test_images))
    return Dataset(name, train_images, train_labels, test_images, test_labels, class_names)


# --------------------------------------------------------------------------- download


def download_files(directory: Path, checksums: dict[str, str], mirrors: tuple[str, ...],
                   timeout: float = 30.0) -> None:
    """Fetch each file missing from ``directory``, trying mirrors in order; keep only verified files."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create data directory {directory}: {exc.strerror or exc}") from None
    for name, md5 in checksums.items():
        target = directory / name
        if target.is_file() and file_digest(target, "md5") == md5:
            continue
        failures = []
        for mirror in mirrors:
            url = mirror.rstrip("/") + "/" + name
            try:
                with atomic_path(target) as tmp:
                    log.info("downloading %s", url)
                    with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
                        for block in iter(lambda: response.read(1 << 20), b""):
                            out.write(block)
                    got = file_digest(tmp, "md5")
                    if got != md5:
                        raise ValueError(f"md5 {got} != expected {md5}")
            except (urllib.error.URLError, OSError, ValueError) as exc:
                failures.append(f"{url}: {getattr(exc, 'reason', None) or exc}")
                continue
            break
        else:
            raise DataError(f"could not download {name}: " + "; ".join(failures))
