"""`pipeline export --repository`: a model repository Triton's onnxruntime backend loads, written atomically."""
from __future__ import annotations

import errno
import os
import shutil
import subprocess
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2
from tritonclient.utils import np_to_triton_dtype

import pipeline.artifacts
import pipeline.repository
from pipeline.cli import cli
from pipeline.errors import PipelineError
from pipeline.repository import publish_export
from serve.model import load_model
from serve.repository import load_repository, models_on_disk
from tests.helpers import assert_one_line_error, tiny_model


def model_config(model_dir: Path) -> model_config_pb2.ModelConfig:
    """config.pbtxt parsed as Triton parses it: text format of its ModelConfig protobuf (unknown fields
    and wrong types are errors)."""
    return text_format.Parse((model_dir / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())


def graph_tensors(path: Path) -> tuple[dict[str, tuple[list[int], str]], dict[str, tuple[list[int], str]]]:
    """The graph's inputs and outputs as onnx reads them: name -> (dims, -1 for symbolic; Triton's type)."""
    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}

    def described(value: onnx.ValueInfoProto) -> tuple[list[int], str]:
        tensor = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim]
        return dims, "TYPE_" + np_to_triton_dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type))

    return ({v.name: described(v) for v in graph.input if v.name not in initializers},
            {v.name: described(v) for v in graph.output})


def assert_triton_loads(model_dir: Path) -> model_config_pb2.ModelConfig:
    """What Triton checks when it loads a model directory with its onnxruntime backend (model repository
    manager, then the backend's ValidateInputs/ValidateOutputs), against the graph read with onnx."""
    config = model_config(model_dir)
    assert config.name == model_dir.name  # Triton: the directory names the model
    assert config.platform == "onnxruntime_onnx"
    versions = [entry.name for entry in model_dir.iterdir() if entry.is_dir()]
    assert versions == ["1"] and (model_dir / "1" / "model.onnx").is_file()  # default_model_filename
    inputs, outputs = graph_tensors(model_dir / "1" / "model.onnx")
    assert len(config.input) == len(inputs)  # "configuration expects N inputs, model provides M"
    assert config.max_batch_size > 0 and config.HasField("dynamic_batching")
    for tensor, graph in [(t, inputs) for t in config.input] + [(t, outputs) for t in config.output]:
        assert tensor.name in graph, tensor.name
        dims, triton_type = graph[tensor.name]
        assert dims[0] == -1, (tensor.name, dims)  # batching needs a dynamic first dimension
        assert list(tensor.dims) == dims[1:], (tensor.name, list(tensor.dims), dims)
        assert model_config_pb2.DataType.Name(tensor.data_type) == triton_type
    assert {t.name for t in config.output} == set(outputs)
    return config


def hidden_entries(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.rglob(".*"))


def test_the_published_model_is_what_triton_loads_and_serve_serves(exported_run: Path, tmp_path: Path) -> None:
    model_path = exported_run / "model.onnx"
    repository = tmp_path / "repository"
    result = publish_export(repository, "digits", model_path, None)
    assert result.published == [repository / "digits"] and result.withdrawn == []
    config = assert_triton_loads(repository / "digits")
    assert (repository / "digits" / "1" / "model.onnx").read_bytes() == model_path.read_bytes()
    model = load_model(model_path)  # the dims are the metadata's: the field and one output per class
    assert list(config.input[0].dims) == [1, model.field_spec.size, model.field_spec.size]
    assert [list(o.dims) for o in config.output] == [[len(model.labels)]] * 2
    served = load_repository(repository)
    assert list(served) == ["digits"] and list(served["digits"]) == ["1"]
    assert hidden_entries(repository) == []


def test_the_config_follows_the_model_it_describes(tmp_path: Path) -> None:
    """Another field size and class count: nothing in the config is a constant of the digit model."""
    labels = [f"class {i}" for i in range(10)]
    small = tiny_model(tmp_path / "small.onnx", ["N", 1, 20, 20], labels, {"input": {"shape": [-1, 1, 20, 20]}})
    publish_export(tmp_path / "repository", "small", small, None)
    config = assert_triton_loads(tmp_path / "repository" / "small")
    assert list(config.input[0].dims) == [1, 20, 20] and [list(o.dims) for o in config.output] == [[10]]
    assert config.name == "small"


