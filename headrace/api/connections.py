"""The uvicorn server both HTTP services run (the search API and the ingest service), with bounds on
what a client that stalls can hold: its connection (the head deadline here) and its request's body
(`limits.BodyDeadline`), and how many connections are open at once (the cap here, answered as every
other error is: a problem+json 503).

Tenants are callers of both services, and a tenant may run any code: a client that opens connections
and sends nothing, or a header a minute, must not hold sockets and coroutines for good.
"""

import asyncio
import logging
from typing import Literal

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from headrace.api.problems import problem_response

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 2
"""What a 503 past the connection cap tells the client to wait: stalled connections are closed by the
deadlines within seconds, and callers that finish free theirs sooner."""


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


class ConnectionCap(HeadDeadline):
    """The head deadline's protocol, answering a request that arrives while more than `max_connections`
    connections are open (its own among them), or while `max_connections` requests are under way, with a
    problem+json 503 that names the cap and says when to retry, and closing its connection.

    uvicorn's `limit_concurrency` makes the same decision at the same point, but answers plain text, and
    counts the request's own connection against the cap (a cap of N served N - 1)."""

    max_connections = 1000
    cap_setting = "the connection cap"
    """The setting that sets `max_connections`, named in the answer."""

    def on_headers_complete(self) -> None:
        connections, tasks = len(self.connections), len(self.tasks)
        if connections <= self.max_connections and tasks < self.max_connections:
            super().on_headers_complete()
            return
        log.warning(
            "Refused request",
            extra={
                "reason": "connection cap",
                "connections": connections,
                "requests": tasks,
                "cap": self.max_connections,
            },
        )
        served, self.app = self.app, self._over_cap  # uvicorn starts the request with `self.app`, read here
        try:
            super().on_headers_complete()
        finally:
            self.app = served

    async def _over_cap(self, scope: Scope, receive: Receive, send: Send) -> None:
        detail = (
            f"this server is at its cap of {self.max_connections} open connections ({self.cap_setting}); "
            f"retry in {RETRY_AFTER_SECONDS} s"
        )
        headers = {"Retry-After": str(RETRY_AFTER_SECONDS), "Connection": "close"}
        await problem_response(503, detail, instance=scope.get("path"), headers=headers)(scope, receive, send)


def bounded_server(
    app: ASGIApp,
    *,
    host: str,
    port: int,
    head_seconds: float,
    max_connections: int,
    cap_setting: str,
    grace_seconds: float,
    lifespan: Literal["on", "off"],
) -> uvicorn.Server:
    """A uvicorn server of `app` on `host:port`: connections whose head stalls are closed after
    `head_seconds`; past `max_connections` open connections (or requests under way) a request is answered
    a problem+json 503 naming `cap_setting`; after SIGTERM, requests under way get `grace_seconds`."""
    bounds = {"head_seconds": head_seconds, "max_connections": max_connections, "cap_setting": cap_setting}
    protocol = type("ConnectionCap", (ConnectionCap,), bounds)
    config = uvicorn.Config(
        app,
        http=protocol,
        host=host,
        port=port,
        lifespan=lifespan,
        log_config=None,  # keep our own Kubernetes-style log format
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=int(grace_seconds) or None,
    )
    return uvicorn.Server(config)
