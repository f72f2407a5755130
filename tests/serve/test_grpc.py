"""`serve http --grpc-port`: the Open Inference Protocol over gRPC, driven by tritonclient.grpc.

The server always runs as a subprocess: its generated message classes and tritonclient.grpc's both
declare protobuf package ``inference`` from different files, and one process cannot import both
(serve/grpc_server.py). So no test module may import serve.grpc_server or serve.proto. What HTTP
answers comes from the in-process FastAPI app over the same model file, with the same limits.
"""
from __future__ import annotations

import base64
import filecmp
import http.client
import json
import queue
import re
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from fastapi.testclient import TestClient
from PIL import Image
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from serve.errors import RequestError, ShuttingDown
from serve.protocol import HEADER_LENGTH
from serve.server import ServerConfig, create_app
from tests.serve.conftest import free_port
from tests.serve.images import encode

REPO = Path(__file__).resolve().parents[2]
LIMIT_MB = 2  # --max-body-mb of the servers here: 668 images fit, 700 do not
KEY = "grpc-test-key"
INFER = "/inference.GRPCInferenceService/ModelInfer"


class ServerProcess:
    """`serve http --grpc-port 0` on 127.0.0.1, ready once it logs the port gRPC listens on (the lifespan
    logs it after the gRPC server has started: an event, no polling)."""

    def __init__(self, model_path: Path | None, *options: str, env: dict[str, str] | None = None) -> None:
        """``model_path`` None: what ``options`` say to serve (--repository DIR)."""
        self.http_port = free_port()
        model = ["--model", str(model_path)] if model_path is not None else []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "serve", "http", *model, "--port", str(self.http_port), "--grpc-port", "0",
             *options], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        self.grpc_port = int(self.wait_for(r"serving gRPC on 127\.0\.0\.1:(\d+)").group(1))
        self.address = f"127.0.0.1:{self.grpc_port}"

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.stderr.append(line)
            self.lines.put(line)
        self.lines.put(None)

    def wait_for(self, pattern: str, timeout: float = 60) -> re.Match[str]:
        """The match of the first stderr line from now on that has ``pattern``."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"no line with {pattern!r} in {timeout} s: {''.join(self.stderr)}")
            if line is None:
                pytest.fail(f"the server ended before a line with {pattern!r}: {''.join(self.stderr)}")
            match = re.search(pattern, line)
            if match:
                return match

    def http_get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
        return self.http_request("GET", path, headers)

    def http_request(self, method: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
        """A request over HTTP. uvicorn binds HTTP just after the lifespan that logged the gRPC port, so the
        first attempt can come a moment early; further attempts wait on the process ending, not a sleep."""
        deadline = time.monotonic() + 30
        while True:
            connection = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=30)
            try:
                connection.request(method, path, headers=headers or {})
                response = connection.getresponse()
                return response.status, response.read().decode()
            except ConnectionRefusedError:
                if time.monotonic() > deadline:
                    raise
                try:
                    self.process.wait(timeout=0.05)
                    pytest.fail(f"the server ended: {''.join(self.stderr)}")
                except subprocess.TimeoutExpired:
                    pass
            finally:
                connection.close()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, failure: type[BaseException] | None, *_: object) -> None:
        if failure is None:
            self.stop()
        else:  # the test's own failure is the one to see
            self.process.kill()
            self.process.wait(timeout=60)
            assert self.process.stderr is not None
            self.process.stderr.close()

    def stop(self) -> str:
        """SIGTERM, and the server's stderr once it has exited cleanly."""
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)
        while self.lines.get(timeout=10) is not None:  # the reader has everything
            pass
        assert self.process.stderr is not None
        self.process.stderr.close()
        stderr = "".join(self.stderr)
        # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status tells how it ended
        assert self.process.returncode in (0, -signal.SIGTERM) and "Traceback" not in stderr, stderr
        assert stderr.count("stopped serving") == 1 and "stopping gRPC on" in stderr, stderr
        return stderr


