"""`serve http --repository`: every model and version of a model repository, and Triton's repository extension."""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from serve.cli import cli
from serve.errors import ModelControlOff, ShuttingDown
from serve.server import CONFIG_ENV, DataPlane, ServerConfig, create_app
from tests.helpers import assert_one_line_error, tiny_model
from tests.serve.conftest import start_server

SMALL_LABELS = [f"class {i}" for i in range(10)]


def make_repository(directory: Path, model_path: Path) -> Path:
    """digits in versions 1 and 2 (the exported model twice), and a model of another field size."""
    for version in ("1", "2"):
        (directory / "digits" / version).mkdir(parents=True)
        shutil.copyfile(model_path, directory / "digits" / version / "model.onnx")
    (directory / "small" / "1").mkdir(parents=True)
    tiny_model(directory / "small" / "1" / "model.onnx", ["N", 1, 20, 20], SMALL_LABELS,
               {"input": {"shape": [-1, 1, 20, 20]}})
    (directory / ".digits.1.abc.tmp" / "1").mkdir(parents=True)  # an export's temporary directory: not a model
    return directory


@pytest.fixture(scope="module")
def repository(tmp_path_factory, model_path: Path) -> Path:
    return make_repository(tmp_path_factory.mktemp("repository"), model_path)


@pytest.fixture(scope="module")
def client(repository: Path):
    with TestClient(create_app(ServerConfig(repository=str(repository), max_delay_ms=1))) as c:
        yield c


@pytest.fixture()
def controlled(tmp_path: Path, model_path: Path):
    """A server of a repository of its own, with --allow-model-control."""
    directory = make_repository(tmp_path / "repository", model_path)
    with TestClient(create_app(ServerConfig(repository=str(directory), allow_model_control=True,
                                            max_delay_ms=1))) as c:
        yield c, directory


def fp32(images: np.ndarray) -> dict:
    return {"inputs": [{"name": "image", "datatype": "FP32", "shape": list(images.shape),
                        "data": images.ravel().tolist()}]}


@pytest.fixture(scope="module")
def digits(sample_dataset) -> np.ndarray:
    return sample_dataset.test_images[:4].astype(np.float32)[:, None] / 255.0


def one_line_error(response, status: int, *fragments: str) -> None:
    assert response.status_code == status, response.text
    message = response.json()["error"]
    assert "\n" not in message and all(f in message for f in fragments), message


def test_every_model_and_version_is_served(client, model, digits) -> None:
    meta = client.get("/v2/models/digits").json()
    assert meta["versions"] == ["1", "2"] and meta["inputs"][0]["shape"] == [-1, 1, 28, 28]
    latest = client.post("/v2/models/digits/infer", json=fp32(digits)).json()
    assert latest["model_name"] == "digits" and latest["model_version"] == "2"  # no version given: the latest
    first = client.post("/v2/models/digits/versions/1/infer", json=fp32(digits)).json()
    assert first["model_version"] == "1"
    np.testing.assert_allclose(np.array(first["outputs"][0]["data"]).reshape(4, -1), model.logits(digits), atol=1e-5)
    assert client.get("/v2/models/digits/versions/1/ready").json() == {"name": "digits", "version": "1",
                                                                        "ready": True}
    # another model, with its own input field: its shape comes from its own metadata
    small = client.get("/v2/models/small").json()
    assert small["inputs"][0]["shape"] == [-1, 1, 20, 20] and small["parameters"]["labels"] == SMALL_LABELS
    pixels = np.random.default_rng(0).random((2, 1, 20, 20), dtype=np.float32)
    answer = client.post("/v2/models/small/infer", json=fp32(pixels)).json()
    np.testing.assert_allclose(np.array(answer["outputs"][0]["data"]).reshape(2, 10),
                               pixels.reshape(2, -1)[:, :10], atol=1e-6)
    one_line_error(client.post("/v2/models/small/infer", json=fp32(digits)), 400, "shape [N, 1, 20, 20]")
    one_line_error(client.get("/v2/models/cats"), 404, "unknown model 'cats'", "'digits', 'small'")
    one_line_error(client.post("/v2/models/cats/infer", json=fp32(digits)), 404, "unknown model 'cats'")
    one_line_error(client.post("/v2/models/digits/versions/3/infer", json=fp32(digits)), 404,
                   "unknown version '3' of model 'digits'", "it has 1, 2")
    one_line_error(client.get("/v2/models/digits/versions/03/ready"), 404, "unknown version '03'")
    assert "model_repository" in client.get("/v2").json()["extensions"]


