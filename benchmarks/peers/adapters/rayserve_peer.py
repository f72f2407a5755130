"""Ray Serve serving model.onnx: a deployment wrapping onnxruntime with ``@serve.batch``, speaking OIP v2
JSON on the same path (``GET /v2/models/digits/ready`` answers once the replica is up).

Its best settings here: ``@serve.batch`` with `serve http`'s limits (64 requests, 2 ms), one replica
(onnxruntime already uses every core) that may hold 256 requests at once (the default, 5, would cap a
batch at 5), no dashboard; Ray's own processes and the HTTP proxy actor share the same cores.
"""
from __future__ import annotations

import os
import signal
import threading
from typing import Any

import numpy as np
import ray
from ray import serve
from starlette.requests import Request

from benchmarks.peers.adapters.common import (MAX_BATCH, MAX_DELAY_S, MODEL_NAME, OnnxDigits, arguments,
                                              images_from_request, response_document)


class Digits:
    def __init__(self, path: str) -> None:
        self.onnx = OnnxDigits(path)

    @serve.batch(max_batch_size=MAX_BATCH, batch_wait_timeout_s=MAX_DELAY_S)
    async def infer(self, images: list[np.ndarray]) -> list[np.ndarray]:
        logits = self.onnx.logits(np.concatenate(images))
        return [row[None] for row in logits]  # one request, one image: [1, classes] each

    async def __call__(self, request: Request) -> dict[str, Any]:
        if request.method == "GET":  # the readiness probe
            return {"name": MODEL_NAME, "ready": True}
        return response_document(await self.infer(images_from_request(await request.json())))


# the decorator as a call: mypy knows nothing of Ray (untyped here) and would look for bind() on the class
deployment = serve.deployment(num_replicas=1, max_ongoing_requests=256,
                              # no line per request, as `serve http` by default
                              logging_config={"enable_access_log": False, "log_level": "WARNING"})(Digits)


def main() -> None:
    args = arguments(__doc__ or "")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, _node_ip_address=args.host)
    try:
        serve.start(http_options={"host": args.host, "port": args.port})
        serve.run(deployment.bind(args.model), name=MODEL_NAME, route_prefix=f"/v2/models/{MODEL_NAME}")
        stop.wait()
    finally:  # Ray's processes outlive a driver that exits without shutting them down
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    main()