def metric(text: str, name: str, **labels: str) -> float:
    """One sample of a Prometheus text exposition (0 if absent)."""
    selector = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = re.escape(name + (f"{{{selector}}}" if labels else "")) + r" (\S+)"
    match = re.search(r"^" + pattern + "$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


@pytest.fixture(scope="module")
def server(model_path: Path) -> Iterator[ServerProcess]:
    with ServerProcess(model_path, "--max-body-mb", str(LIMIT_MB)) as started:
        yield started


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[grpcclient.InferenceServerClient]:
    with grpcclient.InferenceServerClient(server.address) as c:
        yield c


@pytest.fixture(scope="module")
def stub(server: ServerProcess) -> Iterator[service_pb2_grpc.GRPCInferenceServiceStub]:
    """tritonclient's own generated stub, for requests its InferenceServerClient would not build."""
    with grpc.insecure_channel(server.address) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


@pytest.fixture(scope="module")
def http_app(model) -> Iterator[TestClient]:
    """The HTTP side of the same model with the same limits, in process."""
    with TestClient(create_app(ServerConfig(max_body_bytes=LIMIT_MB * 1024 * 1024), model=model)) as c:
        yield c


@pytest.fixture(scope="module")
def digits(sample_dataset) -> np.ndarray:
    return sample_dataset.test_images[:300].astype(np.float32)[:, None] / 255.0


def infer(client: grpcclient.InferenceServerClient, images: np.ndarray, outputs: list[str] | None = None,
          model: str = "digits", **options: Any) -> grpcclient.InferResult:
    """tritonclient's ordinary call: the tensor goes as raw_input_contents."""
    tensor = grpcclient.InferInput("image", list(images.shape), "FP32")
    tensor.set_data_from_numpy(images)
    requested = None if outputs is None else [grpcclient.InferRequestedOutput(name) for name in outputs]
    return client.infer(model, [tensor], outputs=requested, **options)


def http_logits(http_app: TestClient, images: np.ndarray) -> np.ndarray:
    response = http_app.post("/v2/models/digits/infer", json={"inputs": [
        {"name": "image", "datatype": "FP32", "shape": list(images.shape), "data": images.ravel().tolist()}]})
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    return np.array(outputs["logits"]["data"], np.float32).reshape(outputs["logits"]["shape"])


def refusal(call: Any) -> tuple[grpc.StatusCode, str]:
    """The status code and message of a call that must fail (tritonclient's or a raw stub's)."""
    try:
        call()
    except InferenceServerException as exc:
        return grpc.StatusCode[str(exc.status()).removeprefix("StatusCode.")], exc.message()
    except grpc.RpcError as exc:
        return exc.code(), exc.details()
    pytest.fail("the call succeeded")


# --------------------------------------------------------------------------- health, metadata, inference


def test_health_and_metadata_match_http(client, http_app) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("digits") and client.is_model_ready("digits", "1")
    server = client.get_server_metadata()
    assert {"name": server.name, "version": server.version, "extensions": list(server.extensions)} == \
        http_app.get("/v2").json()
    meta = client.get_model_metadata("digits")
    expected = http_app.get("/v2/models/digits").json()
    assert (meta.name, list(meta.versions), meta.platform) == (expected["name"], expected["versions"],
                                                                 expected["platform"])
    for tensors, expected_tensors in ((meta.inputs, expected["inputs"]), (meta.outputs, expected["outputs"])):
        assert [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in tensors] == expected_tensors


def test_raw_and_typed_contents_give_what_http_and_onnxruntime_give(client, stub, http_app, model, digits) -> None:
    images = digits[:16]
    raw = infer(client, images, request_id="r-1")
    response = raw.get_response()
    assert (response.model_name, response.model_version, response.id) == ("digits", "1", "r-1")
    assert [o.name for o in response.outputs] == ["logits", "probabilities"]
    assert len(response.raw_output_contents) == 2  # what tritonclient reads when present
    logits = raw.as_numpy("logits")
    assert logits.dtype == np.float32 and logits.shape == (16, len(model.labels))
    np.testing.assert_allclose(logits, http_logits(http_app, images), atol=1e-6)
    np.testing.assert_allclose(logits, model.logits(images), atol=1e-5)
    np.testing.assert_allclose(raw.as_numpy("probabilities"), model.probabilities(images), atol=1e-6)

    typed = service_pb2.ModelInferRequest(model_name="digits", id="t-1")
    tensor = typed.inputs.add(name="image", datatype="FP32", shape=list(images.shape))
    tensor.contents.fp32_contents.extend(images.ravel().tolist())
    typed.outputs.add(name="probabilities")
    result = grpcclient.InferResult(stub.ModelInfer(typed))
    assert [o.name for o in result.get_response().outputs] == ["probabilities"] and result.get_response().id == "t-1"
    np.testing.assert_allclose(result.as_numpy("probabilities"), raw.as_numpy("probabilities"), atol=1e-7)


def test_image_files_as_bytes_raw_and_typed(client, stub, http_app, model, digits) -> None:
    files = [encode(Image.fromarray((digits[i, 0] * 255).round().astype(np.uint8))) for i in range(3)]
    tensor = grpcclient.InferInput("image_files", [3], "BYTES")
    tensor.set_data_from_numpy(np.array(files, dtype=np.object_))
    raw = client.infer("digits", [tensor], outputs=[grpcclient.InferRequestedOutput("logits")]).as_numpy("logits")
    typed = service_pb2.ModelInferRequest(model_name="digits")
    typed.inputs.add(name="image_files", datatype="BYTES", shape=[3]).contents.bytes_contents.extend(files)
    from_typed = grpcclient.InferResult(stub.ModelInfer(typed)).as_numpy("logits")
    encoded = [base64.b64encode(f).decode() for f in files]
    response = http_app.post("/v2/models/digits/infer", json={"inputs": [
        {"name": "image_files", "datatype": "BYTES", "shape": [3], "data": encoded}]})
    from_http = np.array(response.json()["outputs"][0]["data"], np.float32).reshape(3, -1)
    np.testing.assert_allclose(raw, from_http, atol=1e-6)
    np.testing.assert_allclose(from_typed, raw, atol=1e-7)
    np.testing.assert_allclose(raw, model.logits(digits[:3]), atol=1e-5)  # MNIST-form PNGs pass through unchanged


# --------------------------------------------------------------------------- refusals


def pixels(n: int, value: float = 0.5) -> bytes:
    return np.full((n, 1, 28, 28), value, np.float32).tobytes()


# (name, datatype, shape, raw contents) per input, the outputs asked for, what the message says
BAD_REQUESTS = [
    ("wrong shape", [("image", "FP32", [2, 28, 28], pixels(2))], [], "shape [N, 1, 28, 28]"),
    ("no images", [("image", "FP32", [0, 1, 28, 28], b"")], [], "N >= 1"),
    ("wrong datatype", [("image", "INT32", [1, 1, 28, 28], bytes(4 * 784))], [], "datatype 'INT32'"),
    ("wrong input name", [("pixels", "FP32", [1, 1, 28, 28], pixels(1))], [], "unknown FP32 input 'pixels'"),
    ("too few bytes", [("image", "FP32", [2, 1, 28, 28], pixels(1))], [], "does not hold 1568 FP32 values"),
    ("0-255 pixels", [("image", "FP32", [1, 1, 28, 28], pixels(1, 255.0))], [], "must be in [0, 1]"),
    ("NaN", [("image", "FP32", [1, 1, 28, 28], pixels(1, float("nan")))], [], "NaN or infinite"),
    ("5,000 images", [("image", "FP32", [5000, 1, 28, 28], b"")], [], "at most 4096 images"),
    ("two inputs", [("image", "FP32", [1, 1, 28, 28], pixels(1))] * 2, [], "exactly one input"),
    ("unknown output", [("image", "FP32", [1, 1, 28, 28], pixels(1))], ["features"], "unknown output 'features'"),
    ("repeated output", [("image", "FP32", [1, 1, 28, 28], pixels(1))], ["logits"] * 2, "more than once"),
    ("not an image", [("image_files", "BYTES", [1], struct.pack("<I", 5) + b"hello")], [],
     "image 0: not a recognised image format"),
    ("truncated BYTES", [("image_files", "BYTES", [1], struct.pack("<I", 50) + b"hello")], [], "runs past the end"),
]


def grpc_request(inputs: list[tuple[str, str, list[int], bytes]], outputs: list[str],
                 model: str = "digits") -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name=model)
    for name, datatype, shape, raw in inputs:
        request.inputs.add(name=name, datatype=datatype, shape=shape)
        request.raw_input_contents.append(raw)
    for name in outputs:
        request.outputs.add(name=name)
    return request


