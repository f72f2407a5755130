"""The OIP v2 request parser under fuzzing: whatever the bytes, it answers with a request or a
ProtocolError (a 400), never another exception (a 500), and a response is never larger than the
request asked for in earnest (serve/protocol.py)."""
from __future__ import annotations

import base64
import io
import json
import struct
from typing import Any

import numpy as np
from PIL import Image

from serve.protocol import HEADER_LENGTH, MAX_IMAGES_PER_REQUEST, ProtocolError, encode_infer_response, \
    parse_infer_request

VOCABULARY = ["inputs", "outputs", "name", "datatype", "shape", "data", "parameters", "binary_data_size",
              "binary_data_output", "binary_data", "id", "image", "FP32", "BYTES", "INT64", "logits",
              "probabilities"]


def seed_requests() -> list[tuple[bytes, str | None]]:
    """Valid requests of every kind, as bodies and Inference-Header-Content-Length values."""
    pixels = np.linspace(0, 1, 784, dtype=np.float32)
    fp32 = {"inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 1, 28, 28], "data": pixels.tolist()}],
            "outputs": [{"name": "logits"}, {"name": "probabilities", "parameters": {"binary_data": True}}], "id": "x"}
    png = io.BytesIO()
    Image.fromarray((pixels.reshape(28, 28) * 255).astype(np.uint8)).save(png, "PNG")
    files = {"inputs": [{"name": "f", "datatype": "BYTES", "shape": [1],
                         "data": [base64.b64encode(png.getvalue()).decode()]}]}
    header = json.dumps({"inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 1, 28, 28],
                                     "parameters": {"binary_data_size": 784 * 4}}]}).encode()
    binary_files = json.dumps({"inputs": [{"name": "f", "datatype": "BYTES", "shape": [1],
                                           "parameters": {"binary_data_size": 4 + len(png.getvalue())}}]}).encode()
    return [(json.dumps(fp32).encode(), None), (json.dumps(files).encode(), None),
            (header + pixels.astype("<f4").tobytes(), str(len(header))),
            (binary_files + struct.pack("<I", len(png.getvalue())) + png.getvalue(), str(len(binary_files)))]


def mutate(body: bytes, rng: np.random.Generator) -> bytes:
    data = bytearray(body)
    for _ in range(int(rng.integers(1, 6))):
        kind = int(rng.integers(0, 4))
        at = int(rng.integers(0, max(1, len(data))))
        if kind == 0 and data:  # flip a byte
            data[at] = int(rng.integers(0, 256))
        elif kind == 1:  # insert protocol tokens
            data[at:at] = rng.choice([b"[", b"]", b"{", b"}", b",", b'"', b"true", b"null", b"-1", b"1e999",
                                      b"9" * 400, b"0.5", b'"0.5"', b'"data"', b'"parameters"'])
        elif kind == 2:  # delete a span
            del data[at:at + int(rng.integers(1, 64))]
        else:  # duplicate a span
            span = bytes(data[at:at + int(rng.integers(1, 64))])
            data[at:at] = span
    return bytes(data)


def random_value(rng: np.random.Generator, depth: int = 0) -> Any:
    kind = int(rng.integers(0, 9 if depth < 4 else 6))
    if kind == 0:
        return int(rng.choice([-1, 0, 1, 28, 784, MAX_IMAGES_PER_REQUEST + 1, 2**63, -(2**70)]))
    if kind == 1:
        return float(rng.choice([0.0, 0.5, -0.0, 1.0, 1e308, -1e-300]))
    if kind == 2:
        return str(rng.choice(VOCABULARY))
    if kind == 3:
        return bool(rng.integers(0, 2))
    if kind == 4:
        return None
    if kind == 5:
        return [0.0] * int(rng.choice([0, 1, 783, 784, 785]))
    if kind == 6:
        return [random_value(rng, depth + 1) for _ in range(int(rng.integers(0, 4)))]
    return {str(rng.choice(VOCABULARY)): random_value(rng, depth + 1) for _ in range(int(rng.integers(0, 5)))}


def random_request(rng: np.random.Generator) -> bytes:
    """A JSON document in the protocol's shape, with random values in every slot."""
    spec = {key: random_value(rng, 1) for key in ("name", "datatype", "shape", "data", "parameters")
            if rng.random() < 0.8}
    document: dict[str, Any] = {"inputs": [spec] if rng.random() < 0.9 else random_value(rng, 1)}
    if rng.random() < 0.5:
        document["outputs"] = [{"name": random_value(rng, 2), "parameters": random_value(rng, 2)}
                               for _ in range(int(rng.integers(0, 4)))]
    if rng.random() < 0.3:
        document["parameters"] = random_value(rng, 1)
    return json.dumps(document).encode()


def outcome(body: bytes, header: str | None) -> str:
    try:
        request = parse_infer_request(body, header)
    except ProtocolError as exc:
        assert str(exc) and "\n" not in str(exc)  # one line for the client
        return "400"
    n = len(request.images)
    payload, _ = encode_infer_response("digits", request, np.zeros((n, 11), np.float32), np.zeros((n, 11), np.float32))
    assert len(request.outputs) <= 2  # each output at most once: no amplification
    assert len(payload) < 64 * 1024 * max(1, n)
    return "200"


def test_mutated_requests_are_answered_or_refused_never_crash() -> None:
    rng = np.random.default_rng(20261125)
    seeds = seed_requests()
    counts = {"200": 0, "400": 0}
    for _ in range(1500):
        body, header = seeds[int(rng.integers(0, len(seeds)))]
        if header is not None and rng.random() < 0.2:
            header = str(rng.choice(["1_3", "+5", "-1", " 12", "0x10", "١٢", "99999999999999999999", "abc"]))
        counts[outcome(mutate(body, rng), header)] += 1
    assert counts["400"] > 500 and counts["200"] > 20  # the fuzzer reaches both sides


def test_random_protocol_shaped_documents_never_crash() -> None:
    rng = np.random.default_rng(7)
    counts = {"200": 0, "400": 0}
    for _ in range(1500):
        counts[outcome(random_request(rng), None)] += 1
    assert counts["400"] > 1000


def test_the_seed_requests_are_valid() -> None:
    assert [outcome(body, header) for body, header in seed_requests()] == ["200"] * 4


def test_header_length_must_be_plain_decimal() -> None:
    body, header = seed_requests()[2]
    assert header is not None and outcome(body, header) == "200"
    for bad in ("1_3", "+" + header, " ", "1e3", "٣"):
        try:
            parse_infer_request(body, bad)
        except ProtocolError as exc:
            assert HEADER_LENGTH in str(exc)
        else:
            raise AssertionError(f"{bad!r} accepted")
