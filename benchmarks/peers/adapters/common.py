"""What every peer adapter shares: its command line, the onnxruntime session as `serve http` opens it,
and OIP v2 JSON for the peers that do not speak the protocol themselves (LitServe, Ray Serve).

numpy and onnxruntime only: this runs inside the peers' virtual environments.
"""
from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import onnxruntime as ort

MODEL_NAME = "digits"
INFER_PATH = f"/v2/models/{MODEL_NAME}/infer"
OUTPUT = "logits"  # the graph's output each peer returns (argmax = the answer); no softmax anywhere
MAX_BATCH = 64  # the batch limits of `serve http`'s defaults, for the peers that batch
MAX_DELAY_S = 0.002


def arguments(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", required=True, help="model.onnx")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    return parser.parse_args()


class OnnxDigits:
    """model.onnx in onnxruntime with default session options (intra-op threads = cores), as `serve http`."""

    def __init__(self, path: str) -> None:
        self.session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def logits(self, images: np.ndarray) -> np.ndarray:
        return self.session.run([OUTPUT], {self.input_name: np.ascontiguousarray(images, dtype=np.float32)})[0]


def images_from_request(document: dict[str, Any]) -> np.ndarray:
    """The FP32 tensor of an OIP v2 JSON request with one input (``data`` flat or nested, row-major)."""
    inputs = document.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1:
        raise ValueError("'inputs' must hold exactly one input")
    spec = inputs[0]
    if spec.get("datatype") != "FP32":
        raise ValueError(f"datatype must be FP32, got {spec.get('datatype')!r}")
    return np.asarray(spec["data"], dtype=np.float32).reshape(spec["shape"])


def response_document(logits: np.ndarray, request_id: str | None = None) -> dict[str, Any]:
    """The OIP v2 JSON response carrying ``logits`` [N, classes]."""
    document: dict[str, Any] = {
        "model_name": MODEL_NAME, "model_version": "1",
        "outputs": [{"name": OUTPUT, "datatype": "FP32", "shape": list(logits.shape),
                     "data": logits.ravel().tolist()}],
    }
    if request_id is not None:
        document["id"] = request_id
    return document
