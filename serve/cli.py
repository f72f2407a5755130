"""`serve`: digit predictions from the exported ONNX model, with onnxruntime only (never torch).

numpy, Pillow and onnxruntime are imported inside the commands so `serve --help` is instant.
"""
from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import NoReturn

import click

from serve.limits import DEFAULT_MAX_PIXELS, SHUTDOWN_GRACE_S
from serve.repository import DEFAULT_MODEL_NAME

DEFAULT_MODEL = Path("runs/default/model.onnx")
EXIT_MODEL_ERROR = 1
EXIT_INPUT_ERROR = 2
EXIT_USAGE = 2  # an option that cannot work (as click's own usage errors)


model_option = click.option("--model", "model_path", type=click.Path(path_type=Path), envvar="SERVE_MODEL",
                            default=DEFAULT_MODEL, show_default=True, show_envvar=True,
                            help="The exported ONNX model.")
max_pixels_option = click.option(
    "--max-pixels", type=click.IntRange(min=1), default=DEFAULT_MAX_PIXELS, show_default=True,
    help="Refuse images declaring more pixels than this, before decoding them (decompression bombs).")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="foldserve", prog_name="serve")
def cli() -> None:
    """Serve predictions from a BN-free ONNX digit model exported by `pipeline export`."""


@cli.command()
@click.argument("images", nargs=-1, required=True)
@model_option
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object per line: image, text, digits (label, probability, box), not_a_digit; "
                   "label, probability and probabilities when exactly one digit is read; error for unreadable input.")
@click.option("--top-k", type=click.IntRange(min=1), default=1, show_default=True,
              help="Also show the K most likely classes (single digits).")
@click.option("--min-confidence", type=click.FloatRange(0.0, 1.0), default=None,
              help="Refuse a digit read with a lower probability  [default: the model's calibrated threshold]")
@max_pixels_option
@click.option("--batch-size", type=click.IntRange(1, 256), default=256, show_default=True, hidden=True)
def predict(images: tuple[str, ...], model_path: Path, as_json: bool, top_k: int, min_confidence: float | None,
            max_pixels: int, batch_size: int) -> None:
    """Read the digits in each IMAGE: files, directories (every image inside, sorted) or - for stdin.

    Photos of digits on paper (shadows, ruled or squared paper, a sheet on a desk), scans, canvas
    exports, any format Pillow reads (HEIC with the heif extra). Every digit is found, made into an
    MNIST-form field and read; a number is read left to right.

    Prints `IMAGE: 7 (probability 0.998)`, `IMAGE: 2026 (digits 2 0 2 6, lowest probability 0.97)`, or
    `IMAGE: not a digit (best guess 4, 0.41)` for letters, shapes, scribbles and blank paper — a refusal
    is an answer (exit 0). Unreadable inputs are reported on stderr and the others still read; exit
    status 2 if any input failed, 1 if the model cannot be used.
    """
    from serve.model import ModelError, load_model
    from serve.predict import Skipped
    from serve.predict import predict as run_predictions

    try:
        model = load_model(model_path)
    except ModelError as exc:
        fail(str(exc))
    top_k = min(top_k, len(model.labels))
    failed = False
    for reading in run_predictions(model, images, batch_size=batch_size, max_pixels=max_pixels,
                                   min_confidence=min_confidence):
        if isinstance(reading, Skipped):
            click.echo(f"serve: skipped {reading.name}: {reading.reason}", err=True)
            if as_json:
                click.echo(json.dumps({"image": reading.name, "skipped": reading.reason}))
            continue
        if reading.error:
            failed = True
            click.echo(f"serve: error: {reading.image}: {reading.error}", err=True)
        if as_json:
            click.echo(json.dumps(reading.record(model.labels, top_k)))
        elif not reading.error:
            click.echo(reading.line(model.labels, top_k))
    if failed:
        sys.exit(EXIT_INPUT_ERROR)


def fail(message: str, status: int = EXIT_MODEL_ERROR) -> NoReturn:
    click.echo(f"serve: error: {message}", err=True)
    sys.exit(status)


@cli.command()
@model_option
@click.option("--repository", type=click.Path(path_type=Path), default=None,
              help="Serve every model and version in this model repository (Triton's layout, as `pipeline export "
                   "--repository` writes it) instead of one --model; a request without a version gets the "
                   "latest. Not with --model.")
@click.option("--model-name", default=DEFAULT_MODEL_NAME, show_default=True,
              help="The model's name in the /v2 API; with --repository, the model /predict and the page read with.")
