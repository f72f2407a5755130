"""The Open Inference Protocol v2 over gRPC, beside HTTP: `serve http --grpc-port PORT`.

An adapter like the HTTP routes, over the same DataPlane: the same models and versions (a blank
version is the latest, as over HTTP), each model's dynamic batcher, the same limits, and the same
one-line messages (serve/errors.py gives each refusal its gRPC status code).
A ModelInfer request becomes the document an HTTP client would have sent (raw_input_contents as
binary tensor data), so serve/protocol.py validates both the same way. It runs in the HTTP server's
event loop (grpc.aio), started and stopped by the application's lifespan. Needs the grpc extra.

The message classes are generated from serve/proto/inference.proto (`make proto`). Their protobuf
package is the protocol's, ``inference``, which tritonclient.grpc registers in protobuf's default
descriptor pool too, from another file: one process cannot import both, so a process that serves
does not also run tritonclient.grpc (the tests run the server as a subprocess).
"""
from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import struct
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import numpy as np
from google.protobuf.message import Message
from prometheus_client import Gauge
from starlette.concurrency import run_in_threadpool

from serve.connection import SHUTDOWN_RECEIVE_S
from serve.errors import RequestError, ShuttingDown, require_api_key
from serve.limits import SHUTDOWN_GRACE_S
from serve.model import softmax
from serve.proto import inference_pb2 as pb
from serve.proto import inference_pb2_grpc as pb_grpc
from serve.protocol import InferRequest, ProtocolError, requested_outputs
from serve.server import INLINE_BYTES, DataPlane, Metrics, Served, access_log, lifecycle_log, model_metadata, \
    server_metadata

log = logging.getLogger(__name__)

OPEN_CALLS = ("ServerLive", "ServerReady")  # answered without the API key, like HTTP's health routes
TYPED_CONTENTS = {"FP32": "fp32_contents", "BYTES": "bytes_contents"}  # the datatypes the model takes
SERVICE = "/inference.GRPCInferenceService/"

Handler = Callable[[Any, Any, grpc.aio.ServicerContext], Awaitable[Message]]


def rpc(method: Handler) -> Handler:
    """A servicer method as every call should run: the API key checked, refusals (serve/errors.py) and
    failures turned into a status with one line, and the call counted in /metrics beside HTTP's."""
    name = method.__name__

    @functools.wraps(method)
    async def handler(self: Servicer, request: Any, context: grpc.aio.ServicerContext) -> Message:
        started = time.perf_counter()
        status, message = grpc.StatusCode.OK, ""
        self.call_started()
        try:
            if self.stopping:  # see GrpcServer.stop
                raise ShuttingDown()
            api_key = self.plane.config.api_key
            if api_key and name not in OPEN_CALLS:
                require_api_key(api_key, dict(context.invocation_metadata() or ()).get("authorization", ""))
            return await method(self, request, context)
        except RequestError as exc:
            status, message = grpc.StatusCode[exc.grpc_code], str(exc)
        except asyncio.CancelledError:  # the client cancelled or its deadline passed: nobody to answer
            status = grpc.StatusCode.CANCELLED
            raise
        except Exception:  # noqa: BLE001 - a failure of ours: logged here, a bare INTERNAL for the client
            log.exception("unhandled error in gRPC %s", name)
            status, message = grpc.StatusCode.INTERNAL, "internal server error"
        finally:
            self.call_ended()
            seconds = time.perf_counter() - started
            self.metrics.requests.labels(SERVICE + name, status.name).inc()
            self.metrics.latency.labels(SERVICE + name).observe(seconds)
            if self.plane.config.access_log:
                access_log.info('%s "gRPC %s" %s %.1f ms', context.peer(), name, status.name, seconds * 1000)
        await context.abort(status, message)  # raises: the call ends with this status

    return handler


class Servicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, plane: DataPlane, metrics: Metrics) -> None:
        self.plane, self.metrics = plane, metrics
        self.stopping = False
        self.in_flight = 0
        self.in_flight_gauge = Gauge("foldserve_grpc_calls_in_flight", "gRPC calls received and not yet answered",
                                     registry=metrics.registry)
        self.idle = asyncio.Event()  # set while no handler runs: the shutdown waits for it
        self.idle.set()

    def call_started(self) -> None:
        self.in_flight += 1
        self.in_flight_gauge.set(self.in_flight)
        self.idle.clear()

    def call_ended(self) -> None:
        self.in_flight -= 1
        self.in_flight_gauge.set(self.in_flight)
        if self.in_flight == 0:
            self.idle.set()

    @rpc
    async def ServerLive(self, request: pb.ServerLiveRequest,
                         context: grpc.aio.ServicerContext) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    @rpc
    async def ServerReady(self, request: pb.ServerReadyRequest,
                          context: grpc.aio.ServicerContext) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=True)

    @rpc
    async def ModelReady(self, request: pb.ModelReadyRequest,
                         context: grpc.aio.ServicerContext) -> pb.ModelReadyResponse:
        self.plane.model_named(request.name, request.version or None)  # proto3: a blank version is the latest
        return pb.ModelReadyResponse(ready=True)

    @rpc
    async def ServerMetadata(self, request: pb.ServerMetadataRequest,
                             context: grpc.aio.ServicerContext) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(**await server_metadata())

    @rpc
    async def ModelMetadata(self, request: pb.ModelMetadataRequest,
                            context: grpc.aio.ServicerContext) -> pb.ModelMetadataResponse:
        served = self.plane.model_named(request.name, request.version or None)
        document = model_metadata(served, self.plane.versions(served.name))
        tensor = pb.ModelMetadataResponse.TensorMetadata
        # OIP's gRPC metadata has string properties where HTTP's has a JSON "parameters" object
        properties = {key: value if isinstance(value, str) else json.dumps(value)
                      for key, value in document["parameters"].items()}
        return pb.ModelMetadataResponse(name=document["name"], versions=document["versions"],
                                        platform=document["platform"],
                                        inputs=[tensor(**t) for t in document["inputs"]],
                                        outputs=[tensor(**t) for t in document["outputs"]], properties=properties)

    @rpc
    async def ModelInfer(self, request: pb.ModelInferRequest,
                         context: grpc.aio.ServicerContext) -> pb.ModelInferResponse:
        served = self.plane.model_named(request.model_name, request.model_version or None)
        size = request.ByteSize()
        if size <= INLINE_BYTES:
            document, binary = request_document(request)
        else:  # copying a large request's values into a document is no work for the event loop
            document, binary = await run_in_threadpool(request_document, request)
        parsed = await self.plane.parse(served, document, binary, size)
        logits = await self.plane.logits(served, parsed.images)
        return infer_response(served, parsed, logits)


