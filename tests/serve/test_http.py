"""`serve http`: unit tests through FastAPI's TestClient, protocol and load tests against the real server."""
from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import cast

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

import serve.server
from serve.protocol import HEADER_LENGTH
from serve.model import DigitModel
from serve.server import CONFIG_ENV, ServerConfig, ServingApp, create_app
from tests.serve.conftest import start_server
from tests.serve.images import encode, number_strokes, written

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def client(model):
    app = create_app(ServerConfig(max_body_bytes=200_000, max_delay_ms=1), model=model)
    with TestClient(app) as c:  # runs the lifespan: the batcher starts and stops with it
        yield c


@pytest.fixture(scope="module")
def digits(sample_dataset) -> tuple[np.ndarray, np.ndarray]:
    return sample_dataset.test_images[:300].astype(np.float32)[:, None] / 255.0, sample_dataset.test_labels[:300]


def fp32_request(images: np.ndarray, **extra) -> dict:
    return {"inputs": [{"name": "image", "datatype": "FP32", "shape": list(images.shape),
                        "data": images.ravel().tolist()}], **extra}


def test_health_and_metadata(client, model) -> None:
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").status_code == 200
    assert "binary_tensor_data" in client.get("/v2").json()["extensions"]
    meta = client.get("/v2/models/digits").json()
    assert meta["inputs"][0] == {"name": "image", "datatype": "FP32", "shape": [-1, 1, 28, 28]}
    classes = len(model.labels)
    assert {o["name"]: o["shape"] for o in meta["outputs"]} == {"logits": [-1, classes], "probabilities": [-1, classes]}
    assert meta["parameters"]["labels"] == model.labels
    assert client.get("/v2/models/digits/ready").json()["ready"] is True
    missing = client.get("/v2/models/cats")
    assert missing.status_code == 404 and "unknown model 'cats'" in missing.json()["error"]
    assert client.get("/nowhere").json() == {"error": "Not Found"}


def test_infer_fp32_json_matches_the_model(client, model, digits) -> None:
    images, _ = digits
    response = client.post("/v2/models/digits/infer", json=fp32_request(images[:5], id="r1"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_name"] == "digits" and body["id"] == "r1"
    outputs = {o["name"]: o for o in body["outputs"]}
    classes = len(model.labels)
    assert outputs["logits"]["shape"] == [5, classes] and outputs["logits"]["datatype"] == "FP32"
    np.testing.assert_allclose(np.array(outputs["logits"]["data"]).reshape(5, classes), model.logits(images[:5]),
                               atol=1e-5)
    np.testing.assert_allclose(np.array(outputs["probabilities"]["data"]).reshape(5, classes).sum(1), 1, atol=1e-5)


def test_infer_with_encoded_image_files(client, model, digits) -> None:
    images, _ = digits
    files = [encode(Image.fromarray((images[i, 0] * 255).round().astype(np.uint8))) for i in range(3)]
    request = {"inputs": [{"name": "image_files", "datatype": "BYTES", "shape": [3],
                           "data": [base64.b64encode(f).decode() for f in files]}],
               "outputs": [{"name": "logits"}]}
    response = client.post("/v2/models/digits/infer", json=request)
    assert response.status_code == 200, response.text
    logits = np.array(response.json()["outputs"][0]["data"]).reshape(3, len(model.labels))
    np.testing.assert_allclose(logits, model.logits(images[:3]), atol=1e-5)  # MNIST-form PNGs pass through unchanged


def test_binary_tensor_extension_both_ways(client, model, digits) -> None:
    images = digits[0][:4]
    header = json.dumps({"inputs": [{"name": "image", "datatype": "FP32", "shape": [4, 1, 28, 28],
                                     "parameters": {"binary_data_size": images.nbytes}}],
                         "outputs": [{"name": "logits", "parameters": {"binary_data": True}}]}).encode()
    response = client.post("/v2/models/digits/infer", content=header + images.tobytes(),
                           headers={"Inference-Header-Content-Length": str(len(header)),
                                    "Content-Type": "application/octet-stream"})
    assert response.status_code == 200, response.text
    n = int(response.headers["Inference-Header-Content-Length"])
    meta = json.loads(response.content[:n])
    assert meta["outputs"][0]["parameters"]["binary_data_size"] == 4 * len(model.labels) * 4
    logits = np.frombuffer(response.content[n:], dtype="<f4").reshape(4, len(model.labels))
    np.testing.assert_allclose(logits, model.logits(images), atol=1e-5)


BINARY_HEADER = json.dumps({"inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 1, 28, 28],
                                        "parameters": {"binary_data_size": 784 * 4}}]}).encode()
