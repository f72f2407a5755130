"""`serve http`: the Open Inference Protocol v2 over HTTP, dynamic batching, Prometheus metrics, a page.

The onnxruntime session is created once, in the lifespan; requests reach it through the dynamic
batcher. Needs the `http` extra (FastAPI, uvicorn, prometheus-client, python-multipart).
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import html
import json
import logging
import math
import os
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serve.batching import DynamicBatcher
from serve.errors import ModelControlOff, ModelLoadFailed, ModelNotFound, RequestError, ShuttingDown, \
    Unauthenticated, require_api_key
from serve.image.decode import DEFAULT_MAX_PIXELS
from serve.image.views import combine
from serve.model import INPUT_NAME, DigitModel, ModelError, load_model, softmax
from serve.protocol import HEADER_LENGTH, OUTPUTS, InferRequest, ProtocolError, encode_infer_response, flag, \
    holds_files, infer_request, parameters, split_body
from serve.reading import Page, Reading, interpret_for, prepare_page
from serve.repository import DEFAULT_MODEL_NAME, MODEL_FILENAME, is_model_name, load_repository, load_versions, \
    models_on_disk, version_key

CONFIG_ENV = "FOLDSERVE_HTTP_CONFIG"
IMAGE_TYPES = ("image/", "application/octet-stream")
OPEN_PATHS = ("/v2/health/live", "/v2/health/ready", "/")  # answered without the API key
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
CLIENT_CLOSED = 499  # the status nginx logs for a client that left before its answer
MAX_CONTROL_BODY = 64 * 1024  # a repository request is a small JSON object
# Inference requests up to this size (a few images as JSON, ~20 as binary tensors) are parsed on the
# event loop, and responses of up to INLINE_IMAGES images encoded there: well under a millisecond, less
# than the hops to a worker thread and back cost. Larger ones go to worker threads.
INLINE_BYTES = 64 * 1024
INLINE_IMAGES = 64

log = logging.getLogger(__name__)
access_log = logging.getLogger("foldserve.access")
lifecycle_log = logging.getLogger("foldserve.lifecycle")  # started / stopped, for operators (serve http)


@dataclass(frozen=True)
class ServerConfig:
    model_path: str = "runs/default/model.onnx"
    model_name: str = DEFAULT_MODEL_NAME  # with a repository: the model /predict and the page read with
    repository: str | None = None  # a model repository in Triton's layout, served instead of model_path
    allow_model_control: bool = False  # POST /v2/repository/models/NAME/load and /unload
    max_batch: int = 64
    max_delay_ms: float = 0.0
    max_body_bytes: int = 25 * 1024 * 1024  # a 48 MP phone JPEG is 10-20 MB
    max_queue: int = 1024  # requests waiting for the model; beyond this: 503
    max_decodes: int = 2  # images decoded at once (per process): decoded pixels are the big allocation
    max_pixels: int = DEFAULT_MAX_PIXELS  # larger images are refused before decoding
    api_key: str | None = None  # when set, every endpoint but health and the page needs "Bearer <key>"
    allowed_hosts: tuple[str, ...] = ("*",)  # Host header values accepted (DNS rebinding); "*": any
    cors_origins: tuple[str, ...] = ()  # browser origins allowed to call the API; none by default
    request_timeout_s: float = 60.0  # from a request's first byte to its last (serve/connection.py)
    access_log: bool = False  # one line per request on stderr (the "foldserve.access" logger)
    grpc_address: str | None = None  # "host:port": OIP v2 over gRPC beside HTTP (serve/grpc_server.py); None: off

    def __post_init__(self) -> None:
        for name in ("max_batch", "max_queue", "max_decodes", "max_pixels"):
            if getattr(self, name) < 1:
                raise ValueError(f"ServerConfig.{name} must be at least 1, got {getattr(self, name)}")
        for name in ("allowed_hosts", "cors_origins"):  # lists when the config comes back from JSON
            object.__setattr__(self, name, tuple(getattr(self, name)))


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("foldserve_requests", "HTTP requests", ["endpoint", "status"], registry=self.registry)
        self.latency = Histogram("foldserve_request_latency_seconds", "Request latency", ["endpoint"],
                                 registry=self.registry,
                                 buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5))
        self.batch_size = Histogram("foldserve_batch_size", "Images per model call", registry=self.registry,
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512))
        self.queue_time = Histogram("foldserve_queue_time_seconds", "Time a request waited for its batch",
                                    registry=self.registry,
                                    buckets=(0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1))

    def on_batch(self, size: int, queue_times: list[float]) -> None:
        self.batch_size.observe(size)
        for t in queue_times:
            self.queue_time.observe(t)


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) anything above ``limit`` without reading it all into memory."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"request body of {int(declared):,} bytes is above the limit of {limit:,}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"request body is above the limit of {limit:,} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def model_metadata(served: "Served", versions: list[str]) -> dict[str, Any]:
    model = served.model
    classes, side = len(model.labels), model.field_spec.size
    return {
        "name": served.name, "versions": versions, "platform": "onnxruntime_onnx",
        "inputs": [{"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, 1, side, side]},
                   {"name": "image_files", "datatype": "BYTES", "shape": [-1]}],
        "outputs": [{"name": o, "datatype": "FP32", "shape": [-1, classes]} for o in OUTPUTS],
        "parameters": {
            "inputs": f"send exactly one input: {INPUT_NAME!r} (pixels in [0,1], white ink on black) or "
                      "'image_files' (encoded images, preprocessed as `serve predict` does)",
            "labels": model.labels,
        },
    }


@dataclass
class Served:
    """One version of one model as the server runs it: the model and the dynamic batcher in front of it."""
    name: str
    version: str
    model: DigitModel
    batcher: DynamicBatcher


class DataPlane:
    """What the endpoints do, apart from HTTP (KServe's layering: model -> data plane -> endpoints):
    the models by name and version, each behind its own batcher (as Triton schedules each model
    apart), the decode slots all of them share, and a repository's models loaded and unloaded."""

    def __init__(self, config: ServerConfig, on_batch: Callable[[int, list[float]], None] | None = None) -> None:
        self.config, self.on_batch = config, on_batch
        self.models: dict[str, dict[str, Served]] = {}  # name -> version -> served
        self.not_loaded: dict[str, str] = {}  # a repository's model that is not served -> why
        # waiting requests hold only their (size-limited) body, no thread and no decoded pixels
        self.decodes = asyncio.BoundedSemaphore(config.max_decodes)
        self.control = asyncio.Lock()  # one load or unload at a time

    def serve(self, name: str, versions: dict[str, DigitModel]) -> list[Served]:
        """Serve ``versions`` of model ``name`` from now on; returns the versions served under that name
        until now, for the caller to stop()."""
        served = {}
        for version, model in versions.items():
            batcher = DynamicBatcher(model.logits, max_batch=self.config.max_batch,
                                     max_delay_ms=self.config.max_delay_ms, max_queue=self.config.max_queue,
                                     on_batch=self.on_batch)
            batcher.start()
            served[version] = Served(name, version, model, batcher)
        replaced = list(self.models.get(name, {}).values())
        self.models[name] = served
        self.not_loaded.pop(name, None)
        return replaced

    async def stop(self, served: list[Served] | None = None) -> None:
        """Stop the batchers of ``served`` (default: every model's) once the requests they hold are answered."""
        for entry in served if served is not None else [s for v in self.models.values() for s in v.values()]:
            await entry.batcher.stop()

    def model_named(self, name: str, version: str | None = None) -> Served:
        """Model ``name`` at ``version`` (None: its latest version), or ModelNotFound."""
        versions = self.models.get(name)
        if not versions:
            if name in self.not_loaded:
                raise ModelNotFound(f"model {name!r} is not loaded ({self.not_loaded[name]})")
            known = ", ".join(repr(n) for n in sorted(self.models)) or "no model"
            raise ModelNotFound(f"unknown model {name!r}; this server serves {known}")
        if version is None:
            return versions[max(versions, key=version_key)]
        if version not in versions:
            raise ModelNotFound(f"unknown version {version[:40]!r} of model {name!r}; "
                                f"it has {', '.join(self.versions(name))}")
        return versions[version]

    def versions(self, name: str) -> list[str]:
        return sorted(self.models.get(name, {}), key=version_key)

    async def logits(self, served: Served, images: np.ndarray) -> np.ndarray:
        """``images`` run by ``served`` through its batcher: Overloaded when its queue is full; ShuttingDown
        once the batcher is stopped, saying why (a request can find a model just before it is unloaded)."""
        try:
            return await served.batcher.submit(images)
        except ShuttingDown:
            if self.models.get(served.name, {}).get(served.version) is served:
                raise  # still the version served: the server itself is stopping
            raise ShuttingDown(f"model {served.name!r} version {served.version} was unloaded while the "
                               "request waited") from None

    async def parse(self, served: Served, document: dict[str, Any], binary: bytes, size: int) -> InferRequest:
        """The inference request in a parsed ``document`` and its ``binary`` part (``size`` bytes in all).
        A small tensor request is validated right here: that takes microseconds, less than a hop to a
        worker thread and back. Image files (BYTES inputs) and large requests are handled off the event
        loop, which keeps accepting requests, and at most max_decodes at once, since decoded images are
        the big allocation."""
        field, max_pixels = served.model.field_spec, self.config.max_pixels
        if size <= INLINE_BYTES and not holds_files(document):
            return infer_request(document, binary, field, max_pixels)
        async with self.decodes:
            return await run_in_threadpool(infer_request, document, binary, field, max_pixels)

    async def infer(self, served: Served, request: Request) -> Response:
        """An OIP v2 inference request (JSON or the binary tensor extension) -> its response."""
        content_type = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
        if content_type not in ("application/json", "application/octet-stream", ""):
            raise HTTPException(415, f"content type {content_type!r} is not accepted; send application/json")
        body = await read_body(request, self.config.max_body_bytes)
        header_length = request.headers.get(HEADER_LENGTH)
        if len(body) <= INLINE_BYTES:
            document, binary = split_body(body, header_length)
        else:
            document, binary = await run_in_threadpool(split_body, body, header_length)
        parsed = await self.parse(served, document, binary, len(body))
        logits = await self.logits(served, parsed.images)
        encode = functools.partial(encode_infer_response, served.name, parsed, logits, softmax(logits),
                                   model_version=served.version)
        payload, headers = encode() if len(logits) <= INLINE_IMAGES else await run_in_threadpool(encode)
        media = "application/octet-stream" if headers else "application/json"
        return Response(payload, media_type=media, headers=headers)

    async def read_upload(self, request: Request) -> dict[str, Any]:
        """One uploaded image (raw body or multipart field 'file') -> the JSON object of `serve predict --json`,
        read with the server's model (--model-name, its latest version)."""
        served = self.model_named(self.config.model_name)
        min_confidence = confidence_parameter(request.query_params.get("min_confidence"))
        content_type = request.headers.get("content-type", "").lower()
        body = await read_body(request, self.config.max_body_bytes)
        filename = "upload"
        if content_type.startswith("multipart/form-data"):
            data, filename = await multipart_file(request, body, content_type)
        elif content_type.startswith(IMAGE_TYPES):
            data = body
        else:
            raise HTTPException(415, f"content type {content_type or 'none'!r} is not an image; send the image "
                                     "as the body (image/png, image/jpeg, ...) or as multipart field 'file'")
        del body  # a multipart body's image is a copy: only that waits for a decode slot
        async with self.decodes:
            page = await run_in_threadpool(prepare_page, data, filename, served.model.field_spec,
                                           self.config.max_pixels)
        if page.error:
            raise HTTPException(400, f"{filename}: {page.error}")
        reading = await self.read_page(served, page, min_confidence)
        return reading.record(served.model.labels)

    async def read_page(self, served: Served, page: Page, min_confidence: float | None) -> Reading:
        """The page's reading: the views of all its fields in one submit to the batcher, averaged and interpreted
        as `serve predict` does."""
        if len(page.fields):
            views = await run_in_threadpool(served.model.view_fields, page.fields)
            probabilities = combine(softmax(await self.logits(served, views)), len(served.model.views))
        else:
            probabilities = np.zeros((0, len(served.model.labels)), np.float32)
        return interpret_for(served.model, page, probabilities, min_confidence)

    # ----------------------------------------------------------------------- the repository extension

    def index(self, ready_only: bool) -> list[dict[str, str]]:
        """Every model in the repository or served, by version, with its state (Triton's repository index)."""
        on_disk = models_on_disk(Path(self.config.repository)) if self.config.repository else {}
        entries = []
        for name in sorted(set(on_disk) | set(self.models)):
            served = self.models.get(name, {})
            versions = sorted(set(on_disk.get(name, [])) | set(served), key=version_key)
            for version in versions:
                if version in served:
                    entries.append({"name": name, "version": version, "state": "READY"})
                elif not ready_only:
                    entries.append({"name": name, "version": version, "state": "UNAVAILABLE",
                                    "reason": self.not_loaded.get(name, "not loaded")})
            if not versions and not ready_only:
                entries.append({"name": name, "state": "UNAVAILABLE",
                                "reason": self.not_loaded.get(name, f"no version directory with a {MODEL_FILENAME}")})
        return entries

    def check_model_control(self) -> None:
        if not (self.config.allow_model_control and self.config.repository):
            raise ModelControlOff()

    def repository_model(self, name: str) -> Path:
        """The directory of model ``name`` in the repository, or ModelNotFound."""
        repository = Path(self.config.repository or "")
        if not is_model_name(name) or not (repository / name).is_dir():
            raise ModelNotFound(f"no model {name[:80]!r} in the model repository")
        return repository / name

    async def load(self, name: str) -> None:
        """(Re)load every version of model ``name`` from the repository. If that fails, what was served
        under that name goes on being served (as Triton does)."""
        self.check_model_control()
        self.repository_model(name)
        async with self.control:
            try:
                versions = await run_in_threadpool(load_versions, Path(self.config.repository or ""), name)
            except ModelError as exc:
                if name not in self.models:
                    self.not_loaded[name] = f"failed to load: {exc}"
                raise ModelLoadFailed(f"cannot load model {name!r}: {exc}") from None
            await self.stop(self.serve(name, versions))  # the old versions answer what they hold first

    async def unload(self, name: str) -> None:
        """Stop serving model ``name`` (its queued requests are answered first); a no-op if it is not served."""
        self.check_model_control()
        async with self.control:
            if name not in self.models:
                self.repository_model(name)  # a 404 for a name that is nowhere
                return
            removed = list(self.models.pop(name).values())
            self.not_loaded[name] = "unloaded"
            await self.stop(removed)


# --------------------------------------------------------------------------- dependencies and routers


# The metadata routes get their model through FastAPI dependencies; the inference routes, the hot
# path, are plain Starlette routes (InferRoute, below) that resolve it themselves. Async, although
# they never wait: a plain-def dependency would run in a worker thread.
async def data_plane(request: Request) -> DataPlane:
    return request.app.state.plane


async def named_model(name: str, plane: DataPlane = Depends(data_plane)) -> Served:
    return plane.model_named(name)


async def versioned_model(name: str, version: str, plane: DataPlane = Depends(data_plane)) -> Served:
    return plane.model_named(name, version)


health = APIRouter(prefix="/v2/health")


@health.get("/live")
async def live() -> dict[str, bool]:
    return {"live": True}


@health.get("/ready")
async def ready() -> dict[str, bool]:
    return {"ready": True}


v2 = APIRouter(prefix="/v2")


@v2.get("")
async def server_metadata() -> dict[str, Any]:
    return {"name": "foldserve", "version": server_version(), "extensions": ["binary_tensor_data", "model_repository"]}


@v2.get("/models/{name}")
async def get_model_metadata(served: Served = Depends(named_model),
                             plane: DataPlane = Depends(data_plane)) -> dict[str, Any]:
    return model_metadata(served, plane.versions(served.name))


@v2.get("/models/{name}/versions/{version}")
async def get_model_version_metadata(served: Served = Depends(versioned_model),
                                     plane: DataPlane = Depends(data_plane)) -> dict[str, Any]:
    return model_metadata(served, plane.versions(served.name))


@v2.get("/models/{name}/ready")
async def model_ready(served: Served = Depends(named_model)) -> dict[str, Any]:
    return {"name": served.name, "ready": True}


@v2.get("/models/{name}/versions/{version}/ready")
async def model_version_ready(served: Served = Depends(versioned_model)) -> dict[str, Any]:
    return {"name": served.name, "version": served.version, "ready": True}


async def infer(request: Request) -> Response:
    plane: DataPlane = request.app.state.plane  # not a dependency: see above
    params = request.path_params
    return await plane.infer(plane.model_named(params["name"], params.get("version")), request)


class InferRoute(Route):
    """The inference routes: plain Starlette routes, since FastAPI's request handling (parameter and
    dependency solving, its response wrapping) cost a fifth of a small request's time and none of it
    is used here (README.md, "The hot path"). Like FastAPI's routes, they put themselves in the
    scope, where /metrics finds the route a request took."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child_scope = super().matches(scope)
        if match is not Match.NONE:
            child_scope["route"] = self
        return match, child_scope


INFER_PATHS = ("/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer")


def infer_path_params(path: str) -> dict[str, str] | None:
    """The path parameters of an inference path (INFER_PATHS), or None for any other path."""
    parts = path.split("/")
    if len(parts) == 5 and parts[1] == "v2" and parts[2] == "models" and parts[3] and parts[4] == "infer":
        return {"name": parts[3]}
    if (len(parts) == 7 and parts[1] == "v2" and parts[2] == "models" and parts[3] and parts[4] == "versions"
            and parts[5] and parts[6] == "infer"):
        return {"name": parts[3], "version": parts[5]}
    return None


class ServingApp(FastAPI):
    """The FastAPI application, with inference requests answered before its own middleware stack:
    FastAPI's and Starlette's layers (error middleware, exception middleware, the exit stack, route
    matching by regular expression) cost a fifth of a small request's time at 64 connections, and an
    inference request uses none of them. They pass the same Counted layer (host and key checks,
    metrics, access log) and get the same answers and errors as on the routes (README.md, "The hot
    path"). With CORS on, they take the routes, through the CORS middleware; and so they do while
    FastAPI's own OpenTelemetry instrumentation is on, which makes their spans."""

    direct_infer: ASGIApp | None = None
    infer_routes: tuple[Route, ...] = ()  # the routes of INFER_PATHS, in that order

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.direct_infer is not None and scope["type"] == "http" and scope["method"] == "POST":
            params = infer_path_params(scope["path"])
            telemetry = getattr(self, "_native_telemetry", None)  # FastAPI >= 0.16x: spans and metrics
            if params is not None and not (telemetry is not None and telemetry.enabled()):
                scope["app"], scope["path_params"] = self, params
                scope["route"] = self.infer_routes[len(params) - 1]  # where /metrics finds the endpoint
                await self.direct_infer(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


async def answer_infer(scope: Scope, receive: Receive, send: Send) -> None:
    """An inference request answered as its route would answer it, refusals included."""
    request = Request(scope, receive)
    try:
        response = await infer(request)
    except RequestError as exc:
        response = await request_error(request, exc)
    except StarletteHTTPException as exc:
        response = await http_error(request, exc)
    await response(scope, receive, send)


# Triton's model repository extension: the index always; load and unload with --allow-model-control.
repository = APIRouter(prefix="/v2/repository")


# A malformed repository request raises ProtocolError, answered 400 like any refusal (serve/errors.py).
async def control_request(request: Request) -> dict[str, Any]:
    """The optional JSON object of a repository request (an empty body is an empty object)."""
    body = await read_body(request, MAX_CONTROL_BODY)
    if not body.strip():
        return {}
    return split_body(body, None)[0]


def control_parameters(document: dict[str, Any], accepted: tuple[str, ...]) -> dict[str, Any]:
    given = parameters(document, "the request")
    unknown = sorted(set(given) - set(accepted))
    if unknown:  # Triton's config and file overrides: a model is loaded from the repository as it is
        raise ProtocolError(f"parameter {unknown[0][:40]!r} is not supported here")
    return given


@repository.post("/index")
async def repository_index(request: Request, plane: DataPlane = Depends(data_plane)) -> list[dict[str, str]]:
    return plane.index(ready_only=flag(await control_request(request), "ready", False))


@repository.post("/models/{name}/load")
async def load_model_into_server(name: str, request: Request, plane: DataPlane = Depends(data_plane)) -> Response:
    plane.check_model_control()
    control_parameters(await control_request(request), accepted=())
    await plane.load(name)
    return Response(status_code=200)


@repository.post("/models/{name}/unload")
async def unload_model_from_server(name: str, request: Request, plane: DataPlane = Depends(data_plane)) -> Response:
    plane.check_model_control()
    # no model depends on another here, so unload_dependents changes nothing; it is checked all the same
    flag(control_parameters(await control_request(request), accepted=("unload_dependents",)), "unload_dependents",
         False)
    await plane.unload(name)
    return Response(status_code=200)


reading = APIRouter()


@reading.post("/predict")
async def predict(request: Request, plane: DataPlane = Depends(data_plane)) -> dict[str, Any]:
    """The reading of one image, the object `serve predict --json` prints (a refusal is a 200 answer)."""
    return await plane.read_upload(request)


@reading.get("/", response_class=HTMLResponse)
async def page(plane: DataPlane = Depends(data_plane)) -> HTMLResponse:
    text = (resources.files("serve") / "static" / "index.html").read_text()
    return HTMLResponse(text.replace("__MODEL_NAME__", html.escape(plane.config.model_name, quote=True)))


operations = APIRouter()


@operations.get("/metrics")
async def prometheus_metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


# --------------------------------------------------------------------------- the application


def create_app(config: ServerConfig, model: DigitModel | None = None) -> ServingApp:
    """The application. ``model`` may be given (tests); otherwise it is loaded in the lifespan."""
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        plane = DataPlane(config, metrics.on_batch)
        if config.repository and model is None:
            for name, versions in load_repository(Path(config.repository)).items():
                plane.serve(name, versions)
        else:
            plane.serve(config.model_name, {"1": model or load_model(Path(config.model_path))})
        app.state.plane = plane
        grpc_server = None
        if config.grpc_address is not None:
            from serve.grpc_server import GrpcServer  # the grpc extra, imported only when asked for

            grpc_server = await GrpcServer.start(plane, metrics, config.grpc_address)
        yield
        if grpc_server is not None:  # HTTP has finished its requests; gRPC finishes its own
            await grpc_server.stop()
        await plane.stop()  # in-flight requests finish before the process exits
        lifecycle_log.info("stopped serving %s (process %d)", config.repository or config.model_path, os.getpid())

    app = ServingApp(title="foldserve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    if config.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(config.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type", HEADER_LENGTH],
                           expose_headers=[HEADER_LENGTH])
    app.state.config = config
    app.state.metrics = metrics
    if config.access_log:
        log_to_stderr(access_log)
    app.add_middleware(Counted, config=config, metrics=metrics)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestError, request_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.infer_routes = tuple(InferRoute(path, infer, methods=["POST"]) for path in INFER_PATHS)
    app.router.routes.extend(app.infer_routes)
    for router in (health, v2, repository, reading, operations):
        app.include_router(router)
    if not config.cors_origins:
        app.direct_infer = Counted(answer_infer, config=config, metrics=metrics)
    return app


class Counted:
    """The ASGI middleware every HTTP request passes: host and key checks, then the route, then the
    metrics (and the access log); a route's unexpected failure becomes a counted JSON 500.

    A plain ASGI middleware, not Starlette's ``BaseHTTPMiddleware``: that one runs every request
    through a task group and memory streams, which cost more than the rest of a small inference
    request's handling (README.md, "The hot path")."""

    def __init__(self, app: ASGIApp, config: ServerConfig, metrics: Metrics) -> None:
        self.app, self.config, self.metrics = app, config, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request = Request(scope)
        status = 500
        refusal = guard(self.config, request)
        if refusal is not None:
            status = refusal.status_code
            await refusal(scope, receive, send)
        else:
            response_started = False

            async def send_counted(message: Message) -> None:
                nonlocal status, response_started
                if message["type"] == "http.response.start":
                    status, response_started = message["status"], True
                await send(message)

            try:
                await self.app(scope, receive, send_counted)
            except ClientDisconnect:  # the client left (or was too slow): nothing to answer, nothing to log
                status = CLIENT_CLOSED
            except Exception:  # counted and answered here: Starlette's own 500 comes after the metrics
                log.exception("unhandled error on %s %s", scope["method"], scope["path"])
                status = 500
                if not response_started:
                    await error(500, "internal server error")(scope, receive, send)
        route = scope.get("route")
        endpoint = getattr(route, "path", "unmatched")
        self.metrics.requests.labels(endpoint, str(status)).inc()
        seconds = time.perf_counter() - started
        self.metrics.latency.labels(endpoint).observe(seconds)
        if self.config.access_log:
            client = scope.get("client")
            access_log.info('%s "%s %s" %d %.1f ms', client[0] if client else "-", scope["method"], scope["path"],
                            status, seconds * 1000)


async def http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return error(exc.status_code, str(exc.detail))


async def request_error(request: Request, exc: Exception) -> JSONResponse:
    """A refusal of the data plane or the protocol layer (serve/errors.py), with its HTTP status."""
    assert isinstance(exc, RequestError)
    return error(exc.http_status, str(exc))


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    return error(400, "invalid request")


def guard(config: ServerConfig, request: Request) -> JSONResponse | None:
    """The refusal of a request from a host not allowed, or without the API key; None to let it in."""
    if "*" not in config.allowed_hosts:
        host = request.headers.get("host", "")
        name = host[1:host.index("]")] if host.startswith("[") and "]" in host else host.rsplit(":", 1)[0]
        if name.lower() not in config.allowed_hosts:
            return error(400, f"host {host[:80]!r} is not allowed; "
                              f"the server answers {', '.join(config.allowed_hosts)}")
    if config.api_key and request.url.path not in OPEN_PATHS and request.method != "OPTIONS":
        try:
            require_api_key(config.api_key, request.headers.get("authorization", ""))
        except Unauthenticated as exc:
            response = error(exc.http_status, str(exc))
            response.headers["WWW-Authenticate"] = "Bearer"
            return response
    return None


def server_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("foldserve")
    except PackageNotFoundError:
        return "unknown"


def confidence_parameter(value: str | None) -> float | None:
    """The ``min_confidence`` query parameter: None when absent, else a number in [0, 1] (400 otherwise)."""
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not 0.0 <= number <= 1.0:  # NaN fails too
        raise HTTPException(400, f"min_confidence must be a number from 0 to 1, got {value[:40]!r}")
    return number


async def multipart_file(request: Request, body: bytes, content_type: str) -> tuple[bytes, str]:
    """The bytes and name of multipart field 'file' (the body is already read and size-checked)."""
    from starlette.datastructures import UploadFile
    from starlette.formparsers import MultiPartException, MultiPartParser

    async def replay() -> AsyncGenerator[bytes, None]:
        yield body

    try:
        form = await MultiPartParser(request.headers, replay()).parse()
    except MultiPartException as exc:
        raise HTTPException(400, f"malformed multipart body: {exc.message}") from None
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise HTTPException(400, "multipart body has no file field named 'file'")
        return await upload.read(), upload.filename or "upload"
    finally:
        await form.close()


def log_to_stderr(logger: logging.Logger) -> None:
    """Send ``logger``'s INFO lines to stderr, once per process (each worker builds its own app)."""
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def create_app_from_env() -> FastAPI:
    """Factory for uvicorn workers: the configuration comes from an environment variable."""
    log_to_stderr(lifecycle_log)
    return create_app(ServerConfig(**json.loads(os.environ[CONFIG_ENV])))


def config_to_env(config: ServerConfig) -> str:
    return json.dumps(asdict(config))
