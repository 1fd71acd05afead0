"""The API's Prometheus metrics: requests and search latency, and a snapshot of Postgres' totals.

The totals (backlog, index, runs, documents, tasks by state) come from `store.metric_totals`, read by a
background task every `metrics_refresh_seconds` into an immutable snapshot. A scrape only serialises
the latest snapshot: scraping costs no query, however often and however many scrapers come.
They are served on their own port (`metrics_port`), apart from the API's clients.
"""

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

from prometheus_client import REGISTRY, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from headrace.metrics import INGESTIONJOB_LABEL
from headrace.store import metric_totals
from headrace.store.db import Pool

log = logging.getLogger(__name__)

REQUESTS = Counter("headrace_api_requests_total", "API requests answered.", ["method", "route", "status"])
REQUEST_SECONDS = Histogram(
    "headrace_api_request_duration_seconds",
    "Time to answer an API request (to the end of the body; event streams last long).",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
SEARCH_SECONDS = Histogram(
    "headrace_search_duration_seconds",
    "Time Postgres took to answer a search.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
SNAPSHOT_ERRORS = Counter(
    "headrace_metrics_snapshot_errors_total", "Refreshes of the Postgres snapshot that failed (the last one stays)."
)

_JOB = ["namespace", INGESTIONJOB_LABEL]


def families(snapshot: metric_totals.Stats | None, *, taken_at: float, seconds: float) -> list[Metric]:
    """The Postgres-backed metric families of one snapshot (empty families before the first one)."""
    pending = GaugeMetricFamily(
        "headrace_tasks_pending",
        "Tasks waiting to be leased, per live job: the backlog the workers' HPA scales on.",
        labels=_JOB,
    )
    tasks = GaugeMetricFamily(
        "headrace_tasks",
        "Tasks of live jobs by state (pending, leased; dead: of the current run).",
        labels=[*_JOB, "state"],
    )
    documents = GaugeMetricFamily(
        "headrace_index_documents",
        "Documents in the index, per job (live or retained) and state.",
        labels=[*_JOB, "state"],
    )
    chunks = GaugeMetricFamily("headrace_index_chunks", "Chunks in the index, per job.", labels=_JOB)
    index_bytes = GaugeMetricFamily("headrace_index_bytes", "Bytes of the documents ingested, per job.", labels=_JOB)
    run_documents = GaugeMetricFamily(
        "headrace_run_documents",
        "Documents the current run of a live job processed, by outcome.",
        labels=[*_JOB, "outcome"],
    )
    runs = CounterMetricFamily(
        "headrace_runs",
        "Finished runs, by outcome (succeeded, failed, superseded, interrupted).",
        labels=[*_JOB, "outcome"],
    )
    started = GaugeMetricFamily(
        "headrace_run_started_timestamp_seconds", "Start of each active (unfinished, not suspended) run.", labels=_JOB
    )
    progressed = GaugeMetricFamily(
        "headrace_run_last_progress_timestamp_seconds",
        "When each active run last finished a task (its start before the first one).",
        labels=_JOB,
    )
    durations = HistogramMetricFamily(
        "headrace_run_duration_seconds", "Duration of finished runs, by outcome.", labels=["outcome"]
    )
    statistics = GaugeMetricFamily(
        "headrace_search_statistics_current",
        "1 when a live job's search statistics cover its last finished run (fast keyword search), else 0.",
        labels=_JOB,
    )
    age = GaugeMetricFamily("headrace_metrics_snapshot_timestamp_seconds", "When the Postgres snapshot was taken.")
    took = GaugeMetricFamily("headrace_metrics_snapshot_duration_seconds", "Time the last snapshot's queries took.")
    if snapshot is not None:
        age.add_metric([], taken_at)
        took.add_metric([], seconds)
        for job in snapshot.jobs:
            key = [job.namespace, job.name]
            documents.add_metric([*key, "ingested"], job.ingested)
            documents.add_metric([*key, "failed"], job.failed)
            chunks.add_metric(key, job.chunks)
            index_bytes.add_metric(key, job.bytes)
            if not job.live:
                continue
            pending.add_metric(key, job.tasks.get("pending", 0))
            statistics.add_metric(key, 1 if job.search_statistics_current else 0)
            for state, count in sorted(job.tasks.items()):
                tasks.add_metric([*key, state], count)
            for outcome in ("added", "updated", "unchanged", "failed"):
                run_documents.add_metric([*key, outcome], job.run_documents.get(outcome, 0))
            for outcome, count in sorted(job.runs.items()):
                runs.add_metric([*key, outcome], count)
            if job.active_since is not None and job.last_progress is not None:
                started.add_metric(key, job.active_since.timestamp())
                progressed.add_metric(key, job.last_progress.timestamp())
        spans = snapshot.run_durations
        for outcome, cumulative in sorted(spans.buckets.items()):
            bounds = [str(b) for b in metric_totals.RUN_DURATION_BUCKETS]
            buckets = [*zip(bounds, cumulative, strict=True), ("+Inf", spans.count[outcome])]
            durations.add_metric([outcome], buckets, spans.sum[outcome])
    return [
        pending,
        tasks,
        documents,
        chunks,
        index_bytes,
        run_documents,
        runs,
        started,
        progressed,
        statistics,
        durations,
        age,
        took,
    ]


class PostgresSnapshot(Collector):
    """The latest families read from Postgres. `collect` hands out the current list, which `refresh`
    replaces whole: a scrape (on the metrics server's thread) never sees half a refresh."""

    def __init__(self) -> None:
        self._families: list[Metric] = families(None, taken_at=0.0, seconds=0.0)

    def collect(self) -> Iterable[Metric]:
        return list(self._families)

    def describe(self) -> Iterable[Metric]:
        return families(None, taken_at=0.0, seconds=0.0)

    async def refresh(self, pool: Pool) -> None:
        started = time.perf_counter()
        snapshot = await metric_totals.read(pool)
        self._families = families(snapshot, taken_at=time.time(), seconds=time.perf_counter() - started)


SNAPSHOT = PostgresSnapshot()
REGISTRY.register(SNAPSHOT)


async def refresh_forever(pool: Pool, every: float) -> None:
    """Refresh the snapshot every `every` seconds until cancelled; a failed refresh keeps the last one."""
    while True:
        try:
            await SNAPSHOT.refresh(pool)
        except asyncio.CancelledError:
            raise
        except Exception:
            SNAPSHOT_ERRORS.inc()
            log.warning("Failed to refresh the metrics snapshot", exc_info=True)
        await asyncio.sleep(every)


@asynccontextmanager
async def serving(pool: Pool, *, host: str, port: int | None, refresh_seconds: float) -> AsyncIterator[int | None]:
    """Serve the registry on its own port (None: not at all) and keep the snapshot fresh meanwhile.

    Yields the port actually bound (port 0 picks a free one).
    """
    if port is None:
        yield None
        return
    server, thread = start_http_server(port, addr=host)
    refresher = asyncio.create_task(refresh_forever(pool, refresh_seconds))
    log.info("Serving metrics", extra={"host": host, "port": server.server_port})
    try:
        yield int(server.server_port)
    finally:
        refresher.cancel()
        await asyncio.gather(refresher, return_exceptions=True)
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# Probes and scrapes come every few seconds: counted, but not logged.
_QUIET_ROUTES = frozenset({"/healthz", "/livez", "/readyz"})


class RequestMetrics:
    """ASGI middleware counting requests by route template (never the raw path) and status, and logging them
    (with `quiet_success`, a request answered below 400 at DEBUG only: the worker API's callers are
    programs making many requests a second, whose failures are the news)."""

    def __init__(self, app: ASGIApp, *, quiet_success: bool = False) -> None:
        self.app = app
        self.quiet_success = quiet_success

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            elapsed = time.perf_counter() - started
            REQUESTS.labels(scope["method"], template, str(status)).inc()
            REQUEST_SECONDS.labels(scope["method"], template).observe(elapsed)
            if template not in _QUIET_ROUTES:
                log.log(
                    logging.DEBUG if self.quiet_success and status < 400 else logging.INFO,
                    "Served request",
                    extra={
                        "method": scope["method"],
                        "path": scope["path"],
                        "status": status,
                        "seconds": round(elapsed, 4),
                    },
                )