@click.option("--allow-model-control", is_flag=True,
              help="With --repository: allow POST /v2/repository/models/NAME/load and /unload (otherwise they "
                   "are answered 403). Needs --workers 1: each worker process holds its own models.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (loopback unless told).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--max-batch", type=click.IntRange(min=1), default=64, show_default=True,
              help="Dynamic batching: most images per model call (1 turns batching off).")
@click.option("--max-delay-ms", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Dynamic batching: how long to wait for more requests after the first. At 0 a batch "
                   "is whatever arrived while the previous one ran: an idle server answers at once.")
@click.option("--max-body-mb", type=click.FloatRange(min=0.001), default=25.0, show_default=True,
              help="Larger request bodies are refused with 413.")
@click.option("--max-queue", type=click.IntRange(min=1), default=1024, show_default=True,
              help="Requests waiting for the model beyond this are answered 503.")
@click.option("--max-decodes", type=click.IntRange(min=1), default=2, show_default=True,
              help="Images decoded at once per server process (decoded pixels are the large allocation); "
                   "other requests wait their turn.")
@max_pixels_option
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Server processes.")
@click.option("--api-key", envvar="FOLDSERVE_API_KEY", show_envvar=True, default=None,
              help="Require 'Authorization: Bearer KEY' on every endpoint but health and the page "
                   "(open the page as /#key=KEY). Prefer the environment variable: options show in `ps`.")
@click.option("--allowed-host", "allowed_hosts", multiple=True, metavar="NAME",
              help="Host header values to answer (repeat; '*' for any). Default: localhost, 127.0.0.1 and ::1 "
                   "when bound to loopback (stops DNS rebinding), any otherwise.")
@click.option("--request-timeout", "request_timeout_s", type=click.FloatRange(min=0.1), default=60.0,
              show_default=True, help="Seconds a client has to send a whole request (headers and body); a slower "
                                      "one gets 408 and is disconnected (slowloris).")
@click.option("--cors-origin", "cors_origins", multiple=True, metavar="ORIGIN",
              help="Browser origins (https://app.example) allowed to call the API from their pages (repeat). "
                   "Default: none.")
@click.option("--access-log", is_flag=True,
              help='One line per request on stderr: time, client, "METHOD PATH", status, milliseconds.')
@click.option("--grpc-port", type=click.IntRange(0, 65535), default=None,
              help="Also serve the Open Inference Protocol over gRPC on this port (same --host, models, batchers "
                   "and limits; needs the grpc extra). Default: off.")
