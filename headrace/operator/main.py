"""Starting the operator: a registry bound to the configuration, and kopf's run loop, alone or as the elected
leader of several replicas (`headrace.operator.leader`)."""

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable
from urllib.parse import urlsplit

import kopf
from aiohttp import web

from headrace.operator import metrics
from headrace.operator.handlers import register
from headrace.operator.kube import credentials
from headrace.operator.leader import ElectionSettings, Elector
from headrace.operator.metrics import LEADER
from headrace.operator.settings import OperatorSettings

log = logging.getLogger(__name__)

LOST_LEASE_EXIT = 1
"""Exit status of a leader that lost its Lease: the kubelet restarts it, and it stands by."""


def build_registry(config: OperatorSettings) -> kopf.OperatorRegistry:
    """A fresh registry holding Headrace's handlers, bound to this configuration."""
    registry = kopf.OperatorRegistry()
    register(registry, config)
    return registry


def run(config: OperatorSettings, election: ElectionSettings | None = None) -> None:
    """Run the operator until it is stopped: cluster-wide when no namespaces are given; with leader election
    on (`HEADRACE_LEADER_ELECTION_ENABLED`), only while this replica holds the Lease."""
    election = election if election is not None else ElectionSettings()
    if not election.enabled:
        asyncio.run(_kopf(config, liveness=config.liveness))
        return
    raise SystemExit(asyncio.run(_elected(config, election)))


async def _kopf(
    config: OperatorSettings,
    *,
    liveness: str | None,
    stop: asyncio.Event | None = None,
    ready: asyncio.Event | None = None,
) -> None:
    # kopf's peering is off (standalone): it would pause two replicas of equal priority (leader.py says why).
    await kopf.operator(
        registry=build_registry(config),
        clusterwide=not config.namespaces,
        namespaces=list(config.namespaces),
        standalone=True,
        liveness_endpoint=liveness,
        stop_flag=stop,
        ready_flag=ready,
    )


async def _elected(config: OperatorSettings, election: ElectionSettings) -> int:
    """Stand by until this replica holds the Lease, then run kopf while renewing it: the exit status."""
    elector = Elector(election, election.lease_namespace(), _login)
    operator: asyncio.Task[None] | None = None
    ready = asyncio.Event()
    stop = asyncio.Event()
    # The metrics port is served from the start, so a standby reports headrace_operator_leader 0 too; kopf's
    # startup handler then must not serve it a second time.
    stop_metrics = metrics.serve(config.metrics_port) if config.metrics_port is not None else None
    leading_config = config.model_copy(update={"metrics_port": None})

    def healthy() -> bool:
        # A standby is alive and Ready (it can take over at any moment); a leader once kopf has started.
        return operator is None or (ready.is_set() and not operator.done())

    stopping = threading.Event()
    keeping: asyncio.Task[bool] | None = None
    async with _probes(config.liveness, healthy):
        try:
            await elector.acquire()
            operator = asyncio.create_task(_kopf(leading_config, liveness=None, stop=stop, ready=ready))
            keeping = asyncio.create_task(asyncio.to_thread(elector.hold, stopping))
            await asyncio.wait({operator, keeping}, return_when=asyncio.FIRST_COMPLETED)
            if keeping.done():
                stop.set()  # lost: stop handling now, before a standby may take over
                await operator
                return LOST_LEASE_EXIT
            stopping.set()
            await keeping
            try:
                await operator  # raises what kopf raised
            finally:
                await elector.release()  # stopped or failed: the standby need not wait out the Lease
            return 0
        finally:
            stopping.set()
            if operator is not None and not operator.done():
                stop.set()
                with contextlib.suppress(BaseException):
                    await operator
            if keeping is not None:
                with contextlib.suppress(BaseException):
                    await keeping
            LEADER.labels(elector.identity).set(0)
            if stop_metrics is not None:
                stop_metrics()


def _login() -> kopf.ConnectionInfo:
    """The same credentials kopf logs in with (`kube.credentials`), for the Lease's own client."""
    logger = logging.getLogger("headrace.operator.login")
    connection = credentials(settings=kopf.OperatorSettings(), logger=logger)
    if connection is None:
        raise kopf.LoginError("no Kubernetes credentials: neither a service account nor a kubeconfig")
    return connection


@contextlib.asynccontextmanager
async def _probes(url: str | None, healthy: Callable[[], bool]) -> AsyncIterator[None]:
    """Serve the liveness/readiness endpoint at `url` (what `--liveness` names) for the whole process, standby
    or leader: 200 while `healthy()`, 503 otherwise.

    With aiohttp's server, as kopf serves `--liveness` without election: in this event loop, so a hung
    loop fails the probe here too (docs/architecture.md, "One Kubernetes client", says why not uvicorn)."""
    if url is None:
        yield
        return
    parts = urlsplit(url)

    async def probe(_: web.Request) -> web.Response:
        return web.json_response({}, status=200 if healthy() else 503)

    app = web.Application()
    app.router.add_get(parts.path or "/", probe)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, parts.hostname, parts.port).start()
    try:
        yield
    finally:
        await runner.cleanup()