def http_refusal(http_app: TestClient, inputs: list[tuple[str, str, list[int], bytes]], outputs: list[str],
                 path: str = "/v2/models/digits/infer") -> tuple[int, str]:
    """The same request over HTTP with the binary tensor extension: its status and message."""
    header = json.dumps({
        "inputs": [{"name": name, "datatype": datatype, "shape": shape, "parameters": {"binary_data_size": len(raw)}}
                   for name, datatype, shape, raw in inputs],
        **({"outputs": [{"name": name} for name in outputs]} if outputs else {})}).encode()
    response = http_app.post(path, content=header + b"".join(raw for *_, raw in inputs),
                         headers={HEADER_LENGTH: str(len(header)), "Content-Type": "application/octet-stream"})
    return response.status_code, response.json()["error"]


@pytest.mark.parametrize("name, inputs, outputs, message", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_bad_requests_are_invalid_argument_with_the_http_message(stub, client, http_app, model, digits, name, inputs,
                                                               outputs, message) -> None:
    code, details = refusal(lambda: stub.ModelInfer(grpc_request(inputs, outputs)))
    status, http_message = http_refusal(http_app, inputs, outputs)
    assert (code, status) == (grpc.StatusCode.INVALID_ARGUMENT, 400)
    assert details == http_message and message in details and "\n" not in details
    np.testing.assert_allclose(infer(client, digits[7:8]).as_numpy("logits"), model.logits(digits[7:8]), atol=1e-5)


GRPC_ONLY = [
    ("raw and typed", "both contents and raw_input_contents"),
    ("raw for one of two", "raw_input_contents has 1 entries for 2 inputs"),
    ("fp32 in int_contents", "needs its values in raw_input_contents or contents.fp32_contents, not in int_contents"),
    ("no values", "needs its values in raw_input_contents or contents.fp32_contents"),
]


@pytest.mark.parametrize("name, message", GRPC_ONLY, ids=[g[0] for g in GRPC_ONLY])
def test_malformed_grpc_tensors_are_invalid_argument(stub, name, message) -> None:
    request = service_pb2.ModelInferRequest(model_name="digits")
    tensor = request.inputs.add(name="image", datatype="FP32", shape=[1, 1, 28, 28])
    if name == "raw and typed":
        tensor.contents.fp32_contents.extend([0.0] * 784)
        request.raw_input_contents.append(pixels(1))
    elif name == "raw for one of two":
        request.inputs.add(name="image", datatype="FP32", shape=[1, 1, 28, 28])
        request.raw_input_contents.append(pixels(1))
    elif name == "fp32 in int_contents":
        tensor.contents.int_contents.extend([0] * 784)
    code, details = refusal(lambda: stub.ModelInfer(request))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and message in details and "\n" not in details


def test_unknown_model_or_version_is_not_found_with_the_http_message(client, stub, http_app) -> None:
    good = [("image", "FP32", [1, 1, 28, 28], pixels(1))]
    code, details = refusal(lambda: stub.ModelInfer(grpc_request(good, [], model="cats")))
    assert (code, details) == (grpc.StatusCode.NOT_FOUND, http_app.get("/v2/models/cats").json()["error"])
    assert http_refusal(http_app, good, [], "/v2/models/cats/infer") == (404, details)
    versioned = grpc_request(good, [])
    versioned.model_version = "2"
    code, details = refusal(lambda: stub.ModelInfer(versioned))
    assert (code, details) == (grpc.StatusCode.NOT_FOUND, http_app.get("/v2/models/digits/versions/2").json()["error"])
    for call in (lambda: client.get_model_metadata("cats"), lambda: client.is_model_ready("cats"),
                 lambda: client.get_model_metadata("digits", "2")):
        assert refusal(call)[0] == grpc.StatusCode.NOT_FOUND


def test_a_request_above_the_body_limit_is_refused_and_the_server_stays_good(client, http_app, model, digits) -> None:
    images = np.concatenate([digits] * 3)[:700]  # 2.2 MB; the limit is 2 MiB
    code, details = refusal(lambda: infer(client, images))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and str(LIMIT_MB * 1024 * 1024) in details
    assert http_app.post("/v2/models/digits/infer", content=b" " * images.nbytes).status_code == 413  # HTTP's limit too
    fits = images[:660]
    np.testing.assert_allclose(infer(client, fits).as_numpy("logits"), model.logits(fits), atol=1e-5)


def test_every_refusal_has_a_grpc_status_code() -> None:
    def subclasses(cls: type[RequestError]) -> list[type[RequestError]]:
        return [cls] + [s for sub in cls.__subclasses__() for s in subclasses(sub)]

    refusals = subclasses(RequestError)
    assert len(refusals) >= 6
    for cls in refusals:
        assert cls.grpc_code in grpc.StatusCode.__members__ and 400 <= cls.http_status < 600, cls


# --------------------------------------------------------------------------- a model repository


def test_every_model_and_version_of_a_repository(tmp_path: Path, model_path: Path, model) -> None:
    """digits 1 (the exported model) and 2 (logits: the first 10 pixels), and small (20x20 fields): each
    call gets the version it names, or the latest, with that version's input and outputs, as over HTTP;
    a model unloaded over HTTP is gone for gRPC too (one data plane)."""
    import shutil

    from tests.helpers import tiny_model

    repository = tmp_path / "repository"
    for directory in ("digits/1", "digits/2", "small/1"):
        (repository / directory).mkdir(parents=True)
    shutil.copyfile(model_path, repository / "digits" / "1" / "model.onnx")
    tiny_model(repository / "digits" / "2" / "model.onnx", ["N", 1, 28, 28], [f"v2 {i}" for i in range(10)])
    tiny_model(repository / "small" / "1" / "model.onnx", ["N", 1, 20, 20], [f"small {i}" for i in range(10)],
               {"input": {"shape": [-1, 1, 20, 20]}})
    rng = np.random.default_rng(13)
    images, fields = rng.random((4, 1, 28, 28), np.float32), rng.random((3, 1, 20, 20), np.float32)
    first_pixels = images.reshape(4, -1)[:, :10]  # what version 2 answers
    with ServerProcess(None, "--repository", str(repository), "--allow-model-control") as server, \
            grpcclient.InferenceServerClient(server.address) as client, \
            TestClient(create_app(ServerConfig(repository=str(repository)))) as http_app:
        for version, expected in (("1", model.logits(images)), ("2", first_pixels), ("", first_pixels)):
            result = infer(client, images, model_version=version)
            assert result.get_response().model_version == (version or "2")
            np.testing.assert_allclose(result.as_numpy("logits"), expected, atol=1e-5)
        small = infer(client, fields, model="small")
        assert (small.get_response().model_name, small.get_response().model_version) == ("small", "1")
        np.testing.assert_allclose(small.as_numpy("logits"), fields.reshape(3, -1)[:, :10], atol=1e-7)

        for name, version in (("digits", ""), ("digits", "1"), ("digits", "2"), ("small", "")):
            assert client.is_model_ready(name, version)
            meta = client.get_model_metadata(name, version)
            expected_meta = http_app.get(f"/v2/models/{name}" + (f"/versions/{version}" if version else "")).json()
            assert (meta.name, list(meta.versions)) == (expected_meta["name"], expected_meta["versions"])
            assert [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in meta.outputs] == \
                expected_meta["outputs"]
        assert list(client.get_model_metadata("digits").versions) == ["1", "2"]
        classes = {version: list(client.get_model_metadata("digits", version).outputs[0].shape)
                   for version in ("", "1", "2")}
        assert classes == {"": [-1, 10], "1": [-1, len(model.labels)], "2": [-1, 10]}  # blank: the latest, 2

        wrong_field = refusal(lambda: infer(client, images, model="small"))  # small's field, not digits'
        assert wrong_field[0] == grpc.StatusCode.INVALID_ARGUMENT and "shape [N, 1, 20, 20]" in wrong_field[1]
        for model_name, version, path in (("digits", "3", "/v2/models/digits/versions/3"),
                                          ("cats", "", "/v2/models/cats")):
            code, details = refusal(lambda m=model_name, v=version: infer(client, images, model=m, model_version=v))
            assert (code, details) == (grpc.StatusCode.NOT_FOUND, http_app.get(path).json()["error"])
        assert "'digits', 'small'" in details  # the models this server serves

        assert server.http_request("POST", "/v2/repository/models/small/unload")[0] == 200
        for call in (lambda: client.is_model_ready("small"), lambda: infer(client, fields, model="small")):
            assert refusal(call) == (grpc.StatusCode.NOT_FOUND, "model 'small' is not loaded (unloaded)")


# --------------------------------------------------------------------------- batching, the API key, metrics


@pytest.fixture(scope="module")
def batching_server(model_path: Path) -> Iterator[ServerProcess]:
    """A batch runs when 8 images wait, or after a minute: only batching answers 8 single images at once."""
    import os

    with ServerProcess(model_path, "--max-batch", "8", "--max-delay-ms", "60000",
                       env={**os.environ, "FOLDSERVE_API_KEY": KEY}) as started:
        yield started


def test_concurrent_calls_are_batched_and_counted(batching_server, model, digits) -> None:
    auth = {"authorization": f"Bearer {KEY}"}
    before = batching_server.http_get("/metrics", auth)[1]
    with grpcclient.InferenceServerClient(batching_server.address) as client, ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: infer(client, digits[i:i + 1], ["logits"], headers=auth,
                                                client_timeout=30).as_numpy("logits")[0], range(8)))
    np.testing.assert_allclose(np.stack(answers), model.logits(digits[:8]), atol=1e-5)  # each its own row
    status, after = batching_server.http_get("/metrics", auth)
    assert status == 200
    assert metric(after, "foldserve_batch_size_count") - metric(before, "foldserve_batch_size_count") == 1
    assert metric(after, "foldserve_batch_size_sum") - metric(before, "foldserve_batch_size_sum") == 8
    assert metric(after, "foldserve_requests_total", endpoint=INFER, status="OK") - \
        metric(before, "foldserve_requests_total", endpoint=INFER, status="OK") == 8


