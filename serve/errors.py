"""Requests the server refuses, each defined once for every protocol it speaks.

A refusal carries one line for the client and its status in each protocol: HTTP answers
``http_status`` with ``{"error": message}``; gRPC ends the call with the status code named
``grpc_code`` (a ``grpc.StatusCode`` name) and the same message. The data plane and the protocol
layer raise these; the HTTP and gRPC adapters only translate them. Nothing heavy is imported, so
every layer (and the base install, without the http or grpc extra) can raise them.
"""
from __future__ import annotations

import hmac


class RequestError(Exception):
    """A request the server refuses; ``str(error)`` is the one line the client gets."""

    http_status = 400
    grpc_code = "INVALID_ARGUMENT"


class ModelNotFound(RequestError):
    http_status = 404
    grpc_code = "NOT_FOUND"


class Overloaded(RequestError):
    """The inference queue is full: answered at once instead of growing without bound."""

    http_status = 503
    grpc_code = "RESOURCE_EXHAUSTED"  # gRPC's code for a server out of a resource (here: queue slots)


class ShuttingDown(RequestError):
    """The server is stopping, or the model a request found was unloaded: requests in flight are
    answered, new ones refused."""

    http_status = 503
    grpc_code = "UNAVAILABLE"  # gRPC clients retry UNAVAILABLE elsewhere; RESOURCE_EXHAUSTED would say "later"

    def __init__(self, message: str = "server is shutting down: not taking new requests") -> None:
        super().__init__(message)


class ModelLoadFailed(RequestError):
    """A repository model that cannot be loaded (what was served under its name goes on being served)."""

    http_status = 400  # Triton's answer to a failed load
    grpc_code = "FAILED_PRECONDITION"  # the request is well formed; the repository's files are not servable


class ModelControlOff(RequestError):
    """Loading or unloading a model on a server not started to allow it."""

    http_status = 403
    grpc_code = "PERMISSION_DENIED"

    def __init__(self, message: str = "loading and unloading models is not enabled: start the server with "
                                      "`serve http --repository DIR --allow-model-control`") -> None:
        super().__init__(message)


class Unauthenticated(RequestError):
    http_status = 401
    grpc_code = "UNAUTHENTICATED"


def require_api_key(api_key: str, authorization: str) -> None:
    """Raise Unauthenticated unless ``authorization`` (an HTTP header or gRPC metadata value) is
    ``Bearer <api_key>``; compared in constant time."""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
        raise Unauthenticated("missing or wrong API key: send the header 'Authorization: Bearer <key>'")
