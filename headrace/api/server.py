"""Running the app under uvicorn, with graceful shutdown on SIGTERM and Ctrl-C."""

import logging

import uvicorn
from starlette.types import ASGIApp

from headrace import signals
from headrace.api import connections
from headrace.api.app import create_app
from headrace.api.settings import ApiSettings
from headrace.settings import variables

log = logging.getLogger(__name__)


def server(app: ASGIApp, settings: ApiSettings, *, port: int | None = None) -> uvicorn.Server:
    """A uvicorn server of `app` on the settings' address (or `port`), its lifespan on (it opens the
    pool and the authenticator): stalled heads and bodies are cut off, connections capped, and open
    requests and event streams get the grace after SIGTERM, then are closed."""
    return connections.bounded_server(
        app,
        host=settings.listen_host,
        port=settings.listen_port if port is None else port,
        head_seconds=settings.header_timeout_seconds,
        max_connections=settings.max_connections,
        cap_setting=variables(ApiSettings, "max_connections")[0],
        grace_seconds=settings.shutdown_grace_seconds,
        lifespan="on",
    )


def serve(settings: ApiSettings) -> bool:
    """Serve until SIGTERM or SIGINT. False when the app failed to start (for instance a stale schema).

    A SIGTERM stop is a clean one: open event streams end (their clients reconnect elsewhere with
    `Last-Event-ID`), requests finish within the grace, and the process exits 0. uvicorn re-raises
    the signal it stopped on once it has drained; that re-raise lands on our handler (`signals.stopping`),
    which only asks the (stopped) server to stop, where the default one would end the process as
    "terminated" (143) after a stop that went well. Ctrl-C stops the same way, then raises
    KeyboardInterrupt (exit 130). A signal before uvicorn takes the signals over is not lost either.
    """
    serving = server(create_app(settings), settings)
    with signals.stopping() as stop:
        stop.then(lambda _signum: setattr(serving, "should_exit", True))
        serving.run()
    if stop.interrupted:
        # Ctrl-C ends the command as an interrupt (exit 130), decided here: uvicorn's own re-raise would
        # land on asyncio.run's SIGINT handler, which turns it into KeyboardInterrupt only when the task
        # has not finished first, so under load the process sometimes exited 0 without a word.
        raise KeyboardInterrupt
    return serving.started
