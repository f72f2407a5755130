from __future__ import annotations

import dataclasses

import pytest

from pipeline.data import Dataset, load_dataset


@pytest.fixture(scope="session")
def sample_dataset() -> Dataset:
    return load_dataset("sample")


@pytest.fixture(scope="session")
def small_dataset(sample_dataset: Dataset) -> Dataset:
    """The first 512 training and 200 test digits of the sample: enough for a few real steps."""
    return dataclasses.replace(
        sample_dataset,
        train_images=sample_dataset.train_images[:512], train_labels=sample_dataset.train_labels[:512],
        test_images=sample_dataset.test_images[:200], test_labels=sample_dataset.test_labels[:200],
    )