def test_the_api_key_guards_all_but_health(batching_server, model) -> None:
    with grpcclient.InferenceServerClient(batching_server.address) as client:
        assert client.is_server_live() and client.is_server_ready()  # open, as HTTP's health routes
        code, details = refusal(lambda: client.get_model_metadata("digits"))
        with TestClient(create_app(ServerConfig(api_key=KEY), model=model)) as guarded:
            assert (code, details) == (grpc.StatusCode.UNAUTHENTICATED,
                                       guarded.get("/v2/models/digits").json()["error"])
        for headers in ({"authorization": "Bearer wrong"}, {"authorization": KEY}):
            assert refusal(lambda h=headers: client.get_model_metadata("digits", headers=h))[0] == \
                grpc.StatusCode.UNAUTHENTICATED
        code, _ = refusal(lambda: infer(client, np.zeros((8, 1, 28, 28), np.float32)))
        assert code == grpc.StatusCode.UNAUTHENTICATED
        assert client.get_model_metadata("digits", headers={"authorization": f"Bearer {KEY}"}).name == "digits"


@pytest.mark.slow
def test_a_full_queue_is_resource_exhausted(model_path: Path, digits) -> None:
    """One request computing, one waiting: the others are refused at once, with HTTP's 503 message."""
    images = np.concatenate([digits] * 2)[:512]
    with ServerProcess(model_path, "--max-queue", "1", "--max-batch", "1") as server, \
            grpcclient.InferenceServerClient(server.address) as client, ThreadPoolExecutor(16) as pool:
        def one(_: int) -> tuple[grpc.StatusCode, str]:
            try:
                infer(client, images, ["logits"], client_timeout=60)
                return grpc.StatusCode.OK, ""
            except InferenceServerException as exc:
                return grpc.StatusCode[str(exc.status()).removeprefix("StatusCode.")], exc.message()

        outcomes = list(pool.map(one, range(16)))
    refused = [message for code, message in outcomes if code == grpc.StatusCode.RESOURCE_EXHAUSTED]
    assert refused and grpc.StatusCode.OK in [code for code, _ in outcomes], outcomes
    assert len(refused) + sum(code == grpc.StatusCode.OK for code, _ in outcomes) == 16, outcomes
    assert set(refused) == {"server overloaded: inference queue is full, retry later"}