BAD_REQUESTS = [
    ("malformed JSON", b'{"inputs": [', {}, 400, "malformed JSON"),
    ("wrong shape", json.dumps({"inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 28, 28],
                                           "data": [0.0] * 784}]}).encode(), {}, 400, "shape [N, 1, 28, 28]"),
    ("wrong datatype", json.dumps({"inputs": [{"name": "image", "datatype": "INT64", "shape": [1, 1, 28, 28],
                                              "data": [0] * 784}]}).encode(), {}, 400, "datatype 'INT64'"),
    ("wrong element count", json.dumps({"inputs": [{"name": "image", "datatype": "FP32", "shape": [2, 1, 28, 28],
                                                   "data": [0.0] * 784}]}).encode(), {}, 400, "784 elements"),
    # JSON has no NaN: Python's json module reads the literal, the server (orjson) refuses it as JSON
    ("NaN in JSON", b'{"inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 1, 28, 28], "data": [NaN'
                    + b', 0.0' * 783 + b']}]}', {}, 400, "malformed JSON"),
    ("NaN as binary", BINARY_HEADER + np.full(784, np.nan, "<f4").tobytes(),
     {HEADER_LENGTH: str(len(BINARY_HEADER))}, 400, "NaN or infinite"),
    ("0-255 pixels", json.dumps({"inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 1, 28, 28],
                                             "data": [255.0] * 784}]}).encode(), {}, 400, "must be in [0, 1]"),
    ("no inputs", b'{"outputs": []}', {}, 400, "exactly one input"),
    ("unknown output", json.dumps({**fp32_request(np.zeros((1, 1, 28, 28), np.float32)),
                                   "outputs": [{"name": "features"}]}).encode(), {}, 400, "unknown output"),
    ("bad base64", json.dumps({"inputs": [{"name": "f", "datatype": "BYTES", "shape": [1],
                                          "data": ["***"]}]}).encode(), {}, 400, "base64"),
    ("not an image", json.dumps({"inputs": [{"name": "f", "datatype": "BYTES", "shape": [1],
                                            "data": [base64.b64encode(b"hello").decode()]}]}).encode(),
     {}, 400, "image 0: not a recognised image format"),
    ("nested 90,000 deep", b'{"inputs": ' + b"[" * 90_000 + b"]" * 90_000 + b"}", {}, 400, "malformed JSON"),
    ("5,000-digit integer", b'{"inputs": [{"name": "image", "data": [' + b"9" * 5000 + b"]}]}", {}, 400,
     "malformed JSON"),
    ("400-digit integer pixel", b'{"inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 1, 28, 28], '
     b'"data": [' + b"9" * 400 + b', 0' * 783 + b"]}]}", {}, 400, "malformed JSON"),  # orjson: "number is infinity"
    ("pixels as strings", json.dumps({"inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 1, 28, 28],
                                                 "data": ["0.5"] * 784}]}).encode(), {}, 400, "JSON numbers only"),
    ("pixels as booleans", json.dumps({"inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 1, 28, 28],
                                                  "data": [0.0] * 783 + [True]}]}).encode(), {}, 400,
     "JSON numbers only"),
    ("parameters as a string", json.dumps({"inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 1, 28, 28],
                                                      "data": [0.0] * 784, "parameters": "binary_data_size"}]}
                                          ).encode(), {}, 400, "'parameters' of the input must be a JSON object"),
    ("parameters as a list", json.dumps({**fp32_request(np.zeros((1, 1, 28, 28), np.float32)), "parameters": [1]}
                                        ).encode(), {}, 400, "'parameters' of the request must be a JSON object"),
    ("binary flag as a string", json.dumps({**fp32_request(np.zeros((1, 1, 28, 28), np.float32)),
                                            "parameters": {"binary_data_output": "yes"}}).encode(), {}, 400,
     "must be true or false"),
    ("repeated outputs", json.dumps({**fp32_request(np.zeros((1, 1, 28, 28), np.float32)),
                                     "outputs": [{"name": "probabilities"}] * 5_000}).encode(), {}, 400,
     "requested more than once"),
    ("header length 1_3", b'{"inputs": []}' + bytes(8), {HEADER_LENGTH: "1_4"}, 400, "must be a decimal integer"),
    ("wrong content type", b"<xml/>", {"Content-Type": "text/xml"}, 415, "content type 'text/xml'"),
    ("too large", b"{" + b" " * 300_000 + b"}", {}, 413, "above the limit"),
]


