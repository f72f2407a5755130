"""serve/connection.py: the HTTP/1.1 protocol `serve http` runs under uvicorn."""
from __future__ import annotations

import asyncio
import socket

from uvicorn.config import Config
from uvicorn.server import ServerState

from serve.connection import DeadlineProtocol


async def app(scope, receive, send) -> None:  # never called: no request is sent
    raise AssertionError("no request expected")


def test_connections_have_nagle_off_even_on_a_socket_handed_over_without_its_protocol() -> None:
    # `serve http --workers N`: uvicorn hands each worker the listening socket through fromfd, which
    # leaves its proto 0, so asyncio does not turn Nagle off; every small answer then waited ~40 ms
    # for the client's delayed ACK (measured: 20 requests/s at one client, 300 with Nagle off)
    config = Config(app=app, http=DeadlineProtocol, log_level="warning")
    config.load()

    async def scenario() -> int:
        loop = asyncio.get_running_loop()
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        handed = socket.fromfd(listener.fileno(), socket.AF_INET, socket.SOCK_STREAM)  # proto 0, as a worker's
        listener.close()
        assert handed.proto == 0
        made: asyncio.Future[asyncio.Transport] = loop.create_future()

        class Recording(DeadlineProtocol):
            def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
                super().connection_made(transport)
                made.set_result(transport)

        server = await loop.create_server(lambda: Recording(config, ServerState(), {}, loop), sock=handed)
        _, writer = await asyncio.open_connection(*handed.getsockname()[:2])
        transport = await asyncio.wait_for(made, 10)
        nodelay = transport.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        writer.close()
        transport.close()
        server.close()
        await server.wait_closed()
        return nodelay

    assert asyncio.run(scenario()) != 0