@pytest.mark.slow
def test_sigterm_finishes_the_call_in_flight_and_refuses_new_ones(model_path: Path, model, digits) -> None:
    with ServerProcess(model_path, "--max-batch", "2", "--max-delay-ms", "3000") as server, \
            grpcclient.InferenceServerClient(server.address) as client, ThreadPoolExecutor(1) as pool:
        pending = pool.submit(infer, client, digits[:1], ["logits"], client_timeout=60)  # waits 3 s for company
        deadline = time.monotonic() + 30
        while metric(server.http_get("/metrics")[1], "foldserve_grpc_calls_in_flight") != 1:  # it has arrived
            assert time.monotonic() < deadline and not pending.done(), "the call never arrived"
        server.process.send_signal(signal.SIGTERM)
        server.wait_for(r"stopping gRPC on .* \(1 calls in flight\)")
        code, details = refusal(lambda: infer(client, digits[1:2], client_timeout=10))
        assert (code, details) == (grpc.StatusCode.UNAVAILABLE, str(ShuttingDown()))  # HTTP's 503 message
        np.testing.assert_allclose(pending.result(timeout=60).as_numpy("logits"), model.logits(digits[:1]), atol=1e-5)


# --------------------------------------------------------------------------- the command line and the generated code


def test_serve_http_grpc_port_option(model_path, monkeypatch) -> None:
    import os

    import uvicorn
    from click.testing import CliRunner

    from serve.cli import cli
    from serve.server import CONFIG_ENV
    from tests.helpers import assert_one_line_error

    started: list[dict] = []
    monkeypatch.setenv(CONFIG_ENV, "{}")
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: started.append(kwargs))
    result = CliRunner().invoke(cli, ["http", "--model", str(model_path), "--port", "0", "--grpc-port", "0"])
    assert result.exit_code == 0, result.output
    assert ServerConfig(**json.loads(os.environ[CONFIG_ENV])).grpc_address == "127.0.0.1:0"
    assert "and gRPC 127.0.0.1:0" in result.stderr
    CliRunner().invoke(cli, ["http", "--model", str(model_path), "--port", "0"])
    assert ServerConfig(**json.loads(os.environ[CONFIG_ENV])).grpc_address is None  # off unless asked for
    assert len(started) == 2
    with grpc_port_taken() as port:
        result = CliRunner().invoke(cli, ["http", "--model", str(model_path), "--port", "0", "--grpc-port", str(port)])
    assert_one_line_error(result, f"cannot listen on 127.0.0.1:{port} for gRPC", "pick another --grpc-port")
    result = CliRunner().invoke(cli, ["http", "--model", str(model_path), "--port", "8123", "--grpc-port", "8123"])
    assert_one_line_error(result, "cannot listen on 127.0.0.1:8123 for gRPC: it is the HTTP --port")
    assert result.exit_code == 2
    result = CliRunner().invoke(cli, ["http", "--model", str(model_path), "--port", "0", "--grpc-port", "0",
                                      "--workers", "2"])  # each worker binds gRPC: port 0 would differ per worker
    assert_one_line_error(result, "--grpc-port 0 (any free port) would give each of the 2 workers another port")
    assert result.exit_code == 2 and len(started) == 2