@pytest.mark.parametrize("name, body, headers, status, message", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_bad_requests_get_a_clear_error_and_the_server_stays_good(client, model, digits, name, body, headers,
                                                                  status, message) -> None:
    response = client.post("/v2/models/digits/infer", content=body,
                           headers={"Content-Type": "application/json", **headers})
    assert response.status_code == status, response.text
    assert message in response.json()["error"]
    good = client.post("/v2/models/digits/infer", json=fp32_request(digits[0][7:8]))
    assert good.status_code == 200
    np.testing.assert_allclose(np.array(good.json()["outputs"][0]["data"]), model.logits(digits[0][7:8])[0], atol=1e-5)


def serve_predict_json(model, path: Path, *options: str) -> dict:
    from click.testing import CliRunner

    from serve.cli import cli

    result = CliRunner().invoke(cli, ["predict", "--model", str(model.path), "--json", *options, str(path)])
    return json.loads(result.stdout)


def without_image(record: dict) -> dict:
    return {k: v for k, v in record.items() if k != "image"}


NUMBER_SIZE = (640, 300)


@pytest.fixture(scope="module")
def number_png() -> bytes:
    """"17" written big and clear, the two digits far apart, dark on white."""
    return encode(written(number_strokes("17", left=110, top=50, height=200, pitch=280), NUMBER_SIZE))


def test_predict_endpoint_matches_serve_predict_json(client, model, digits, tmp_path) -> None:
    png = encode(Image.fromarray((digits[0][0, 0] * 255).round().astype(np.uint8)))
    raw = client.post("/predict", content=png, headers={"Content-Type": "image/png"}).json()
    form = client.post("/predict", files={"file": ("digit.png", png, "image/png")}).json()
    expected = model.read_fields(digits[0][:1, 0])[0]  # the mean over the model's views, as serve predict reads
    for result in (raw, form):
        assert result["not_a_digit"] is False and result["text"] == result["digits"][0]["label"]
        assert result["label"] == int(model.labels[int(expected.argmax())])
        np.testing.assert_allclose(result["probabilities"], expected, atol=1e-6)
    assert raw["image"] == "upload" and form["image"] == "digit.png"
    (tmp_path / "digit.png").write_bytes(png)  # the same object as `serve predict --json`
    assert without_image(serve_predict_json(model, tmp_path / "digit.png")) == without_image(form)
    assert client.post("/predict", content=b"x", headers={"Content-Type": "text/plain"}).status_code == 415
    assert client.post("/predict", files={"other": ("a.png", png)}).status_code == 400


def test_predict_answers_a_strip_one_pixel_tall(client) -> None:
    # a 1 x 300 image: the crop rule found no ring inside its border (IndexError), a 500 before
    strip = np.full((1, 300), 250, np.uint8)
    strip[:, ::7] = 0
    response = client.post("/predict", files={"file": ("strip.png", encode(Image.fromarray(strip)), "image/png")})
    assert response.status_code == 200, response.text
    assert response.json()["not_a_digit"] is True


def test_predict_reads_a_number_left_to_right_with_boxes(client, model, number_png, tmp_path) -> None:
    response = client.post("/predict", files={"file": ("number.png", number_png, "image/png")})
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["text"] == "17" and result["not_a_digit"] is False, result
    assert [d["label"] for d in result["digits"]] == ["1", "7"]
    assert result["label"] is None and result["probability"] is None and "probabilities" not in result
    boxes = [d["box"] for d in result["digits"]]
    width, height = NUMBER_SIZE
    for x, y, w, h in boxes:
        assert 0 <= x and 0 <= y and w > 0 and h > 0 and x + w <= width and y + h <= height
        assert h > 150  # each box holds its whole digit (200 px tall strokes)
    assert boxes[0][0] + boxes[0][2] <= boxes[1][0]  # left to right, apart
    (tmp_path / "number.png").write_bytes(number_png)
    assert without_image(serve_predict_json(model, tmp_path / "number.png")) == without_image(result)


def test_predict_refuses_a_blank_image_with_a_200(client, model, tmp_path) -> None:
    blank = encode(Image.new("L", (64, 64), 255))
    response = client.post("/predict", content=blank, headers={"Content-Type": "image/png"})
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["not_a_digit"] is True and result["text"] is None and result["label"] is None
    assert result["digits"] == [] and isinstance(result["reason"], str) and result["reason"]
    (tmp_path / "blank.png").write_bytes(blank)
    assert without_image(serve_predict_json(model, tmp_path / "blank.png")) == without_image(result)


def test_predict_min_confidence_parameter(client, model, number_png, tmp_path) -> None:
    accepted = client.post("/predict", content=number_png, headers={"Content-Type": "image/png"}).json()
    lowest = min(d["probability"] for d in accepted["digits"])
    assert lowest < 1.0  # float32 probabilities of a real model: a threshold of 1 refuses
    strict = client.post("/predict?min_confidence=1.0", content=number_png, headers={"Content-Type": "image/png"})
    assert strict.status_code == 200, strict.text
    refused = strict.json()
    assert refused["not_a_digit"] is True and refused["text"] is None and refused["label"] is None
    assert refused["reason"] and refused["best_guess"]["probability"] == pytest.approx(lowest)
    (tmp_path / "number.png").write_bytes(number_png)
    assert without_image(serve_predict_json(model, tmp_path / "number.png", "--min-confidence", "1.0")) \
        == without_image(refused)
    lenient = client.post("/predict?min_confidence=0", content=number_png, headers={"Content-Type": "image/png"})
    assert lenient.json()["text"] == "17"
    for bad in ("abc", "1.5", "-0.1", "nan", ""):
        response = client.post(f"/predict?min_confidence={bad}", content=number_png,
                               headers={"Content-Type": "image/png"})
        assert response.status_code == 400, (bad, response.text)
        assert set(response.json()) == {"error"} and "min_confidence" in response.json()["error"]


@pytest.mark.parametrize("name, data, reason", [
    ("garbage", b"not an image at all", "not a recognised image format"),
    ("truncated", None, ""),
    ("empty", b"", "empty file"),
])
def test_predict_unreadable_image_is_a_one_line_400(client, number_png, name, data, reason) -> None:
    data = number_png[:len(number_png) // 2] if data is None else data
    for response, image in ((client.post("/predict", content=data, headers={"Content-Type": "image/png"}), "upload"),
                            (client.post("/predict", files={"file": (f"{name}.png", data, "image/png")}),
                             f"{name}.png")):
        assert response.status_code == 400, response.text
        assert set(response.json()) == {"error"}
        message = response.json()["error"]
        assert message.startswith(f"{image}: ") and reason in message and "\n" not in message
    assert client.post("/predict", content=number_png, headers={"Content-Type": "image/png"}).json()["text"] == "17"


def test_predict_refuses_images_above_max_pixels(model, number_png) -> None:
    app = create_app(ServerConfig(max_pixels=100_000, max_delay_ms=1), model=model)
    with TestClient(app) as client:
        response = client.post("/predict", content=number_png, headers={"Content-Type": "image/png"})
        assert response.status_code == 400 and "above the limit of 100,000" in response.json()["error"]
        small = encode(Image.new("L", (300, 300), 255))
        assert client.post("/predict", content=small, headers={"Content-Type": "image/png"}).status_code == 200
        files = {"inputs": [{"name": "image_files", "datatype": "BYTES", "shape": [1],
                             "data": [base64.b64encode(number_png).decode()]}]}
        response = client.post("/v2/models/digits/infer", json=files)  # the OIP v2 image files too
        assert response.status_code == 400 and "image 0: " in response.json()["error"]
        assert "above the limit of 100,000" in response.json()["error"]


def test_at_most_max_decodes_images_are_decoded_at_once(model, number_png, monkeypatch) -> None:
    """max_decodes=1: three /predict requests and one OIP BYTES request, all with their bodies read, and
    only one of them decoding; the others wait for its slot, then each gets its answer."""
    lock = threading.Lock()
    inside, most = [0], [0]
    arrived, entered, go = threading.Semaphore(0), threading.Semaphore(0), threading.Event()

    def counting(decode):
        def run(*args, **kwargs):
            with lock:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
            entered.release()
            try:
                assert go.wait(timeout=60), "the test never let the decode go on"
                return decode(*args, **kwargs)
            finally:
                with lock:
                    inside[0] -= 1
        return run

    real_read_body = serve.server.read_body

    async def read_body(request, limit: int) -> bytes:
        body = await real_read_body(request, limit)
        # the handler awaits nothing between here and the decode slot, and the event loop runs one
        # step at a time: once the test hears this, the request is decoding or waiting for its slot
        arrived.release()
        return body

    monkeypatch.setattr(serve.server, "prepare_page", counting(serve.server.prepare_page))
    monkeypatch.setattr(serve.server, "infer_request", counting(serve.server.infer_request))
    monkeypatch.setattr(serve.server, "read_body", read_body)
    files_request = {"inputs": [{"name": "image_files", "datatype": "BYTES", "shape": [1],
                                 "data": [base64.b64encode(number_png).decode()]}]}
    app = create_app(ServerConfig(max_decodes=1, max_delay_ms=1), model=model)
    with TestClient(app) as client, ThreadPoolExecutor(4) as pool:
        pending = [pool.submit(client.post, "/predict", content=number_png, headers={"Content-Type": "image/png"})
                   for _ in range(3)]
        pending.append(pool.submit(client.post, "/v2/models/digits/infer", json=files_request))
        try:
            for _ in pending:
                assert arrived.acquire(timeout=60)
            assert entered.acquire(timeout=60)
            with lock:
                assert inside[0] == 1
            assert app.state.plane.decodes.locked()
        finally:
            go.set()
        responses = [p.result(timeout=60) for p in pending]
    assert [r.status_code for r in responses] == [200] * 4, [r.text for r in responses]
    assert [r.json()["text"] for r in responses[:3]] == ["17"] * 3
    assert most[0] == 1


def test_tensor_requests_do_not_wait_for_the_decode_slots(model, digits, number_png, monkeypatch) -> None:
    """With the only decode slot held by an image that will not finish until the test says so, small
    FP32 requests are still answered: they are parsed on the event loop, without a decode slot (large
    ones take a slot, as their parsed values are a large allocation too)."""
    decoding, go = threading.Event(), threading.Event()
    prepare_page = serve.server.prepare_page

    def stalled(*args, **kwargs):
        decoding.set()
        assert go.wait(timeout=60), "the test never let the decode go on"
        return prepare_page(*args, **kwargs)

    monkeypatch.setattr(serve.server, "prepare_page", stalled)
    images, _ = digits
    app = create_app(ServerConfig(max_decodes=1), model=model)
    with TestClient(app) as client, ThreadPoolExecutor(1) as pool:
        upload = pool.submit(client.post, "/predict", content=number_png, headers={"Content-Type": "image/png"})
        try:
            assert decoding.wait(timeout=60)
            assert app.state.plane.decodes.locked()
            for count in (1, 8):
                response = client.post("/v2/models/digits/infer", json=fp32_request(images[:count]))
                assert response.status_code == 200, response.text
                logits = np.array(response.json()["outputs"][0]["data"]).reshape(count, -1)
                np.testing.assert_allclose(logits, model.logits(images[:count]), atol=1e-4)
            assert not upload.done()
        finally:
            go.set()
        assert upload.result(timeout=60).json()["text"] == "17"


def test_serve_http_passes_its_limits_to_the_server(model_path, monkeypatch) -> None:
    import uvicorn
    from click.testing import CliRunner

    from serve.cli import cli

    monkeypatch.setenv(CONFIG_ENV, "{}")  # restored after the test: the command sets it
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: None)
    result = CliRunner().invoke(cli, ["http", "--model", str(model_path), "--max-decodes", "3",
                                      "--max-pixels", "5000000", "--port", "0"])
    assert result.exit_code == 0, result.output
    config = ServerConfig(**json.loads(os.environ[CONFIG_ENV]))
    assert config.max_decodes == 3 and config.max_pixels == 5_000_000
    result = CliRunner().invoke(cli, ["http", "--model", str(model_path), "--port", "0"])
    from serve.image.decode import DEFAULT_MAX_PIXELS

    config = ServerConfig(**json.loads(os.environ[CONFIG_ENV]))
    assert config.max_decodes == 2 and config.max_pixels == DEFAULT_MAX_PIXELS
    assert CliRunner().invoke(cli, ["http", "--model", str(model_path), "--max-decodes", "0"]).exit_code == 2
    assert config.allowed_hosts == ("localhost", "127.0.0.1", "::1") and config.api_key is None
    assert "warning" not in result.output


def test_serve_http_warns_when_open_beyond_loopback_without_a_key(model_path, monkeypatch) -> None:
    import uvicorn
    from click.testing import CliRunner

    from serve.cli import cli

    monkeypatch.setenv(CONFIG_ENV, "{}")
    monkeypatch.delenv("FOLDSERVE_API_KEY", raising=False)
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: None)
    result = CliRunner().invoke(cli, ["http", "--model", str(model_path), "--host", "0.0.0.0", "--port", "0"])
    assert result.exit_code == 0 and "without an API key" in result.output
    assert ServerConfig(**json.loads(os.environ[CONFIG_ENV])).allowed_hosts == ("*",)
    monkeypatch.setenv("FOLDSERVE_API_KEY", "k")
    result = CliRunner().invoke(cli, ["http", "--model", str(model_path), "--host", "0.0.0.0", "--port", "0",
                                      "--allowed-host", "digits.example", "--cors-origin", "https://app.example"])
    config = ServerConfig(**json.loads(os.environ[CONFIG_ENV]))
    assert "warning" not in result.output and config.api_key == "k"
    assert config.allowed_hosts == ("digits.example",) and config.cors_origins == ("https://app.example",)