def test_predict_and_the_page_use_the_model_named_by_model_name(client, model, digits) -> None:
    from PIL import Image

    from tests.serve.images import encode

    png = encode(Image.fromarray((digits[0, 0] * 255).round().astype(np.uint8)))
    reading = client.post("/predict", content=png, headers={"Content-Type": "image/png"}).json()
    np.testing.assert_allclose(reading["probabilities"], model.read_fields(digits[:1, 0])[0], atol=1e-6)
    assert 'data-model="digits"' in client.get("/").text


def test_the_index_lists_every_model_version_and_state(client) -> None:
    index = client.post("/v2/repository/index").json()
    assert index == [{"name": "digits", "version": "1", "state": "READY"},
                     {"name": "digits", "version": "2", "state": "READY"},
                     {"name": "small", "version": "1", "state": "READY"}]
    assert client.post("/v2/repository/index", json={"ready": True}).json() == index
    one_line_error(client.post("/v2/repository/index", json={"ready": "yes"}), 400, "'ready' must be true or false")
    one_line_error(client.post("/v2/repository/index", content=b"[1"), 400, "malformed JSON")


def test_load_and_unload_need_allow_model_control(client, model) -> None:
    for action in ("load", "unload"):
        one_line_error(client.post(f"/v2/repository/models/digits/{action}"), 403, "--allow-model-control")
    assert client.get("/v2/models/digits/ready").status_code == 200
    with TestClient(create_app(ServerConfig(), model=model)) as single:  # `serve http --model`
        one_line_error(single.post("/v2/repository/models/digits/unload"), 403, str(ModelControlOff()))
        assert single.post("/v2/repository/index").json() == [{"name": "digits", "version": "1", "state": "READY"}]


def test_unload_and_load_again(controlled, digits) -> None:
    client, directory = controlled
    assert client.post("/v2/repository/models/digits/unload",
                       json={"parameters": {"unload_dependents": False}}).status_code == 200
    one_line_error(client.post("/v2/models/digits/infer", json=fp32(digits)), 404,
                   "model 'digits' is not loaded (unloaded)")
    one_line_error(client.post("/predict", content=b"x", headers={"Content-Type": "image/png"}), 404,
                   "model 'digits' is not loaded")
    assert [e for e in client.post("/v2/repository/index").json() if e["name"] == "digits"] == [
        {"name": "digits", "version": v, "state": "UNAVAILABLE", "reason": "unloaded"} for v in ("1", "2")]
    assert [e["name"] for e in client.post("/v2/repository/index", json={"ready": True}).json()] == ["small"]
    assert client.post("/v2/repository/models/digits/unload").status_code == 200  # already unloaded: nothing to do
    # a version added on disk is served after the next load
    shutil.copytree(directory / "digits" / "2", directory / "digits" / "3")
    assert client.post("/v2/repository/models/digits/load").status_code == 200
    assert client.get("/v2/models/digits").json()["versions"] == ["1", "2", "3"]
    assert client.post("/v2/models/digits/infer", json=fp32(digits)).json()["model_version"] == "3"


def test_a_load_that_fails_keeps_what_was_served(controlled, digits) -> None:
    client, directory = controlled
    (directory / "digits" / "4").mkdir()
    (directory / "digits" / "4" / "model.onnx").write_bytes(b"not a model")
    one_line_error(client.post("/v2/repository/models/digits/load"), 400, "cannot load model 'digits'",
                   "not a loadable ONNX model")
    assert client.post("/v2/models/digits/infer", json=fp32(digits)).json()["model_version"] == "2"
    (directory / "broken").mkdir()  # a model directory without a version
    one_line_error(client.post("/v2/repository/models/broken/load"), 400, "no version directory with a model.onnx")
    assert {"name": "broken", "state": "UNAVAILABLE", "reason": "failed to load: " + str(directory / "broken")
            + ": no version directory with a model.onnx (expected " + str(directory / "broken" / "1" / "model.onnx")
            + ")"} in client.post("/v2/repository/index").json()


@pytest.mark.parametrize("path, body, status, message", [
    ("/v2/repository/models/cats/load", None, 404, "no model 'cats' in the model repository"),
    ("/v2/repository/models/cats/unload", None, 404, "no model 'cats' in the model repository"),
    ("/v2/repository/models/../load", None, 404, "Not Found"),
    ("/v2/repository/models/..%2Fsecrets/load", None, 404, "Not Found"),
    ("/v2/repository/models/.digits.1.abc.tmp/load", None, 404, "no model '.digits.1.abc.tmp'"),
    ("/v2/repository/models/digits/load", {"parameters": {"config": "{}"}}, 400, "parameter 'config' is not supported"),
    ("/v2/repository/models/digits/load", {"parameters": "x"}, 400,
     "'parameters' of the request must be a JSON object"),
    ("/v2/repository/models/digits/unload", {"parameters": {"unload_dependents": 1}}, 400,
     "'unload_dependents' must be true or false"),
])
def test_bad_model_control_requests_are_a_one_line_4xx(controlled, path, body, status, message) -> None:
    client, _ = controlled
    response = client.post(path, content=b"" if body is None else json.dumps(body).encode())
    one_line_error(response, status, message)
    assert client.get("/v2/models/digits/ready").status_code == 200