class grpc_port_taken:
    def __enter__(self) -> int:
        import socket

        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen()
        return self.socket.getsockname()[1]

    def __exit__(self, *exc: object) -> None:
        self.socket.close()


def test_grpc_port_without_the_extra_says_which_extra(model_path, monkeypatch) -> None:
    import uvicorn
    from click.testing import CliRunner

    from serve.cli import cli
    from serve.server import CONFIG_ENV
    from tests.helpers import assert_one_line_error

    started: list[dict] = []
    monkeypatch.setenv(CONFIG_ENV, "{}")
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: started.append(kwargs))
    monkeypatch.setitem(sys.modules, "grpc", None)  # `import grpc` now fails as if it were not installed
    result = CliRunner().invoke(cli, ["http", "--model", str(model_path), "--grpc-port", "0"])
    assert_one_line_error(result, "--grpc-port needs the grpc extra (grpcio is not installed)",
                          "pip install 'foldserve[grpc]'")
    assert result.exit_code == 1 and not started


def test_serve_help_and_predict_do_not_import_grpc(model_path) -> None:
    script = f"""
import sys
from click.testing import CliRunner
from serve.cli import cli
for args in (["--help"], ["http", "--help"], ["predict", "--model", {str(model_path)!r}, {str(REPO / "examples")!r}]):
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, (args, result.output)
print(sorted(m for m in sys.modules if m == "grpc" or m.startswith(("grpc.", "google.protobuf", "serve.proto"))))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_generated_code_is_the_protos(tmp_path) -> None:
    """serve/proto/*_pb2*.py are generated (`make proto`) and committed: they must say what the .proto says."""
    pytest.importorskip("grpc_tools")
    from importlib.metadata import version

    committed = REPO / "serve" / "proto"
    generated_by = re.search(r"GRPC_GENERATED_VERSION = '([^']+)'", (committed / "inference_pb2_grpc.py").read_text())
    assert generated_by is not None
    if version("grpcio-tools") != generated_by.group(1):
        pytest.skip(f"grpcio-tools {version('grpcio-tools')} generates other text than {generated_by.group(1)}, "
                    "which made the committed files (constraints.txt)")
    (tmp_path / "serve" / "proto").mkdir(parents=True)
    (tmp_path / "serve" / "proto" / "inference.proto").write_bytes((committed / "inference.proto").read_bytes())
    result = subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I.", "--python_out=.", "--pyi_out=.",
                             "--grpc_python_out=.", "serve/proto/inference.proto"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    for name in ("inference_pb2.py", "inference_pb2.pyi", "inference_pb2_grpc.py"):
        assert filecmp.cmp(tmp_path / "serve" / "proto" / name, committed / name, shallow=False), \
            f"serve/proto/{name} does not match serve/proto/inference.proto: run `make proto` and commit"