def test_serve_http_on_a_busy_port_or_an_unknown_host_says_so_in_one_line(model_path, monkeypatch) -> None:
    import uvicorn
    from click.testing import CliRunner

    from serve.cli import cli
    from tests.helpers import assert_one_line_error

    started = []
    monkeypatch.setenv(CONFIG_ENV, "{}")
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: started.append(kwargs))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(cli, ["http", "--model", str(model_path), "--port", str(port)])
    assert result.exit_code == 2 and result.stdout == "" and not started
    assert result.stderr.strip().count("\n") == 0 and f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "already in use" in result.stderr and "serving" not in result.stderr
    result = CliRunner().invoke(cli, ["http", "--model", str(model_path), "--host", "no-such-host.invalid"])
    assert_one_line_error(result, "cannot listen on no-such-host.invalid:8000", "unknown host")
    assert not started


def test_the_access_log_has_one_line_per_request(model_path, caplog) -> None:
    app = create_app(ServerConfig(model_path=str(model_path), access_log=True))
    serve.server.access_log.addHandler(caplog.handler)  # the log's own handler writes to stderr
    try:
        with TestClient(app) as client:
            client.get("/v2/health/ready")
            client.post("/v2/models/nope/infer", json={})
    finally:
        serve.server.access_log.removeHandler(caplog.handler)
    lines = [r.getMessage() for r in caplog.records if r.name == "foldserve.access"]
    assert len(lines) == 2, lines
    assert '"GET /v2/health/ready" 200' in lines[0] and '"POST /v2/models/nope/infer" 404' in lines[1]
    assert all(line.endswith(" ms") for line in lines)