def test_a_request_that_found_a_model_being_unloaded_gets_a_503(model, digits, tmp_path: Path) -> None:
    async def scenario(unload: bool) -> ShuttingDown:
        plane = DataPlane(ServerConfig(repository=str(tmp_path), allow_model_control=True))
        plane.serve("digits", {"1": model})
        served = plane.model_named("digits")
        await (plane.unload("digits") if unload else plane.stop())
        with pytest.raises(ShuttingDown) as caught:
            await asyncio.wait_for(plane.logits(served, digits), timeout=5)
        return caught.value

    refusal = asyncio.run(scenario(unload=True))
    assert refusal.http_status == 503 and "model 'digits' version 1 was unloaded" in str(refusal)
    assert str(asyncio.run(scenario(unload=False))) == str(ShuttingDown())  # the server stopping says so


# --------------------------------------------------------------------------- the command


def invoke(monkeypatch, *args: str):
    import uvicorn

    monkeypatch.setenv(CONFIG_ENV, "{}")  # restored after the test: the command sets it
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: None)
    return CliRunner().invoke(cli, ["http", *args])


def test_serve_http_repository_passes_its_options(repository: Path, monkeypatch) -> None:
    result = invoke(monkeypatch, "--repository", str(repository), "--allow-model-control", "--port", "0")
    assert result.exit_code == 0, result.output
    assert f"serving the repository {repository} (digits/1, digits/2, small/1)" in result.stderr
    config = ServerConfig(**json.loads(os.environ[CONFIG_ENV]))
    assert config.repository == str(repository.resolve()) and config.allow_model_control
    assert invoke(monkeypatch, "--repository", str(repository), "--model-name", "small", "--port", "0").exit_code == 0
    assert ServerConfig(**json.loads(os.environ[CONFIG_ENV])).model_name == "small"


def test_serve_http_repository_problems_are_one_line(repository: Path, model_path: Path, tmp_path: Path,
                                                     monkeypatch) -> None:
    def refused(status: int, *args: str, fragments: tuple[str, ...]) -> None:
        result = invoke(monkeypatch, *args)
        assert_one_line_error(result, *fragments)
        assert result.exit_code == status

    refused(2, "--model", str(model_path), "--repository", str(repository),
            fragments=("--model and --repository are mutually exclusive",))
    refused(2, "--allow-model-control", fragments=("--allow-model-control", "give --repository DIR"))
    refused(2, "--repository", str(repository), "--allow-model-control", "--workers", "2",
            fragments=("--allow-model-control needs --workers 1",))
    refused(1, "--repository", str(tmp_path / "none"), fragments=("is not a directory",))
    refused(1, "--repository", str(repository), "--model-name", "cats",
            fragments=("has no model 'cats' for /predict and the page", "'digits', 'small'", "--model-name"))
    broken = make_repository(tmp_path / "broken", model_path)
    (broken / "digits" / "2" / "model.onnx").write_text("not a model")
    refused(1, "--repository", str(broken), fragments=(str(broken / "digits" / "2" / "model.onnx"),
                                                       "not a loadable ONNX model"))


@pytest.mark.slow
def test_tritonclient_uses_the_repository_extension(repository: Path, tmp_path: Path, model, digits) -> None:
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    directory = shutil.copytree(repository, tmp_path / "repository")
    process, port = start_server(None, "--repository", str(directory), "--allow-model-control")
    client = httpclient.InferenceServerClient(url=f"127.0.0.1:{port}")
    try:
        assert [(e["name"], e["version"], e["state"]) for e in client.get_model_repository_index()] == [
            ("digits", "1", "READY"), ("digits", "2", "READY"), ("small", "1", "READY")]
        assert client.get_model_metadata("digits")["versions"] == ["1", "2"]
        inputs = [httpclient.InferInput("image", list(digits.shape), "FP32")]
        inputs[0].set_data_from_numpy(digits, binary_data=True)
        for version in ("1", "2"):
            result = client.infer("digits", inputs, model_version=version)
            assert result.get_response()["model_version"] == version
            np.testing.assert_allclose(result.as_numpy("logits"), model.logits(digits), atol=1e-5)
        client.unload_model("small")
        assert not client.is_model_ready("small") and client.is_model_ready("digits", "1")
        client.load_model("small")
        assert client.is_model_ready("small")
        with pytest.raises(InferenceServerException, match="no model 'cats'"):
            client.load_model("cats")
    finally:
        client.close()
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    assert "Traceback" not in stderr and f"stopped serving {directory}" in stderr, stderr
