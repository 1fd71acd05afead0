"""Running the ingest service under uvicorn: open the pool (waiting out a database that is not up yet)
and the authenticator, refuse a stale schema, serve until SIGTERM, close both."""

import asyncio
import logging

import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from headrace import signals
from headrace.ingest.app import create_app
from headrace.ingest.auth import KubernetesWorkerAuthenticator, WorkerAuthenticator
from headrace.ingest.settings import IngestSettings
from headrace.store import migrate
from headrace.store.db import close_pool, create_pool
from headrace.store.outage import ride_out

log = logging.getLogger(__name__)


class _HeadDeadline(HttpToolsProtocol):
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


def server(app: FastAPI, settings: IngestSettings, *, port: int | None = None) -> uvicorn.Server:
    """A uvicorn server of `app` on the settings' address (or `port`)."""
    protocol = type("HeadDeadline", (_HeadDeadline,), {"head_seconds": settings.ingest_header_timeout_seconds})
    config = uvicorn.Config(
        app,
        http=protocol,
        # Past this many open connections (or requests under way) a request is answered 503, which
        # workers ride out; the head and body deadlines close stalled connections.
        limit_concurrency=settings.ingest_max_connections,
        host=settings.ingest_host,
        port=settings.ingest_port if port is None else port,
        lifespan="off",  # the pool and the authenticator are opened around the server (`run`)
        log_config=None,  # keep our own Kubernetes-style log format
        access_log=False,
        server_header=False,
        # Requests under way get this long after SIGTERM; workers retry whatever is cut off.
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds) or None,
    )
    return uvicorn.Server(config)


async def run(settings: IngestSettings, authenticator: WorkerAuthenticator) -> bool:
    """Serve until SIGTERM or SIGINT. False when the service failed to start. Closes `authenticator`.

    Stops as `headrace api` does (api/server.py): a SIGTERM stop that drained is a clean one (exit 0);
    Ctrl-C stops the same way, then raises KeyboardInterrupt (exit 130)."""
    try:
        pool = await ride_out(
            create_pool,
            settings.database_url.get_secret_value(),
            max_size=settings.database_pool_size,
            acquire_timeout=settings.database_acquire_timeout_seconds,
        )
        try:
            await migrate.ensure_current(pool)  # raises StaleSchema: never serve a schema we don't know
            serving = server(create_app(settings, pool, authenticator), settings)
            # uvicorn re-raises the signal it stopped on once it has drained; it lands here, on a handler
            # that only asks the (stopped) server to stop, so a clean SIGTERM stop exits 0.
            with signals.stopping() as stop:
                stop.then(lambda _signum: setattr(serving, "should_exit", True))
                log.info("Started ingest service", extra={"port": settings.ingest_port})
                await serving.serve()
            if stop.interrupted:
                raise KeyboardInterrupt
            return bool(serving.started)
        finally:
            await close_pool(pool)
            log.info("Stopped ingest service")
    finally:
        await authenticator.aclose()


def serve(settings: IngestSettings) -> bool:
    """`run` with the Kubernetes authenticator (TokenReview for the `ingest_audience`)."""
    return asyncio.run(run(settings, KubernetesWorkerAuthenticator.from_settings(settings)))
