"""Running the app under uvicorn, with graceful shutdown on SIGTERM and Ctrl-C."""

import logging

import uvicorn

from headrace import signals
from headrace.api.app import create_app
from headrace.api.settings import ApiSettings

log = logging.getLogger(__name__)


def serve(settings: ApiSettings) -> bool:
    """Serve until SIGTERM or SIGINT. False when the app failed to start (for instance a stale schema).

    A SIGTERM stop is a clean one: open event streams end (their clients reconnect elsewhere with
    `Last-Event-ID`), requests finish within the grace, and the process exits 0. uvicorn re-raises
    the signal it stopped on once it has drained; that re-raise lands on our handler (`signals.stopping`),
    which only asks the (stopped) server to stop, where the default one would end the process as
    "terminated" (143) after a stop that went well. Ctrl-C stops the same way, then raises
    KeyboardInterrupt (exit 130). A signal before uvicorn takes the signals over is not lost either.
    """
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
    with signals.stopping() as stop:
        stop.then(lambda _signum: setattr(server, "should_exit", True))
        server.run()
    if stop.interrupted:
        # Ctrl-C ends the command as an interrupt (exit 130), decided here: uvicorn's own re-raise would
        # land on asyncio.run's SIGINT handler, which turns it into KeyboardInterrupt only when the task
        # has not finished first, so under load the process sometimes exited 0 without a word.
        raise KeyboardInterrupt
    return server.started
