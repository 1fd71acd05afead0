"""Running the ingest service under uvicorn: open the pool (waiting out a database that is not up yet)
and the authenticator, refuse a stale schema, serve until SIGTERM, close both."""

import asyncio
import logging
import signal

import uvicorn
from fastapi import FastAPI

from headrace.ingest.app import create_app
from headrace.ingest.auth import KubernetesWorkerAuthenticator, WorkerAuthenticator
from headrace.ingest.settings import IngestSettings
from headrace.store import migrate
from headrace.store.db import close_pool, create_pool
from headrace.store.outage import ride_out

log = logging.getLogger(__name__)


def server(app: FastAPI, settings: IngestSettings, *, port: int | None = None) -> uvicorn.Server:
    """A uvicorn server of `app` on the settings' address (or `port`)."""
    config = uvicorn.Config(
        app,
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
    """Serve until SIGTERM or SIGINT. False when the service failed to start. Closes `authenticator`."""
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
            # that only asks the (stopped) server to stop, so a clean SIGTERM stop exits 0 (see api/server.py).
            previous = signal.signal(signal.SIGTERM, lambda signum, frame: setattr(serving, "should_exit", True))
            try:
                log.info("Started ingest service", extra={"port": settings.ingest_port})
                await serving.serve()
            finally:
                signal.signal(signal.SIGTERM, previous)
            return bool(serving.started)
        finally:
            await close_pool(pool)
            log.info("Stopped ingest service")
    finally:
        await authenticator.aclose()


def serve(settings: IngestSettings) -> bool:
    """`run` with the Kubernetes authenticator (TokenReview for the `ingest_audience`)."""
    return asyncio.run(run(settings, KubernetesWorkerAuthenticator.from_settings(settings)))
