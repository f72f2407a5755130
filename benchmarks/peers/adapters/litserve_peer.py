"""LitServe serving model.onnx: a ``LitAPI`` wrapping onnxruntime, speaking OIP v2 JSON on the same path.

Its best settings here: batching on with `serve http`'s limits (64 requests, 2 ms), one inference worker
(onnxruntime already uses every core) and two API server processes (one per core: they parse the JSON;
10-20% more requests/s than one at 16-64 connections), ZeroMQ between them (``fast_queue``, LitServe's
advice above 100 requests/s), logs at warning level.
"""
from __future__ import annotations

from typing import Any

import litserve as ls
import numpy as np

from benchmarks.peers.adapters.common import (INFER_PATH, MAX_BATCH, MAX_DELAY_S, OnnxDigits, arguments,
                                              images_from_request, response_document)


class Digits(ls.LitAPI):
    def __init__(self, path: str) -> None:
        super().__init__(max_batch_size=MAX_BATCH, batch_timeout=MAX_DELAY_S, api_path=INFER_PATH)
        self.path = path

    def setup(self, device: str) -> None:
        self.onnx = OnnxDigits(self.path)

    # `request` unannotated: LitServe reads its annotation to type the endpoint, and with none it hands over
    # the parsed JSON body (an annotation here is a string, under `from __future__ import annotations`)
    def decode_request(self, request) -> np.ndarray:
        return images_from_request(request)

    def batch(self, inputs: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(inputs)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.onnx.logits(x)

    def unbatch(self, output: np.ndarray) -> list[np.ndarray]:
        return [row[None] for row in output]  # one request, one image: [1, classes] each

    def encode_response(self, output: np.ndarray) -> dict[str, Any]:
        return response_document(output)


def main() -> None:
    args = arguments(__doc__ or "")
    server = ls.LitServer(Digits(args.model), accelerator="cpu", devices=1, workers_per_device=1, fast_queue=True)
    server.run(host=args.host, port=args.port, num_api_servers=2, log_level="warning", generate_client_file=False)


if __name__ == "__main__":
    main()
