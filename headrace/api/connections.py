"""The uvicorn server both HTTP services run (the search API and the ingest service), with bounds on
what a client that stalls can hold: its connection (the head deadline here) and its request's body
(`limits.BodyDeadline`), and how many connections are open at once.

Tenants are callers of both services, and a tenant may run any code: a client that opens connections
and sends nothing, or a header a minute, must not hold sockets and coroutines for good.
"""

import asyncio
from typing import Literal

import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class HeadDeadline(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol (httptools), closing a connection whose request line and headers have
    not arrived `head_seconds` after it opened or after its previous answer.

    uvicorn times out a connection only while it idles after an answer, and any byte stops that timer, so
    a client that opens connections and sends nothing, or a header a minute, would hold them for good.
    Once the headers are in, `limits.BodyDeadline` bounds the body."""

    head_seconds = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_timer: asyncio.TimerHandle | None = self.loop.call_later(self.head_seconds, self._head_late)

    def on_headers_complete(self) -> None:
        self._stop_head_timer()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete):
            self._stop_head_timer()  # no request under way (a pipelined one has its headers in already)
            self._head_timer = self.loop.call_later(self.head_seconds, self._head_late)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_late(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.close()


def bounded_server(
    app: ASGIApp,
    *,
    host: str,
    port: int,
    head_seconds: float,
    max_connections: int,
    grace_seconds: float,
    lifespan: Literal["on", "off"],
) -> uvicorn.Server:
    """A uvicorn server of `app` on `host:port`: connections whose head stalls are closed after
    `head_seconds`; past `max_connections` open connections (or requests under way) a request is answered
    503; after SIGTERM, requests under way get `grace_seconds`."""
    protocol = type("HeadDeadline", (HeadDeadline,), {"head_seconds": head_seconds})
    config = uvicorn.Config(
        app,
        http=protocol,
        limit_concurrency=max_connections,
        host=host,
        port=port,
        lifespan=lifespan,
        log_config=None,  # keep our own Kubernetes-style log format
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=int(grace_seconds) or None,
    )
    return uvicorn.Server(config)
