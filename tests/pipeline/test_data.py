from __future__ import annotations

import dataclasses
import gzip
import hashlib
import http.server
import shutil
import struct
import threading
from pathlib import Path

import numpy as np
import pytest

from pipeline.data import (FASHION_LABELS, DataError, download_files, find_split_files,
                           load_dataset, read_idx, read_split,
                           write_idx)


def write_standard_files(directory: Path, n_train: int = 6, n_test: int = 4, compress: bool = True) -> None:
    rng = np.random.default_rng(0)
    directory.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if compress else ""
    for split, n in (("train", n_train), ("t10k", n_test)):
        write_idx(directory / f"{split}-images-idx3-ubyte{suffix}",
                  rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), compress=compress)
        write_idx(directory / f"{split}-labels-idx1-ubyte{suffix}",
                  rng.integers(0, 10, n, dtype=np.uint8), compress=compress)


@pytest.mark.parametrize("compress", [True, False])
def test_idx_round_trip(tmp_path: Path, compress: bool) -> None:
    array = np.random.default_rng(1).integers(0, 256, (7, 28, 28), dtype=np.uint8)
    path = tmp_path / "x.idx"
    write_idx(path, array, compress=compress)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == compress
    np.testing.assert_array_equal(read_idx(path), array)


def test_idx_header_is_the_standard_one(tmp_path: Path) -> None:
    write_idx(tmp_path / "l", np.arange(5, dtype=np.uint8), compress=False)
    raw = (tmp_path / "l").read_bytes()
    assert raw[:8] == bytes([0, 0, 8, 1]) + struct.pack(">I", 5)  # magic 2049, then the count