def test_metrics_count_requests_batches_and_queue_time(client, digits) -> None:
    client.post("/v2/models/digits/infer", json=fp32_request(digits[0][:3]))
    client.get("/v2/models/nope")
    text = client.get("/metrics").text
    assert 'foldserve_requests_total{endpoint="/v2/models/{name}/infer",status="200"}' in text
    assert 'foldserve_requests_total{endpoint="/v2/models/{name}",status="404"}' in text
    assert "foldserve_request_latency_seconds_bucket" in text
    assert "foldserve_batch_size_bucket" in text and "foldserve_queue_time_seconds_count" in text


class FailingModel:
    """The served model, except that running it fails (a bug, a broken runtime)."""

    def __init__(self, model) -> None:
        self.field_spec, self.labels = model.field_spec, model.labels

    def logits(self, images):
        raise RuntimeError("the runtime broke")


def test_an_internal_error_is_a_json_500_and_counted(model, digits) -> None:
    failing_model = cast(DigitModel, FailingModel(model))  # a stand-in: what the server uses of a model
    with TestClient(create_app(ServerConfig(max_delay_ms=1), model=failing_model),
                    raise_server_exceptions=False) as failing:
        response = failing.post("/v2/models/digits/infer", json=fp32_request(digits[0][:1]))
        assert response.status_code == 500 and response.json() == {"error": "internal server error"}
        assert "the runtime broke" not in response.text  # no internals to the client
        text = failing.get("/metrics").text
    assert 'foldserve_requests_total{endpoint="/v2/models/{name}/infer",status="500"} 1.0' in text


