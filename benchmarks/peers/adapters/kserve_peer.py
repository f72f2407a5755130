"""KServe's ModelServer serving model.onnx through a custom ``kserve.Model`` (OIP v2 REST).

Its best settings here: one uvicorn process (two gave 10-25% fewer requests/s at 16 and 64 connections on
2 cores, measured in interleaved rounds), no gRPC server, no per-request log lines. ModelServer has no
batcher of its own (KServe batches in a sidecar agent).
"""
from __future__ import annotations

import logging
from socket import socket
from typing import Any

import kserve
from kserve import InferOutput, InferRequest, InferResponse
from kserve import model_server as kserve_model_server
from kserve.protocol.rest.multiprocess import server as kserve_multiprocess
from kserve.utils.utils import generate_uuid

from benchmarks.peers.adapters.common import MODEL_NAME, OUTPUT, OnnxDigits, arguments

WORKERS = 1  # with more, KServe pickles the model into each worker process: Digits and the server allow it


class Digits(kserve.Model):
    def __init__(self, path: str) -> None:
        super().__init__(MODEL_NAME)
        self.path = path
        self.load()

    def load(self) -> bool:
        self.onnx = OnnxDigits(self.path)
        self.ready = True
        return self.ready

    # With several workers KServe pickles the model into each; a session does not pickle: each loads its own.
    def __getstate__(self) -> dict[str, Any]:
        return {key: value for key, value in self.__dict__.items() if key != "onnx"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.load()

    def predict(self, payload: InferRequest, headers: dict[str, str] | None = None,
                response_headers: dict[str, str] | None = None) -> InferResponse:
        logits = self.onnx.logits(payload.inputs[0].as_numpy())
        output = InferOutput(name=OUTPUT, shape=list(logits.shape), datatype="FP32")
        output.set_data_from_numpy(logits, binary_data=False)
        return InferResponse(model_name=self.name, infer_outputs=[output],
                             response_id=payload.id or generate_uuid())  # KServe's response needs an id


def quiet_request_logs() -> None:
    """No line per request, as `serve http` by default: uvicorn's access log, and the timing middleware
    KServe always installs, which logs every request's wall and CPU time at INFO."""
    logging.getLogger("uvicorn.access").disabled = True
    logging.getLogger("kserve.trace").setLevel(logging.WARNING)


class LoopbackRESTServer(kserve_model_server.RESTServer):
    """KServe's REST server on the host asked for, where it hard-codes 0.0.0.0 (it expects a container):
    the benchmark keeps every server on loopback. Module-level: worker processes unpickle it."""

    host = "127.0.0.1"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.config.host = self.host  # read when the socket is bound, after this

    def run(self, sockets: list[socket] | None = None) -> None:
        quiet_request_logs()  # in a worker process, after KServe has configured logging there
        super().run(sockets)

    async def start(self) -> None:
        quiet_request_logs()
        await super().start()


def main() -> None:
    args = arguments(__doc__ or "")
    LoopbackRESTServer.host = args.host
    kserve_model_server.RESTServer = LoopbackRESTServer  # one worker
    kserve_multiprocess.RESTServer = LoopbackRESTServer  # several
    server = kserve.ModelServer(http_port=args.port, workers=WORKERS, enable_grpc=False, enable_latency_logging=False)
    quiet_request_logs()
    server.start([Digits(args.model)])


if __name__ == "__main__":
    main()