def request_document(request: pb.ModelInferRequest) -> tuple[dict[str, Any], bytes]:
    """The JSON document and binary part an HTTP client would send for ``request``: raw_input_contents
    become binary tensor data claimed by ``binary_data_size``; typed contents become 'data' (FP32) or
    binary BYTES elements (each a 4-byte little-endian length and the bytes, as raw BYTES are sent)."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise ProtocolError(f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs; "
                            "send one per input, in the order of the inputs")
    inputs, binary = [], []
    for i, tensor in enumerate(request.inputs):
        spec: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape),
                                "parameters": parameters(tensor.parameters)}
        spec["parameters"].pop("binary_data_size", None)  # HTTP's; a gRPC tensor's size is its raw entry's
        filled = [field.name for field, _ in tensor.contents.ListFields()]
        chunk: bytes | None = None
        if raw:
            if filled:
                raise ProtocolError(f"input {tensor.name!r} has both contents and raw_input_contents; send one")
            chunk = raw[i]
        elif tensor.datatype in TYPED_CONTENTS:  # any other datatype is refused by infer_request, as over HTTP
            expected = TYPED_CONTENTS[tensor.datatype]
            if filled != [expected]:
                given = f", not in {', '.join(filled)}" if filled else ""
                raise ProtocolError(f"input {tensor.name!r} ({tensor.datatype}) needs its values in "
                                    f"raw_input_contents or contents.{expected}{given}")
            if tensor.datatype == "FP32":
                spec["data"] = list(tensor.contents.fp32_contents)
            else:
                chunk = b"".join(struct.pack("<I", len(e)) + e for e in tensor.contents.bytes_contents)
        if chunk is not None:
            spec["parameters"]["binary_data_size"] = len(chunk)
            binary.append(chunk)
        inputs.append(spec)
    document: dict[str, Any] = {"id": request.id, "inputs": inputs, "parameters": parameters(request.parameters)}
    if request.outputs:
        document["outputs"] = [{"name": o.name, "parameters": parameters(o.parameters)} for o in request.outputs]
    return document, b"".join(binary)


def parameters(entries: Any) -> dict[str, Any]:
    """A map of InferParameter as the plain values a JSON request holds."""
    values = {}
    for key, parameter in entries.items():
        which = parameter.WhichOneof("parameter_choice")
        values[key] = None if which is None else getattr(parameter, which)
    return values


def infer_response(served: Served, request: InferRequest, logits: np.ndarray) -> pb.ModelInferResponse:
    """The outputs asked for, always as raw_output_contents (tritonclient reads those when present; they
    cost no per-element encoding), whatever binary_data the request asked of HTTP's JSON; the version is
    the one that answered, as over HTTP."""
    response = pb.ModelInferResponse(model_name=served.name, model_version=served.version,
                                     id=request.request_id or "")
    for name, tensor, _ in requested_outputs(request, logits, softmax(logits)):
        response.outputs.add(name=name, datatype="FP32", shape=tensor.shape)
        response.raw_output_contents.append(tensor.tobytes())
    return response


class GrpcServer:
    """The gRPC server of one `serve http` process, in its event loop."""

    def __init__(self, server: grpc.aio.Server, servicer: Servicer, address: str) -> None:
        self.server, self.servicer, self.address = server, servicer, address

    @classmethod
    async def start(cls, plane: DataPlane, metrics: Metrics, address: str) -> GrpcServer:
        """Listen on ``address`` ("host:port"; port 0: any free port, named in the log line)."""
        # grpc refuses a larger message before the handler sees it (RESOURCE_EXHAUSTED): HTTP's body limit
        server = grpc.aio.server(options=[("grpc.max_receive_message_length", plane.config.max_body_bytes)])
        servicer = Servicer(plane, metrics)
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
        port = server.add_insecure_port(address)
        await server.start()
        bound = f"{address.rsplit(':', 1)[0]}:{port}"
        lifecycle_log.info("serving gRPC on %s (process %d)", bound, os.getpid())
        return cls(server, servicer, bound)

    async def stop(self) -> None:
        """From now on new calls are refused (UNAVAILABLE, by the servicer: grpc's own stop would cancel
        some of them instead, those whose stream opened before its GOAWAY reached the client). Calls
        whose request has arrived finish, within HTTP's grace; then grpc stops, giving calls still
        arriving a few seconds, as HTTP's uploads get, so a client stalled mid-request cannot hold it."""
        self.servicer.stopping = True
        lifecycle_log.info("stopping gRPC on %s (%d calls in flight)", self.address, self.servicer.in_flight)
        try:
            await asyncio.wait_for(self.servicer.idle.wait(), SHUTDOWN_GRACE_S)
        except asyncio.TimeoutError:
            pass
        await self.server.stop(SHUTDOWN_RECEIVE_S)
