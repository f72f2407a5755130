"""uvicorn's HTTP/1.1 protocol (httptools) with a deadline for receiving each request.

uvicorn times out only idle keep-alive connections, and resets that timer on every byte: a client
that trickles a request (slowloris) holds its connection, and its slot in a graceful shutdown,
forever. ASGI middleware cannot help, since it runs once the headers are in. This protocol gives
every request ``request_timeout_s`` from its first byte to its last, then closes the connection
(answering 408 when nothing was answered yet). At shutdown a request still arriving gets a few more
seconds, not the whole grace period; requests already received finish as before.

It builds on uvicorn's httptools protocol (llhttp, in C), not its h11 one (pure Python): for a small
inference request, parsing HTTP with h11 cost about a fifth of the server's time (README.md, "The
hot path").
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import socket

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger(__name__)

DEFAULT_REQUEST_TIMEOUT_S = 60.0
SHUTDOWN_RECEIVE_S = 3.0
TIMEOUT_BODY = b'{"error": "the request took too long to arrive"}'
TIMEOUT_RESPONSE = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
                    b"content-length: %d\r\n\r\n" % len(TIMEOUT_BODY)) + TIMEOUT_BODY


def configured_timeout() -> float:
    """``request_timeout_s`` of the server's configuration (serve/server.py passes it to workers
    through the environment), or the default."""
    from serve.server import CONFIG_ENV

    try:
        return float(json.loads(os.environ.get(CONFIG_ENV, "{}")).get("request_timeout_s",
                                                                        DEFAULT_REQUEST_TIMEOUT_S))
    except (ValueError, TypeError, AttributeError):
        return DEFAULT_REQUEST_TIMEOUT_S


class DeadlineProtocol(HttpToolsProtocol):
    request_timeout_s: float | None = None  # read from the configuration on first use
    _request_deadline: asyncio.TimerHandle | None = None
    _receiving = False  # between a request's first byte and its last

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]  # as uvicorn's own
        # asyncio turns Nagle's algorithm off for TCP connections, but only when the listening socket
        # says it is TCP; the socket uvicorn hands its --workers processes has lost that (proto 0), and
        # each small response then waits ~40 ms for the client's delayed ACK (20 requests/s at 1 client)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)

    def on_message_begin(self) -> None:  # the parser has seen a request's first byte
        self._receiving = True
        if self._request_deadline is None:
            timeout = self.request_timeout_s
            if timeout is None:
                timeout = type(self).request_timeout_s = configured_timeout()
            self._request_deadline = self.loop.call_later(timeout, self._too_slow)
        super().on_message_begin()

    def on_message_complete(self) -> None:  # ... and its last
        self._receiving = False
        self._disarm()
        super().on_message_complete()

    def _disarm(self) -> None:
        if self._request_deadline is not None:
            self._request_deadline.cancel()
            self._request_deadline = None

    def _too_slow(self) -> None:
        self._request_deadline = None
        if self.transport.is_closing():
            return
        log.warning("closed a connection from %s: its request took over %g s to arrive",
                    "%s:%d" % self.client if self.client else "?", self.request_timeout_s)
        if self.cycle is None or not self.cycle.response_started:
            self.transport.write(TIMEOUT_RESPONSE)
        if self.cycle is not None:
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def shutdown(self) -> None:
        """At shutdown, a request still arriving gets at most SHUTDOWN_RECEIVE_S more seconds: a stalled
        client must not hold the whole graceful shutdown (a request that arrives is answered)."""
        deadline = self._request_deadline
        if deadline is not None and self._receiving:
            remaining = deadline.when() - self.loop.time()
            if remaining > SHUTDOWN_RECEIVE_S:
                deadline.cancel()
                self._request_deadline = self.loop.call_later(SHUTDOWN_RECEIVE_S, self._too_slow)
        super().shutdown()
