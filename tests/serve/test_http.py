"""`serve http`: unit tests through FastAPI's TestClient, protocol and load tests against the real server."""
from __future__ import annotations

import base64
import http.client
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from serve.server import ServerConfig, create_app
from tests.serve.conftest import start_server
from tests.serve.images import encode

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


def test_health_and_metadata(client) -> None:
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").status_code == 200
    assert "binary_tensor_data" in client.get("/v2").json()["extensions"]
    meta = client.get("/v2/models/digits").json()
    assert meta["inputs"][0] == {"name": "image", "datatype": "FP32", "shape": [-1, 1, 28, 28]}
    assert {o["name"]: o["shape"] for o in meta["outputs"]} == {"logits": [-1, 10], "probabilities": [-1, 10]}
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
    assert outputs["logits"]["shape"] == [5, 10] and outputs["logits"]["datatype"] == "FP32"
    np.testing.assert_allclose(np.array(outputs["logits"]["data"]).reshape(5, 10), model.logits(images[:5]), atol=1e-5)
    np.testing.assert_allclose(np.array(outputs["probabilities"]["data"]).reshape(5, 10).sum(1), 1, atol=1e-5)


def test_infer_with_encoded_image_files(client, model, digits) -> None:
    images, _ = digits
    files = [encode(Image.fromarray((images[i, 0] * 255).round().astype(np.uint8))) for i in range(3)]
    request = {"inputs": [{"name": "image_files", "datatype": "BYTES", "shape": [3],
                           "data": [base64.b64encode(f).decode() for f in files]}],
               "outputs": [{"name": "logits"}]}
    response = client.post("/v2/models/digits/infer", json=request)
    assert response.status_code == 200, response.text
    logits = np.array(response.json()["outputs"][0]["data"]).reshape(3, 10)
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
    assert meta["outputs"][0]["parameters"]["binary_data_size"] == 4 * 10 * 4
    logits = np.frombuffer(response.content[n:], dtype="<f4").reshape(4, 10)
    np.testing.assert_allclose(logits, model.logits(images), atol=1e-5)


BAD_REQUESTS = [
    ("malformed JSON", b'{"inputs": [', {}, 400, "malformed JSON"),
    ("wrong shape", json.dumps({"inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 28, 28],
                                           "data": [0.0] * 784}]}).encode(), {}, 400, "shape [N, 1, 28, 28]"),
    ("wrong datatype", json.dumps({"inputs": [{"name": "image", "datatype": "INT64", "shape": [1, 1, 28, 28],
                                              "data": [0] * 784}]}).encode(), {}, 400, "datatype 'INT64'"),
    ("wrong element count", json.dumps({"inputs": [{"name": "image", "datatype": "FP32", "shape": [2, 1, 28, 28],
                                                   "data": [0.0] * 784}]}).encode(), {}, 400, "784 elements"),
    ("NaN", b'{"inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 1, 28, 28], "data": [NaN'
            + b', 0.0' * 783 + b']}]}', {}, 400, "NaN or infinite"),
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


def test_predict_endpoint_matches_serve_predict_json(client, model, digits, tmp_path) -> None:
    png = encode(Image.fromarray((digits[0][0, 0] * 255).round().astype(np.uint8)))
    raw = client.post("/predict", content=png, headers={"Content-Type": "image/png"}).json()
    form = client.post("/predict", files={"file": ("digit.png", png, "image/png")}).json()
    expected = model.probabilities(digits[0][:1])[0]
    for result in (raw, form):
        assert set(result) == {"image", "label", "probability", "probabilities"}
        assert result["label"] == int(expected.argmax())
        np.testing.assert_allclose(result["probabilities"], expected, atol=1e-6)
    assert form["image"] == "digit.png"
    # the same object as `serve predict --json`
    (tmp_path / "digit.png").write_bytes(png)
    from click.testing import CliRunner

    from serve.cli import cli

    line = json.loads(CliRunner().invoke(cli, ["predict", "--model", str(model.path), "--json",
                                               str(tmp_path / "digit.png")]).stdout)
    assert {k: v for k, v in line.items() if k != "image"} == {k: v for k, v in form.items() if k != "image"}
    blank = client.post("/predict", content=encode(Image.new("L", (64, 64), 255)), headers={"Content-Type": "image/png"})
    assert blank.json()["label"] is None and blank.json()["note"] == "no digit found"
    assert client.post("/predict", content=b"x", headers={"Content-Type": "text/plain"}).status_code == 415
    assert client.post("/predict", content=b"not png", headers={"Content-Type": "image/png"}).status_code == 400
    assert client.post("/predict", files={"other": ("a.png", png)}).status_code == 400


def test_metrics_count_requests_batches_and_queue_time(client, digits) -> None:
    client.post("/v2/models/digits/infer", json=fp32_request(digits[0][:3]))
    client.get("/v2/models/nope")
    text = client.get("/metrics").text
    assert 'foldserve_requests_total{endpoint="/v2/models/{name}/infer",status="200"}' in text
    assert 'foldserve_requests_total{endpoint="/v2/models/{name}",status="404"}' in text
    assert "foldserve_request_latency_seconds_bucket" in text
    assert "foldserve_batch_size_bucket" in text and "foldserve_queue_time_seconds_count" in text


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
        s.sendall(b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 1000000000\r\n\r\n{")
        reply = b""
        while b"above the limit" not in reply:  # the answer comes at once, not after a gigabyte
            chunk = s.recv(4096)
            if not chunk:
                break
            reply += chunk
        reply = reply.decode()
    assert reply.startswith("HTTP/1.1 413") and "above the limit" in reply


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
        np.testing.assert_allclose(np.array(good["outputs"][0]["data"]).reshape(2, 10), model.logits(digits[0][:2]),
                                   atol=1e-5)


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
    assert status == 200, body[:300]
    logits = np.frombuffer(body[int(json_length):], dtype="<f4").reshape(4096, 10)
    np.testing.assert_allclose(logits[:300], model.logits(digits[0]), atol=1e-5)
    assert process.returncode in (0, -signal.SIGTERM) and "Traceback" not in stderr, stderr


def test_serve_http_bad_model_is_one_line(tmp_path) -> None:
    result = subprocess.run([sys.executable, "-m", "serve", "http", "--model", str(tmp_path / "none.onnx")],
                            cwd=REPO, capture_output=True, text=True, timeout=30)
    assert result.returncode == 1 and result.stderr.strip().count("\n") == 0 and "not found" in result.stderr
