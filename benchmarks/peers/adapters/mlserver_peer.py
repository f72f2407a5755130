"""MLServer serving model.onnx through a custom runtime (an ``MLModel`` wrapping onnxruntime), OIP v2 REST.

Its best settings here: adaptive batching on with `serve http`'s limits (64 requests, 2 ms), MLServer's
default of one inference worker process (twice the requests/s of inference in the server process, which
then parses JSON and runs the model on one core), no access log, no gzip, no metrics server.
"""
from __future__ import annotations

import asyncio

from mlserver import MLModel, MLServer
from mlserver.codecs import NumpyCodec
from mlserver.settings import ModelParameters, ModelSettings, Settings
from mlserver.types import InferenceRequest, InferenceResponse

from benchmarks.peers.adapters.common import MAX_BATCH, MAX_DELAY_S, MODEL_NAME, OUTPUT, OnnxDigits, arguments


class Digits(MLModel):
    async def load(self) -> bool:
        assert self.settings.parameters is not None and self.settings.parameters.uri is not None
        self.onnx = OnnxDigits(self.settings.parameters.uri)
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        logits = self.onnx.logits(NumpyCodec.decode_input(payload.inputs[0]))
        return InferenceResponse(model_name=self.name, id=payload.id,
                                 outputs=[NumpyCodec.encode_output(OUTPUT, logits)])


async def serve(settings: Settings, model: ModelSettings) -> None:
    # MLServer(...) needs the running loop: its inference pool starts tasks as it is built
    await MLServer(settings).start([model])


def main() -> None:
    args = arguments(__doc__ or "")
    settings = Settings(host=args.host, http_port=args.port, grpc_port=0, parallel_workers=1, debug=False,
                        metrics_endpoint=None, gzip_enabled=False)
    # by import path, not the class: the worker process imports it, and run with -m it is __main__.Digits
    module = __spec__.name if __spec__ is not None else __name__
    model = ModelSettings(name=MODEL_NAME, implementation=f"{module}.Digits",
                          parameters=ModelParameters(uri=args.model),
                          max_batch_size=MAX_BATCH, max_batch_time=MAX_DELAY_S)
    asyncio.run(serve(settings, model))


if __name__ == "__main__":
    main()
