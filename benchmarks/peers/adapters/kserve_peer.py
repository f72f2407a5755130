"""KServe's ModelServer serving model.onnx through a custom ``kserve.Model`` (OIP v2 REST).

Its best settings here: one uvicorn process (onnxruntime already uses every core), no gRPC server, no
per-request latency log lines. ModelServer has no batcher of its own (KServe batches in a sidecar agent).
"""
from __future__ import annotations

import logging

import kserve
from kserve import InferOutput, InferRequest, InferResponse
from kserve import model_server as kserve_model_server
from kserve.utils.utils import generate_uuid

from benchmarks.peers.adapters.common import MODEL_NAME, OUTPUT, OnnxDigits, arguments


class Digits(kserve.Model):
    def __init__(self, path: str) -> None:
        super().__init__(MODEL_NAME)
        self.path = path
        self.load()

    def load(self) -> bool:
        self.onnx = OnnxDigits(self.path)
        self.ready = True
        return self.ready

    def predict(self, payload: InferRequest, headers: dict[str, str] | None = None,
                response_headers: dict[str, str] | None = None) -> InferResponse:
        logits = self.onnx.logits(payload.inputs[0].as_numpy())
        output = InferOutput(name=OUTPUT, shape=list(logits.shape), datatype="FP32")
        output.set_data_from_numpy(logits, binary_data=False)
        return InferResponse(model_name=self.name, infer_outputs=[output],
                             response_id=payload.id or generate_uuid())  # KServe's response needs an id


def loopback_rest_server(host: str) -> type:
    """KServe's REST server with ``host`` in place of the 0.0.0.0 it hard-codes (it expects a container):
    the benchmark keeps every server on loopback."""

    class RESTServer(kserve_model_server.RESTServer):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)
            self.config.host = host  # read when uvicorn binds, in start()

    return RESTServer


def main() -> None:
    args = arguments(__doc__ or "")
    kserve_model_server.RESTServer = loopback_rest_server(args.host)
    server = kserve.ModelServer(http_port=args.port, workers=1, enable_grpc=False, enable_latency_logging=False)
    # no line per request, as `serve http` by default: uvicorn's access log, and the timing middleware
    # KServe always installs, which logs every request's wall and CPU time at INFO
    logging.getLogger("uvicorn.access").disabled = True
    logging.getLogger("kserve.trace").setLevel(logging.WARNING)
    server.start([Digits(args.model)])


if __name__ == "__main__":
    main()
