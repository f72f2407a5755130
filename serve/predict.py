"""Batch prediction over image files, directories and stdin: one onnxruntime session, batches of up to 256."""
from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from serve.model import MAX_BATCH, DigitModel
from serve.preprocess import ImageError, NoDigitFound, prepare

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm"}
MAX_FILE_BYTES = 50 * 1024 * 1024
STDIN = "-"


@dataclass(frozen=True)
class Source:
    """One image to predict: a file path, or stdin."""

    name: str
    path: Path | None  # None for stdin


@dataclass
class Prediction:
    image: str
    probabilities: np.ndarray | None = None  # None: no digit found, or an error
    error: str | None = None  # why this input could not be read
    no_digit: bool = False

    @property
    def label(self) -> int | None:
        return None if self.probabilities is None else int(self.probabilities.argmax())

    @property
    def probability(self) -> float | None:
        return None if self.probabilities is None else float(self.probabilities.max())

    def top_k(self, k: int) -> list[tuple[int, float]]:
        if self.probabilities is None:
            return []
        order = np.argsort(-self.probabilities, kind="stable")[:k]
        return [(int(i), float(self.probabilities[i])) for i in order]

    def record(self, labels: list[str], top_k: int = 1) -> dict[str, Any]:
        """The JSON object of `serve predict --json` (and of the server's /predict)."""
        record: dict[str, Any] = {
            "image": self.image, "label": self.label, "probability": self.probability,
            "probabilities": None if self.probabilities is None else [float(v) for v in self.probabilities],
        }
        if self.label is not None and not labels[self.label].isdigit():
            record["class_name"] = labels[self.label]
        if self.no_digit:
            record["note"] = "no digit found"
        if top_k > 1:
            record["top_k"] = [{"label": i, "probability": v} for i, v in self.top_k(top_k)]
        return record


def expand_sources(arguments: Iterable[str]) -> Iterator[Source | Prediction]:
    """Files as given, directories as their images (sorted), ``-`` as stdin; a Prediction for a bad argument."""
    for argument in arguments:
        if argument == STDIN:
            yield Source("<stdin>", None)
            continue
        path = Path(argument)
        if path.is_dir():
            images = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not images:
                yield Prediction(argument, error=f"directory has no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
            yield from (Source(str(p), p) for p in images)
        elif path.is_file():
            yield Source(argument, path)
        elif path.exists():
            yield Prediction(argument, error="not a regular file")
        else:
            yield Prediction(argument, error="no such file or directory")


def read_limited(stream: BinaryIO, limit: int = MAX_FILE_BYTES) -> bytes:
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise ImageError(f"file is larger than {limit // (1024 * 1024)} MB")
    return data


def load_input(source: Source, stdin: BinaryIO | None = None) -> np.ndarray:
    if source.path is None:
        return prepare(read_limited(stdin if stdin is not None else sys.stdin.buffer))
    try:
        with open(source.path, "rb") as fh:
            return prepare(read_limited(fh))
    except OSError as exc:
        raise ImageError(f"cannot read: {exc.strerror or exc}") from None


def predict(model: DigitModel, arguments: Iterable[str], batch_size: int = MAX_BATCH,
            stdin: BinaryIO | None = None) -> Iterator[Prediction]:
    """Yield one Prediction per input, in order, running the model once per batch of up to ``batch_size``."""
    pending: list[Prediction] = []  # results in input order, some waiting for the batch
    batch: list[np.ndarray] = []
    waiting: list[Prediction] = []

    def flush() -> Iterator[Prediction]:
        if batch:
            probabilities = model.probabilities(np.stack(batch)[:, None], batch_size=batch_size)
            for prediction, p in zip(waiting, probabilities):
                prediction.probabilities = p
            batch.clear()
            waiting.clear()
        yield from pending
        pending.clear()

    for item in expand_sources(arguments):
        if isinstance(item, Prediction):
            pending.append(item)
            continue
        prediction = Prediction(item.name)
        try:
            batch.append(load_input(item, stdin))
            waiting.append(prediction)
        except NoDigitFound:
            prediction.no_digit = True
        except ImageError as exc:
            prediction.error = str(exc)
        pending.append(prediction)
        if len(batch) >= batch_size:
            yield from flush()
    yield from flush()
