"""Readings over image files, directories and stdin: one onnxruntime session, model calls of up to
256 fields (several per image when it holds a number)."""
from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from serve.image.decode import DEFAULT_MAX_PIXELS, ImageError
from serve.model import MAX_BATCH, DigitModel
from serve.reading import Page, Reading, prepare_page, read_pages, unreadable

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm",
                  ".heic", ".heif", ".avif"}
MAX_FILE_BYTES = 128 * 1024 * 1024  # a 48 MP PNG is 60-90 MB
STDIN = "-"


@dataclass(frozen=True)
class Source:
    """One image to read: a file path, or stdin."""

    name: str
    path: Path | None  # None for stdin


@dataclass(frozen=True)
class Skipped:
    """A file in a directory that is not read (not an image by its name): reported, not an error."""

    name: str
    reason: str


def expand_sources(arguments: Iterable[str]) -> Iterator[Source | Skipped | Reading]:
    """Files as given, directories as their images (sorted; other files reported as skipped), ``-`` as
    stdin; an error Reading for a bad argument."""
    for argument in arguments:
        if argument == STDIN:
            yield Source("<stdin>", None)
            continue
        path = Path(argument)
        if path.is_dir():
            entries = sorted(p for p in path.iterdir() if p.is_file())
            images = [p for p in entries if p.suffix.lower() in IMAGE_SUFFIXES]
            if not images:
                yield Reading(argument, error=f"directory has no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
            for entry in entries:
                if entry in images:
                    yield Source(str(entry), entry)
                else:
                    yield Skipped(str(entry), f"not an image file by its name ({entry.suffix or 'no suffix'})")
        elif path.is_file():
            yield Source(argument, path)
        elif path.exists():
            yield Reading(argument, error="not a regular file")
        else:
            yield Reading(argument, error="no such file or directory")


def read_limited(stream: BinaryIO, limit: int = MAX_FILE_BYTES) -> bytes:
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise ImageError(f"file is larger than {limit // (1024 * 1024)} MB")
    return data


def load_page(source: Source, model: DigitModel, max_pixels: int, stdin: BinaryIO | None = None) -> Page:
    """The source's bytes prepared for the model; unreadable input is a Page with an error."""
    try:
        if source.path is None:
            data = read_limited(stdin if stdin is not None else sys.stdin.buffer)
        else:
            with open(source.path, "rb") as fh:
                data = read_limited(fh)
    except ImageError as exc:
        return unreadable(source.name, str(exc), model.field_spec)
    except OSError as exc:
        return unreadable(source.name, f"cannot read: {exc.strerror or exc}", model.field_spec)
    return prepare_page(data, source.name, model.field_spec, max_pixels)


def predict(model: DigitModel, arguments: Iterable[str], batch_size: int = MAX_BATCH,
            stdin: BinaryIO | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
            min_confidence: float | None = None) -> Iterator[Reading | Skipped]:
    """Yield one Reading per input (and a Skipped per skipped file), in order, reading ``batch_size``
    fields at a time (the model runs on their views in calls of ``batch_size``)."""
    pending: list[Reading | Skipped | Page] = []
    fields = 0

    def flush() -> Iterator[Reading | Skipped]:
        pages = [p for p in pending if isinstance(p, Page)]
        readings = iter(read_pages(model, pages, min_confidence, batch_size))
        for item in pending:
            yield next(readings) if isinstance(item, Page) else item
        pending.clear()

    for item in expand_sources(arguments):
        if isinstance(item, Source):
            page = load_page(item, model, max_pixels, stdin)
            pending.append(page)
            fields += len(page.fields)
        else:
            pending.append(item)
        if fields >= batch_size:
            yield from flush()
            fields = 0
    yield from flush()