@click.pass_context
def http(ctx: click.Context, model_path: Path, repository: Path | None, model_name: str, allow_model_control: bool,
         host: str, port: int, max_batch: int, max_delay_ms: float,
         max_body_mb: float, max_queue: int, max_decodes: int, max_pixels: int, workers: int,
         api_key: str | None, allowed_hosts: tuple[str, ...], request_timeout_s: float,
         cors_origins: tuple[str, ...], access_log: bool, grpc_port: int | None) -> None:
    """Serve the model over HTTP: Open Inference Protocol v2 (/v2/...), POST /predict (the reading of an
    image, as `serve predict --json` prints it), /metrics, and a page at / to write a number on or read a
    photo with. With --repository, every model in a model repository (and Triton's repository
    extension, /v2/repository/...). Stops cleanly on Ctrl-C or SIGTERM (requests in flight finish)."""
    import os

    from serve.model import ModelError, load_model
    from serve.repository import load_repository

    if repository is not None and ctx.get_parameter_source("model_path") == click.core.ParameterSource.COMMANDLINE:
        fail("--model and --repository are mutually exclusive: serve one model file or a repository", EXIT_USAGE)
    if allow_model_control and repository is None:
        fail("--allow-model-control loads and unloads a repository's models: give --repository DIR", EXIT_USAGE)
    if allow_model_control and workers > 1:
        fail("--allow-model-control needs --workers 1: each worker process holds its own models, and a load "
             "or unload would reach only one of them", EXIT_USAGE)

    try:
        import uvicorn

        from serve.server import CONFIG_ENV, LOOPBACK_HOSTS, ServerConfig, config_to_env
    except ModuleNotFoundError as exc:
        click.echo(f"serve: error: `serve http` needs the http extra ({exc.name} is not installed): "
                   "pip install 'foldserve[http]'", err=True)
        sys.exit(EXIT_MODEL_ERROR)
    if grpc_port is not None:
        grpc_missing = missing_grpc_extra()
        if grpc_missing:
            fail(f"--grpc-port needs the grpc extra ({grpc_missing} is not installed): pip install 'foldserve[grpc]'")
    try:  # fail now, with one line, rather than inside a worker
        if repository is None:
            load_model(model_path)
            served = f"{model_path} as {model_name!r}"
        else:
            models = load_repository(repository)
            if model_name not in models:
                raise ModelError(f"the repository {repository} has no model {model_name!r} for /predict and the page "
                                 f"(it has {', '.join(map(repr, models)) or 'none'}): choose one with --model-name")
            served = f"the repository {repository} ({', '.join(f'{n}/{v}' for n in models for v in models[n])})"
            del models  # the server loads its own; these would stay in memory beside them while it runs
    except ModelError as exc:
        fail(str(exc))
    unbindable = cannot_listen(host, port)
    if unbindable:
        click.echo(f"serve: error: cannot listen on {host}:{port}: {unbindable}", err=True)
        sys.exit(EXIT_USAGE)
    if grpc_port is not None:
        same = grpc_port == port and port != 0  # 0 is any free port, for each
        if grpc_port == 0 and workers > 1:  # each worker binds gRPC itself (SO_REUSEPORT): port 0 gives each its own
            fail(f"--grpc-port 0 (any free port) would give each of the {workers} workers another port; "
                 "give a port number", EXIT_USAGE)
        unbindable = "it is the HTTP --port" if same else cannot_listen(host, grpc_port, "--grpc-port")
        if unbindable:
            fail(f"cannot listen on {host}:{grpc_port} for gRPC: {unbindable}", EXIT_USAGE)
    loopback = is_loopback(host)
    if not allowed_hosts:
        allowed_hosts = LOOPBACK_HOSTS if loopback else ("*",)
    config = ServerConfig(model_path=str(model_path.resolve()), model_name=model_name,
                          repository=str(repository.resolve()) if repository else None,
                          allow_model_control=allow_model_control, max_batch=max_batch,
                          max_delay_ms=max_delay_ms, max_body_bytes=int(max_body_mb * 1024 * 1024),
                          max_queue=max_queue, max_decodes=max_decodes, max_pixels=max_pixels,
                          api_key=api_key or None, allowed_hosts=tuple(h.lower() for h in allowed_hosts),
                          cors_origins=cors_origins, request_timeout_s=request_timeout_s, access_log=access_log,
                          grpc_address=None if grpc_port is None else f"{url_host(host)}:{grpc_port}")
    if not loopback and not api_key:
        click.echo(f"serve: warning: listening on {host}, beyond this machine, without an API key: anyone who "
                   "can reach it can use it (set FOLDSERVE_API_KEY)", err=True)
    os.environ[CONFIG_ENV] = config_to_env(config)
    grpc_line = "" if grpc_port is None else f" and gRPC {url_host(host)}:{grpc_port}"
    click.echo(f"serving {served} on http://{host}:{port}/{grpc_line} "
               f"(dynamic batching: up to {max_batch} images, {max_delay_ms:g} ms)", err=True)
    uvicorn.run("serve.server:create_app_from_env", factory=True, host=host, port=port, workers=workers,
                log_level="warning", timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
                http="serve.connection:DeadlineProtocol")


def missing_grpc_extra() -> str | None:
    """The grpc extra's package that cannot be imported, or None. Only grpc and protobuf themselves: the
    generated message classes are imported by the server's workers, not in this process."""
    import importlib

    for module, package in (("grpc", "grpcio"), ("google.protobuf", "protobuf")):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError:
            return package
    return None


def url_host(host: str) -> str:
    """``host`` as it goes before ":port": an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def cannot_listen(host: str, port: int, option: str = "--port") -> str | None:
    """Why ``host:port`` cannot be bound (an unknown host, a port in use, no permission), or None.

    Checked before the server starts, so the error is one line instead of a "serving on" line
    followed by uvicorn's own report; binding it the way uvicorn will (SO_REUSEADDR)."""
    import errno
    import socket

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as exc:
        return f"unknown host ({getattr(exc, 'strerror', None) or exc})"
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return f"the port is already in use (another server? pick another {option})"
            return exc.strerror or str(exc)
    return None


def is_loopback(host: str) -> bool:
    import ipaddress

    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def main() -> None:
    # Pillow warns about damage it reads past or stops at ("Truncated File Read", "Corrupt EXIF data"),
    # printed with its own source line; each image's line (its reading, or one error) is what a user needs
    warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
    cli(prog_name="serve")


if __name__ == "__main__":
    main()
