"""Running the ingest service under uvicorn: open the pool (waiting out a database that is not up yet)
and the authenticator, refuse a stale schema, serve until SIGTERM, close both."""

import asyncio
import logging

import uvicorn
from fastapi import FastAPI

from headrace import signals
from headrace.api import connections
from headrace.ingest.app import create_app
from headrace.ingest.auth import KubernetesWorkerAuthenticator, WorkerAuthenticator
from headrace.ingest.settings import IngestSettings
from headrace.settings import variables
from headrace.store import migrate
from headrace.store.db import close_pool, create_pool
from headrace.store.outage import ride_out

log = logging.getLogger(__name__)


def server(app: FastAPI, settings: IngestSettings, *, port: int | None = None) -> uvicorn.Server:
    """A uvicorn server of `app` on the settings' address (or `port`). Past the connection cap a request
    is answered 503, which workers ride out; the head and body deadlines close stalled connections.
    Requests under way get the grace after SIGTERM; workers retry whatever is cut off."""
    return connections.bounded_server(
        app,
        host=settings.ingest_host,
        port=settings.ingest_port if port is None else port,
        head_seconds=settings.ingest_header_timeout_seconds,
        max_connections=settings.ingest_max_connections,
        cap_setting=variables(IngestSettings, "ingest_max_connections")[0],
        grace_seconds=settings.shutdown_grace_seconds,
        lifespan="off",  # the pool and the authenticator are opened around the server (`run`)
    )


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
            reset_sessions=False,  # the worker API runs the store's statements only: nothing outlives a call
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