def test_an_api_key_guards_everything_but_health_and_the_page(model, digits) -> None:
    with TestClient(create_app(ServerConfig(max_delay_ms=1, api_key="s3cret"), model=model)) as guarded:
        infer = lambda **headers: guarded.post("/v2/models/digits/infer", headers=headers,  # noqa: E731
                                               json=fp32_request(digits[0][:1]))
        refused = infer()
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
        assert "Authorization: Bearer" in refused.json()["error"]
        assert infer(Authorization="Bearer wrong").status_code == 401
        assert infer(Authorization="Basic s3cret").status_code == 401
        assert infer(Authorization="Bearer s3cret").status_code == 200
        for path in ("/v2/models/digits", "/metrics", "/v2"):
            assert guarded.get(path).status_code == 401, path
        for path in ("/v2/health/live", "/v2/health/ready", "/"):
            assert guarded.get(path).status_code == 200, path


def test_the_host_allow_list_refuses_other_hosts(model) -> None:
    config = ServerConfig(max_delay_ms=1, allowed_hosts=("localhost", "127.0.0.1", "::1"))
    with TestClient(create_app(config, model=model)) as local:
        assert local.get("/v2/health/ready", headers={"Host": "localhost:8000"}).status_code == 200
        assert local.get("/v2/health/ready", headers={"Host": "[::1]:8000"}).status_code == 200
        rebound = local.get("/v2/models/digits", headers={"Host": "attacker.example:8000"})
        assert rebound.status_code == 400 and "attacker.example" in rebound.json()["error"]


def test_cors_only_for_the_origins_given(model, client) -> None:
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization,content-type"}
    config = ServerConfig(max_delay_ms=1, cors_origins=("https://app.example",), api_key="k")
    with TestClient(create_app(config, model=model)) as open_to_app:
        allowed = open_to_app.options("/predict", headers=preflight)
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://app.example"
        other = open_to_app.options("/predict", headers={**preflight, "Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers
    assert "access-control-allow-origin" not in client.get("/v2", headers={"Origin": "https://app.example"}).headers


def test_inference_answered_ahead_of_fastapi_matches_the_routes(model, client, digits) -> None:
    # inference requests skip FastAPI's middleware stack (serve.server.ServingApp); with CORS on they
    # take the routes. Both ways give the same answers, refusals and metrics labels.
    assert cast(ServingApp, client.app).direct_infer is not None
    origin = {"Origin": "https://app.example"}
    config = ServerConfig(max_delay_ms=1, cors_origins=("https://app.example",))
    requests = [("/v2/models/digits/infer", fp32_request(digits[0][:3])),
                ("/v2/models/digits/versions/1/infer", fp32_request(digits[0][3:4])),
                ("/v2/models/digits/versions/7/infer", fp32_request(digits[0][3:4])),
                ("/v2/models/cats/infer", fp32_request(digits[0][3:4])),
                ("/v2/models/digits/infer", {"inputs": "image"})]
    routed_app = create_app(config, model=model)
    with TestClient(routed_app) as routed:
        assert routed_app.direct_infer is None
        for path, document in requests:
            direct, via_routes = client.post(path, json=document), routed.post(path, json=document, headers=origin)
            assert (direct.status_code, direct.json()) == (via_routes.status_code, via_routes.json()), path
            assert via_routes.headers["access-control-allow-origin"] == "https://app.example"
        assert routed.get("/v2/models/digits/infer").status_code == 405
        metrics = routed.get("/metrics").text
    assert client.get("/v2/models/digits/infer").status_code == 405  # only POST is answered ahead
    assert client.post("/v2/models/digits/infer/x", json=requests[0][1]).status_code == 404
    for text in (metrics, client.get("/metrics").text):
        assert 'endpoint="/v2/models/{name}/versions/{version}/infer",status="200"' in text
        assert 'endpoint="/v2/models/{name}/infer",status="404"' in text


def test_inference_takes_fastapis_path_while_its_telemetry_is_on(model, digits, monkeypatch) -> None:
    class Telemetry:  # stands in for FastAPI's OpenTelemetry instrumentation, configured by a user
        def __init__(self) -> None:
            self.traced: list[str] = []

        def enabled(self) -> bool:
            return True

        async def __call__(self, app, scope, receive, send, **_) -> None:
            self.traced.append(scope["path"])
            await app(scope, receive, send)

    app = create_app(ServerConfig(max_delay_ms=1), model=model)
    if not hasattr(app, "_native_telemetry"):
        pytest.fail("FastAPI no longer has _native_telemetry: check how ServingApp keeps its spans")
    telemetry = Telemetry()
    monkeypatch.setattr(app, "_native_telemetry", telemetry)
    with TestClient(app) as traced:
        assert traced.post("/v2/models/digits/infer", json=fp32_request(digits[0][:1])).status_code == 200
    assert telemetry.traced == ["/v2/models/digits/infer"]


def test_the_page_is_self_contained(client) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "<canvas" in page.text and "/predict" in page.text
    assert "http://" not in page.text and "https://" not in page.text  # no CDN: the machine is offline


# --------------------------------------------------------------------------- the real server


def post_json(address: str, path: str, document: dict) -> tuple[int, dict]:
    host, port = address.split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    body = json.dumps(document).encode()
    try:
        connection.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def test_tritonclient_talks_to_the_server(server, model, digits) -> None:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(url=server[0])
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("digits")
    meta = client.get_model_metadata("digits")
    assert meta["inputs"][0]["name"] == "image" and meta["outputs"][0]["datatype"] == "FP32"
    images = digits[0][:8]
    inputs = [httpclient.InferInput("image", list(images.shape), "FP32")]
    inputs[0].set_data_from_numpy(images, binary_data=True)
    outputs = [httpclient.InferRequestedOutput("logits", binary_data=True),
               httpclient.InferRequestedOutput("probabilities", binary_data=False)]
    result = client.infer("digits", inputs, outputs=outputs)
    np.testing.assert_allclose(result.as_numpy("logits"), model.logits(images), atol=1e-5)
    np.testing.assert_allclose(result.as_numpy("probabilities"), model.probabilities(images), atol=1e-5)
    json_inputs = [httpclient.InferInput("image", list(images.shape), "FP32")]
    json_inputs[0].set_data_from_numpy(images, binary_data=False)
    np.testing.assert_allclose(client.infer("digits", json_inputs).as_numpy("logits"), model.logits(images), atol=1e-5)
    client.close()


def test_concurrent_requests_each_get_their_own_answer(server, model, digits) -> None:
    images = digits[0]
    expected = model.logits(images)

    def one(i: int) -> tuple[int, np.ndarray]:
        status, body = post_json(server[0], "/v2/models/digits/infer", fp32_request(images[i:i + 1]))
        assert status == 200, body
        return i, np.array(body["outputs"][0]["data"])

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, range(len(images))))
    for i, logits in results:
        np.testing.assert_allclose(logits, expected[i], atol=1e-5)