@pytest.mark.parametrize("exchange", [True, False], ids=["atomic exchange", "without renameat2"])
def test_a_new_export_replaces_the_model_directory_whole(exported_run: Path, tmp_path: Path, monkeypatch,
                                                         exchange: bool) -> None:
    if not exchange:  # another system, or a file system without RENAME_EXCHANGE
        monkeypatch.setattr(pipeline.artifacts, "exchange", lambda a, b: False)
    repository = tmp_path / "repository"
    publish_export(repository, "digits", exported_run / "model.onnx", None)
    other = tiny_model(tmp_path / "other.onnx", ["N", 1, 20, 20], [str(i) for i in range(10)],
                       {"input": {"shape": [-1, 1, 20, 20]}})
    publish_export(repository, "digits", other, None)
    config = assert_triton_loads(repository / "digits")  # the new config beside the new model, nothing old
    assert list(config.input[0].dims) == [1, 20, 20]
    assert (repository / "digits" / "1" / "model.onnx").read_bytes() == other.read_bytes()
    assert hidden_entries(repository) == []


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES], ids=["disk full", "permission"])
def test_a_failed_publication_leaves_the_previous_model_whole(exported_run: Path, tmp_path: Path,
                                                               monkeypatch, code: int) -> None:
    repository = tmp_path / "repository"
    publish_export(repository, "digits", exported_run / "model.onnx", None)
    before = {p.relative_to(repository): p.read_bytes() for p in repository.rglob("*") if p.is_file()}

    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(pipeline.repository.shutil, "copyfile", fail)
    other = tiny_model(tmp_path / "other.onnx", ["N", 1, 20, 20], [str(i) for i in range(10)],
                       {"input": {"shape": [-1, 1, 20, 20]}})
    with pytest.raises(PipelineError, match=f"cannot write .*digits: {os.strerror(code)}; the previous version"):
        publish_export(repository, "digits", other, None)
    assert {p.relative_to(repository): p.read_bytes() for p in repository.rglob("*") if p.is_file()} == before
    assert hidden_entries(repository) == []


def test_the_int8_model_is_its_own_model_and_never_outlives_its_fp32(exported_run: Path, tmp_path: Path) -> None:
    repository = tmp_path / "repository"
    model_path = exported_run / "model.onnx"
    # any servable model stands in for the int8 one here (a real one: the slow CLI test below)
    result = publish_export(repository, "digits", model_path, model_path)
    assert result.published == [repository / "digits", repository / "digits-int8"]
    assert assert_triton_loads(repository / "digits-int8").name == "digits-int8"
    result = publish_export(repository, "digits", model_path, None)  # an export without --quantize int8
    assert result.withdrawn == [repository / "digits-int8"] and not (repository / "digits-int8").exists()
    assert list(models_on_disk(repository)) == ["digits"]


def test_what_a_killed_export_left_is_removed_and_never_served(exported_run: Path, tmp_path: Path) -> None:
    repository = tmp_path / "repository"
    dead = subprocess.Popen(["true"])
    dead.wait()
    left = repository / f".digits.{dead.pid}.x1y2.tmp"
    (left / "1").mkdir(parents=True)
    shutil.copyfile(exported_run / "model.onnx", left / "1" / "model.onnx")
    assert models_on_disk(repository) == {}  # serve never takes a hidden directory for a model
    publish_export(repository, "digits", exported_run / "model.onnx", None)
    assert not left.exists() and hidden_entries(repository) == []


def test_repository_problems_are_one_line_before_the_export(tmp_path: Path) -> None:
    run = lambda *a: CliRunner().invoke(cli, ["export", "--run", str(tmp_path / "run"), *a])  # noqa: E731
    (tmp_path / "run").mkdir()  # no checkpoint: these must be refused before it is looked for
    repository = tmp_path / "repository"
    (repository / "digits" / "2").mkdir(parents=True)  # a version export would silently delete
    assert_one_line_error(run("--repository", str(repository)), "holds 2/ besides what `pipeline export` writes")
    assert_one_line_error(run("--repository", str(repository), "--model-name", "../elsewhere"),
                          "model name '../elsewhere' is not usable")
    assert_one_line_error(run("--model-name", "fashion"), "--model-name names the model in a repository")
    (tmp_path / "file").write_text("")
    assert_one_line_error(run("--repository", str(tmp_path / "file" / "repository")),
                          "cannot write to output directory")
    assert sorted(p.name for p in repository.rglob("*")) == ["2", "digits"]


@pytest.mark.slow
@pytest.mark.usefixtures("quick_calibration")
def test_export_cli_publishes_the_model_and_its_int8_model(trained_run: Path, tmp_path: Path) -> None:
    repository = tmp_path / "repository"
    result = CliRunner().invoke(cli, ["export", "--run", str(trained_run), "--out", str(tmp_path / "m.onnx"),
                                      "--quantize", "int8", "--repository", str(repository)])
    assert result.exit_code == 0, result.output
    assert f"published {repository / 'digits'} (config.pbtxt, version 1)" in result.output
    assert f"published {repository / 'digits-int8'} (config.pbtxt, version 1)" in result.output
    for name, exported in (("digits", "m.onnx"), ("digits-int8", "m-int8.onnx")):
        assert_triton_loads(repository / name)
        assert (repository / name / "1" / "model.onnx").read_bytes() == (tmp_path / exported).read_bytes()
    props = {p.key: p.value for p in onnx.load(str(repository / "digits-int8" / "1" / "model.onnx")).metadata_props}
    assert props["quantization"].startswith("int8 static QDQ")
