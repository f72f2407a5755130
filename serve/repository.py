"""A model repository in Triton's layout: REPOSITORY/NAME/config.pbtxt and REPOSITORY/NAME/VERSION/model.onnx.

`pipeline export --repository` writes one; `serve http --repository` serves every model and version in it,
and Triton (or KServe's Triton runtime) serves the same directory. What is served comes from each
model's own metadata, as with `--model`; config.pbtxt is for Triton, and serve does not read it.
Torch-free, and light to import: `pipeline --help` reads the defaults here.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from serve.model import DigitModel

DEFAULT_MODEL_NAME = "digits"  # the model's name in /v2 and in a repository
INT8_SUFFIX = "-int8"  # `export --quantize int8` publishes the int8 model as its own model, NAME-int8
MODEL_FILENAME = "model.onnx"  # what Triton's onnxruntime backend loads from a version directory
CONFIG_FILENAME = "config.pbtxt"
EXPORTED_VERSION = "1"  # the version `pipeline export` writes
# Triton reads a version directory's name as an integer and ignores names with leading zeros.
_VERSION = re.compile(r"0|[1-9][0-9]{0,17}")
# A model's name is a directory name and part of URLs: no separators, no "..", nothing hidden.
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def is_model_name(name: str) -> bool:
    return bool(_MODEL_NAME.fullmatch(name)) and ".." not in name


def check_model_name(name: str) -> str:
    """``name`` if it can name a model in a repository; ValueError with the rule otherwise."""
    if not is_model_name(name):
        raise ValueError(f"model name {name!r} is not usable: letters, digits, '_', '.' and '-', "
                         "starting with a letter or digit, at most 128 characters")
    return name


def is_version(name: str) -> bool:
    return bool(_VERSION.fullmatch(name))


def version_key(version: str) -> int:
    return int(version)


def versions_on_disk(model_dir: Path) -> list[str]:
    """The versions of the model in ``model_dir`` that hold a model file, oldest first."""
    try:
        entries = list(Path(model_dir).iterdir())
    except OSError:
        return []
    return sorted((entry.name for entry in entries
                   if is_version(entry.name) and (entry / MODEL_FILENAME).is_file()), key=version_key)


def models_on_disk(repository: Path) -> dict[str, list[str]]:
    """Every model directory of ``repository`` (hidden ones, such as an export's temporary directory,
    left out) and its versions, by name."""
    try:
        entries = sorted(Path(repository).iterdir())
    except OSError:
        return {}
    return {entry.name: versions_on_disk(entry) for entry in entries if entry.is_dir() and is_model_name(entry.name)}


def load_versions(repository: Path, name: str) -> dict[str, "DigitModel"]:
    """Every version of model ``name`` in ``repository``, loaded (ModelError if any cannot be served)."""
    from serve.model import ModelError, load_model

    model_dir = Path(repository) / name
    if not is_model_name(name) or not model_dir.is_dir():
        raise ModelError(f"no model {name!r} in the repository {repository}")
    versions = versions_on_disk(model_dir)
    if not versions:
        raise ModelError(f"{model_dir}: no version directory with a {MODEL_FILENAME} "
                         f"(expected {model_dir / EXPORTED_VERSION / MODEL_FILENAME})")
    return {version: load_model(model_dir / version / MODEL_FILENAME) for version in versions}


def load_repository(repository: Path) -> dict[str, dict[str, "DigitModel"]]:
    """Every model and version in ``repository``, loaded; ModelError naming the first that cannot be."""
    from serve.model import ModelError

    repository = Path(repository)
    if not repository.is_dir():
        raise ModelError(f"model repository {repository} is not a directory "
                         "(write one with `pipeline export --repository DIR`)")
    return {name: load_versions(repository, name) for name in models_on_disk(repository)}