@pytest.mark.slow
def test_bounded_load_zero_errors_and_right_answers(server, model, digits) -> None:
    """2,000 requests from 16 concurrent clients on loopback; throughput is measured in the benchmark."""
    images = digits[0]
    labels = model.logits(images).argmax(1)
    deadline = time.monotonic() + 120

    def client_loop(worker: int) -> list[tuple[int, int]]:
        host, port = server[0].split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        answers = []
        for k in range(125):
            if time.monotonic() > deadline:
                break
            i = (worker * 125 + k) % len(images)
            connection.request("POST", "/v2/models/digits/infer", body=json.dumps(fp32_request(images[i:i + 1])),
                               headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            body = json.loads(response.read())
            answers.append((i, int(np.argmax(body["outputs"][0]["data"])) if response.status == 200 else -1))
        connection.close()
        return answers

    with ThreadPoolExecutor(16) as pool:
        answers = [a for batch in pool.map(client_loop, range(16)) for a in batch]
    assert len(answers) == 2000
    assert all(label == labels[i] for i, label in answers)


def test_a_huge_declared_body_is_refused_without_reading_it(server) -> None:
    host, port = server[0].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 1000000000\r\n\r\n{")
        reply = b""
        while b"above the limit" not in reply:  # the answer comes at once, not after a gigabyte
            chunk = s.recv(4096)
            if not chunk:
                break
            reply += chunk
    text = reply.decode()
    assert text.startswith("HTTP/1.1 413") and "above the limit" in text


def test_real_server_alternates_bad_and_good_requests(server, model, digits) -> None:
    for _, body, headers, status, message in BAD_REQUESTS[:6]:
        host, port = server[0].split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        connection.request("POST", "/v2/models/digits/infer", body=body,
                           headers={"Content-Type": "application/json", **headers})
        response = connection.getresponse()
        assert response.status == status and message in json.loads(response.read())["error"]
        connection.close()
        good_status, good = post_json(server[0], "/v2/models/digits/infer", fp32_request(digits[0][:2]))
        assert good_status == 200
        np.testing.assert_allclose(np.array(good["outputs"][0]["data"]).reshape(2, len(model.labels)),
                                   model.logits(digits[0][:2]), atol=1e-5)


@pytest.mark.slow
def test_sigterm_lets_the_request_in_flight_finish(model_path: Path, model, digits) -> None:
    process, port = start_server(model_path, "--max-body-mb", "64")
    images = np.concatenate([digits[0]] * 14)[:4096]  # a big request: some hundreds of ms of work
    header = json.dumps({"inputs": [{"name": "image", "datatype": "FP32", "shape": list(images.shape),
                                     "parameters": {"binary_data_size": images.nbytes}}],
                         "outputs": [{"name": "logits", "parameters": {"binary_data": True}}]}).encode()

    sent = threading.Event()

    def big_request() -> tuple[int, bytes, str | None]:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            connection.request("POST", "/v2/models/digits/infer", body=header + images.tobytes(),
                               headers={"Inference-Header-Content-Length": str(len(header)),
                                        "Content-Type": "application/octet-stream"})
            sent.set()  # 12.8 MB cannot all sit in socket buffers: the server is reading the request
            response = connection.getresponse()
            return response.status, response.read(), response.getheader("Inference-Header-Content-Length")
        finally:
            connection.close()

    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(big_request)
        assert sent.wait(timeout=60), "the request was not sent"
        process.send_signal(signal.SIGTERM)  # while the server computes the 4,096 images
        status, body, json_length = pending.result(timeout=60)
    _, stderr = process.communicate(timeout=30)
    assert status == 200 and json_length is not None, body[:300]
    logits = np.frombuffer(body[int(json_length):], dtype="<f4").reshape(4096, len(model.labels))
    np.testing.assert_allclose(logits[:300], model.logits(digits[0]), atol=1e-5)
    assert process.returncode in (0, -signal.SIGTERM) and "Traceback" not in stderr, stderr


def test_serve_http_bad_model_is_one_line(tmp_path) -> None:
    result = subprocess.run([sys.executable, "-m", "serve", "http", "--model", str(tmp_path / "none.onnx")],
                            cwd=REPO, capture_output=True, text=True, timeout=30)
    assert result.returncode == 1 and result.stderr.strip().count("\n") == 0 and "not found" in result.stderr


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (recv blocks on the event itself)."""
    sock.settimeout(20)
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.slow
def test_slow_clients_get_408_and_are_disconnected_and_leavers_are_quiet(model_path: Path) -> None:
    process, port = start_server(model_path, "--request-timeout", "1")
    try:
        with socket.create_connection(("127.0.0.1", port)) as first_byte:  # the deadline runs from the first byte
            first_byte.sendall(b"P")
            assert read_until_closed(first_byte).startswith(b"HTTP/1.1 408")
        with socket.create_connection(("127.0.0.1", port)) as headers_only:  # slowloris: headers never end
            headers_only.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: 1")
            assert read_until_closed(headers_only).startswith(b"HTTP/1.1 408")
        with socket.create_connection(("127.0.0.1", port)) as slow_body:  # the body stops halfway
            slow_body.sendall(b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                              b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"inputs\": ")
            answer = read_until_closed(slow_body)
            assert answer.startswith(b"HTTP/1.1 408") and b"too long to arrive" in answer
        with socket.create_connection(("127.0.0.1", port)) as leaver:  # leaves in the middle of its body
            leaver.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
                           b"Content-Length: 100000\r\n\r\n" + bytes(5000))
        for _ in range(500):  # until the server has noticed the leaver (each poll is a round trip)
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
            connection.request("GET", "/metrics")
            metrics = connection.getresponse().read().decode()
            connection.close()
            if 'foldserve_requests_total{endpoint="/predict",status="499"} 1.0' in metrics:
                break
        else:
            raise AssertionError("the client that left was never counted: " + metrics[-2000:])
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    assert "Traceback" not in stderr, stderr
    assert stderr.count("took over 1 s to arrive") == 3, stderr


@pytest.mark.slow
def test_a_stalled_upload_does_not_hold_the_shutdown(model_path: Path) -> None:
    process, port = start_server(model_path)  # the default request timeout: 60 s, longer than the grace
    stalled = socket.create_connection(("127.0.0.1", port))
    try:
        stalled.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
                        b"Content-Length: 100000\r\n\r\n" + bytes(1000))
        ready = http.client.HTTPConnection("127.0.0.1", port, timeout=20)  # the request above is in
        ready.request("GET", "/v2/health/ready")
        assert ready.getresponse().status == 200
        ready.close()
        process.send_signal(signal.SIGTERM)
        # without the shortened deadline, uvicorn would wait out its 30 s grace for this upload
        _, stderr = process.communicate(timeout=20)
    finally:
        stalled.close()
        if process.poll() is None:
            process.kill()
    assert process.returncode in (0, -signal.SIGTERM) and "Traceback" not in stderr, stderr


def peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) / 1024


@pytest.mark.slow
def test_four_concurrent_decompression_bombs_stay_in_bounded_memory(model_path: Path) -> None:
    from benchmarks.images import png_bomb

    bomb = png_bomb(6300, 6300)  # 40 megapixels declared, ~0.1 MB on the wire
    process, port = start_server(model_path)
    try:
        def upload(_: int) -> int:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            try:
                connection.request("POST", "/predict", body=bomb, headers={"Content-Type": "image/png"})
                response = connection.getresponse()
                response.read()
                return response.status
            finally:
                connection.close()

        with ThreadPoolExecutor(4) as pool:
            statuses = list(pool.map(upload, range(4)))
        peak = peak_rss_mb(process.pid)
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
    assert statuses == [200] * 4  # read (a blank sheet: a refusal is an answer), never a 5xx
    assert peak <= 600, peak  # the bound; --max-decodes 2 lets two decode at once