@pytest.mark.parametrize("content, message", [
    (b"\x00\x00\x08\x03" + struct.pack(">3I", 2, 28, 28) + bytes(100), "truncated"),
    (b"\x00\x00\x08\x01" + struct.pack(">I", 3) + bytes(5), "unexpected bytes"),
    (b"PK\x03\x04 not idx at all", "bad magic"),
    (b"\x00\x00\x0d\x01" + struct.pack(">I", 1) + bytes(4), "unsupported IDX element type"),
    (b"\x00\x00\x08\x03\x00", "truncated IDX header"),
    (b"\x1f\x8b\x08\x00garbage", "corrupt gzip"),
    (b"", "bad magic"),
])
def test_corrupt_idx_files_give_a_clear_error_naming_the_file(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad-images-idx3-ubyte"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_truncated_gzip_is_reported(tmp_path: Path) -> None:
    write_idx(tmp_path / "x.gz", np.zeros((50, 28, 28), np.uint8))
    data = (tmp_path / "x.gz").read_bytes()
    (tmp_path / "x.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="corrupt gzip"):
        read_idx(tmp_path / "x.gz")


def test_mismatched_counts(tmp_path: Path) -> None:
    write_idx(tmp_path / "i", np.zeros((3, 28, 28), np.uint8))
    write_idx(tmp_path / "l", np.zeros(4, np.uint8))
    with pytest.raises(DataError, match="i has 3 images but l has 4 labels"):
        read_split(tmp_path / "i", tmp_path / "l")


def test_wrong_image_size_is_rejected(tmp_path: Path) -> None:
    write_idx(tmp_path / "i", np.zeros((3, 32, 32), np.uint8))
    write_idx(tmp_path / "l", np.zeros(3, np.uint8))
    with pytest.raises(DataError, match=r"\[N, 28, 28\]"):
        read_split(tmp_path / "i", tmp_path / "l")


def test_missing_directory_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("mnist", tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="MNIST-format files not found"):
        load_dataset("mnist", tmp_path / "empty")


@pytest.mark.parametrize("layout", ["", "MNIST/raw"])
@pytest.mark.parametrize("compress", [True, False])
def test_mnist_directory_layouts(tmp_path: Path, layout: str, compress: bool) -> None:
    write_standard_files(tmp_path / layout, compress=compress)
    ds = load_dataset("mnist", tmp_path)
    assert ds.train_images.shape == (6, 28, 28) and ds.test_images.shape == (4, 28, 28)
    assert ds.class_names == tuple("0123456789")


def test_fashion_mnist_reads_the_same_format_with_its_class_names(tmp_path: Path) -> None:
    write_standard_files(tmp_path)
    ds = load_dataset("fashion-mnist", tmp_path)
    assert ds.class_names[0] == "T-shirt/top" and len(ds.class_names) == 10


def test_embedded_sample_is_the_stratified_4000_1000_split(sample_dataset) -> None:
    ds = sample_dataset
    assert ds.train_images.shape == (4000, 28, 28) and ds.test_images.shape == (1000, 28, 28)
    assert np.bincount(ds.train_labels).tolist() == [400] * 10
    assert np.bincount(ds.test_labels).tolist() == [100] * 10
    # MNIST polarity: mostly black background, white ink
    assert ds.train_images.mean() < 50 and ds.train_images.max() == 255
    # train and test share no image
    train_hashes = {hashlib.sha1(im.tobytes()).digest() for im in ds.train_images}
    assert not any(hashlib.sha1(im.tobytes()).digest() in train_hashes for im in ds.test_images)


# --------------------------------------------------------------------------- download, against a local server


@pytest.fixture()
def file_server(tmp_path: Path):
    """Serve tmp_path/www over HTTP on 127.0.0.1; yields (base URL, root dir)."""
    root = tmp_path / "www"
    root.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()
    server.server_close()


def _checksums(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(directory.glob("*.gz"))}


def test_download_fetches_verifies_and_falls_back_to_the_next_mirror(tmp_path: Path, file_server) -> None:
    base, root = file_server
    write_standard_files(root / "good")
    (root / "empty").mkdir()
    checksums = _checksums(root / "good")
    target = tmp_path / "data"
    download_files(target, checksums, (f"{base}/empty/", f"{base}/good/"))  # first mirror answers 404
    assert _checksums(target) == checksums
    ds = load_dataset("mnist", target)
    assert len(ds.train_images) == 6


def test_download_rejects_a_file_with_the_wrong_checksum(tmp_path: Path, file_server) -> None:
    base, root = file_server
    write_standard_files(root / "good")
    checksums = _checksums(root / "good")
    name = "train-labels-idx1-ubyte.gz"
    checksums[name] = "0" * 32
    target = tmp_path / "data"
    with pytest.raises(DataError, match=f"could not download {name}.*md5"):
        download_files(target, checksums, (f"{base}/good/",))
    assert not (target / name).exists()  # nothing unverified is left behind
    assert not list(target.glob(".*.tmp"))


def test_download_keeps_verified_files_and_skips_them(tmp_path: Path, file_server) -> None:
    base, root = file_server
    write_standard_files(root / "good")
    checksums = _checksums(root / "good")
    target = tmp_path / "data"
    shutil.copytree(root / "good", target)
    download_files(target, checksums, ("http://127.0.0.1:9/unreachable/",))  # nothing to fetch
    assert _checksums(target) == checksums


def test_download_is_only_for_mnist(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="only available for --data mnist"):
        load_dataset("fashion-mnist", tmp_path, download=True)


def test_gzip_output_is_reproducible(tmp_path: Path) -> None:
    array = np.arange(28 * 28, dtype=np.uint8).reshape(1, 28, 28)
    write_idx(tmp_path / "a.gz", array)
    write_idx(tmp_path / "b.gz", array)
    assert (tmp_path / "a.gz").read_bytes() == (tmp_path / "b.gz").read_bytes()
    assert gzip.decompress((tmp_path / "a.gz").read_bytes())[:4] == bytes([0, 0, 8, 3])


def test_find_split_files_prefers_gz(tmp_path: Path) -> None:
    write_standard_files(tmp_path, compress=True)
    files = find_split_files(tmp_path)
    assert files["train"][0].name == "train-images-idx3-ubyte.gz"


def test_generated_training_data_is_added_to_digits_only_and_deterministic(small_dataset) -> None:
    from pipeline.data import with_generated

    grown = with_generated(small_dataset, 50, 30, seed=3)
    n = len(small_dataset.train_images)
    assert grown.train_images.shape == (n + 80, 28, 28) and grown.train_images.dtype == np.uint8
    assert grown.class_names == tuple(str(d) for d in range(10)) + ("not a digit",)
    assert (grown.train_labels[n + 50:] == 10).all() and set(grown.train_labels[n:n + 50]) <= set(range(10))
    assert grown.test_images is small_dataset.test_images and grown.test_labels is small_dataset.test_labels
    again = with_generated(small_dataset, 50, 30, seed=3)
    np.testing.assert_array_equal(grown.train_images, again.train_images)
    assert not np.array_equal(grown.train_images, with_generated(small_dataset, 50, 30, seed=4).train_images)
    assert with_generated(small_dataset, 50, 0, seed=3).class_names == small_dataset.class_names
    fashion = dataclasses.replace(small_dataset, class_names=FASHION_LABELS)
    assert with_generated(fashion, 50, 30, seed=3) is fashion  # clothes get no digits or "not a digit"
