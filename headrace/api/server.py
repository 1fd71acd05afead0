"""Running the app under uvicorn, with graceful shutdown on SIGTERM and Ctrl-C."""

import logging

import uvicorn

from headrace.api.app import create_app
from headrace.api.settings import ApiSettings

log = logging.getLogger(__name__)


def serve(settings: ApiSettings) -> bool:
    """Serve until SIGTERM or SIGINT. False when the app failed to start (for instance a stale schema)."""
    config = uvicorn.Config(
        create_app(settings),
        host=settings.listen_host,
        port=settings.listen_port,
        lifespan="on",
        log_config=None,  # keep our own Kubernetes-style log format
        access_log=False,
        server_header=False,
        # Open requests and event streams get this long after SIGTERM; then they are closed.
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds) or None,
    )
    server = uvicorn.Server(config)
    server.run()
    return server.started
