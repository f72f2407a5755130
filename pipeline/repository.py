"""`pipeline export --repository DIR`: the exported models published in Triton's model repository layout.

DIR/NAME/config.pbtxt and DIR/NAME/1/model.onnx, and with `--quantize int8` the int8 model as its
own model, DIR/NAME-int8. Triton's onnxruntime backend, KServe's Triton runtime and `serve http
--repository` serve the same directory (serve/repository.py reads the layout).

Each model directory is written whole beside the repository's models (a hidden, pid-named temporary
directory) and then takes the old one's place in one step, so a server never finds a version beside a
config.pbtxt written for another model, or a half-copied model.onnx.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.artifacts import atomic_directory, ensure_writable_dir, remove_directory
from pipeline.errors import PipelineError
from pipeline.rundir import remove_stale_temps
from serve.repository import CONFIG_FILENAME, EXPORTED_VERSION, INT8_SUFFIX, MODEL_FILENAME, check_model_name

if TYPE_CHECKING:
    from serve.model import DigitModel

# onnxruntime's tensor types -> Triton's data types (model_config.proto)
TRITON_TYPES = {"tensor(float)": "TYPE_FP32", "tensor(float16)": "TYPE_FP16", "tensor(double)": "TYPE_FP64",
                "tensor(int8)": "TYPE_INT8", "tensor(uint8)": "TYPE_UINT8", "tensor(int32)": "TYPE_INT32",
                "tensor(int64)": "TYPE_INT64", "tensor(bool)": "TYPE_BOOL"}


@dataclass
class Publication:
    repository: Path
    published: list[Path] = field(default_factory=list)  # model directories written
    withdrawn: list[Path] = field(default_factory=list)  # model directories removed (an int8 model of the old one)


def model_names(name: str) -> list[str]:
    """The repository's models an export of ``name`` writes or replaces: the model and its int8 sibling."""
    return [name, name + INT8_SUFFIX]


def triton_config(model: "DigitModel", name: str) -> str:
    """config.pbtxt for Triton's onnxruntime backend. The dims are the model's contract as its metadata
    declares it (the input's field, one output per class), checked against the graph, whose tensor
    names and types the config takes; max_batch_size is the largest batch serve runs the model at."""
    from serve.model import INPUT_NAME, MAX_BATCH

    declared = {INPUT_NAME: list(model.input_shape), **{o: [len(model.labels)] for o in model.output_names}}

    def tensor(arg: Any) -> str:  # an onnxruntime NodeArg
        shape = list(arg.shape)
        if not shape or isinstance(shape[0], int):  # Triton batches along a dynamic first dimension
            raise PipelineError(f"{model.path}: {arg.name!r} has no dynamic batch dimension ({shape})")
        if shape[1:] != declared[arg.name]:
            raise PipelineError(f"{model.path}: {arg.name!r} has the shape {shape}, but the model's metadata "
                                f"declares [N, {', '.join(map(str, declared[arg.name]))}]")
        if arg.type not in TRITON_TYPES:
            raise PipelineError(f"{model.path}: {arg.name!r} is {arg.type}, which Triton's config cannot name")
        return (f"  {{\n    name: {json.dumps(arg.name)}\n    data_type: {TRITON_TYPES[arg.type]}\n"
                f"    dims: [ {', '.join(map(str, shape[1:]))} ]\n  }}")

    inputs = ",\n".join(tensor(arg) for arg in model.session.get_inputs())
    outputs = ",\n".join(tensor(arg) for arg in model.session.get_outputs())
    return (f"# Written by `pipeline export --repository` for Triton's onnxruntime backend; the tensors are\n"
            f"# those of {MODEL_FILENAME} (its metadata: labels, input field, calibrated threshold).\n"
            f"name: {json.dumps(name)}\nplatform: \"onnxruntime_onnx\"\nmax_batch_size: {MAX_BATCH}\n"
            f"input [\n{inputs}\n]\noutput [\n{outputs}\n]\n"
            "# concurrent requests run as one batch, as `serve http` batches them\ndynamic_batching { }\n")


def check_publishable(repository: Path, name: str) -> None:
    """What publishing model ``name`` into ``repository`` needs, checked before a long export: a name that
    can be a directory, a writable repository, and model directories holding only what export writes
    (a model directory is replaced whole: anything else in it would be lost)."""
    try:
        check_model_name(name)
    except ValueError as exc:
        raise PipelineError(str(exc)) from None
    ensure_writable_dir(repository)
    for model in model_names(name):
        model_dir = Path(repository) / model
        if not model_dir.exists():
            continue
        if not model_dir.is_dir():
            raise PipelineError(f"{model_dir} is not a directory; a model repository holds one directory per model")
        foreign = sorted(entry.name + ("/" if entry.is_dir() else "") for entry in model_dir.iterdir()
                         if not entry.name.startswith(".") and entry.name not in (CONFIG_FILENAME, EXPORTED_VERSION))
        if foreign:
            raise PipelineError(f"{model_dir} holds {', '.join(foreign)} besides what `pipeline export` writes "
                                f"({CONFIG_FILENAME}, {EXPORTED_VERSION}/); export replaces the model directory "
                                "whole: move them away or choose another --repository")


def publish_model(repository: Path, name: str, model_path: Path) -> Path:
    """``model_path`` as version 1 of model ``name`` in ``repository``, with its config.pbtxt: the model
    directory is written whole, then replaces the old one in one step."""
    from serve.model import ModelError, load_model

    try:
        model = load_model(model_path)  # the checks serve makes: what config.pbtxt describes is what serve serves
    except ModelError as exc:
        raise PipelineError(str(exc)) from None
    config = triton_config(model, name)
    target = Path(repository) / name
    with atomic_directory(target) as staged:
        (staged / EXPORTED_VERSION).mkdir()
        shutil.copyfile(model_path, staged / EXPORTED_VERSION / MODEL_FILENAME)
        (staged / CONFIG_FILENAME).write_text(config)
    return target


def publish_export(repository: Path, name: str, model_path: Path, int8_path: Path | None) -> Publication:
    """Publish an export: the model as ``name`` and its int8 model (if any) as NAME-int8. An int8 model
    already there was quantized from the model being replaced: it goes first, so that no moment (and no
    failure half-way) leaves it beside a model it was not made from."""
    repository = Path(repository)
    check_publishable(repository, name)
    remove_stale_temps(repository)  # what a killed export left: Triton would take it for a model
    result = Publication(repository)
    int8_dir = repository / (name + INT8_SUFFIX)
    if int8_dir.exists():
        try:
            remove_directory(int8_dir)
        except OSError as exc:
            raise PipelineError(f"cannot replace {int8_dir}: {exc.strerror or exc}") from None
        if int8_path is None:
            result.withdrawn.append(int8_dir)
    result.published.append(publish_model(repository, name, model_path))
    if int8_path is not None:
        result.published.append(publish_model(repository, name + INT8_SUFFIX, int8_path))
    return result
