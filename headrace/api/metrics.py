"""The API's Prometheus metrics: requests, search latency, and the index and backlog read from Postgres."""

import asyncio
import logging
import time

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from headrace import metrics as shared
from headrace.store import documents, jobs
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
INDEX_DOCUMENTS = Gauge(
    "headrace_index_documents", "Documents in the index, per job and state.", ["namespace", "job", "state"]
)
INDEX_CHUNKS = Gauge("headrace_index_chunks", "Chunks in the index, per job.", ["namespace", "job"])
INDEX_BYTES = Gauge("headrace_index_bytes", "Bytes of the documents ingested, per job.", ["namespace", "job"])


async def exposition(pool: Pool, lock: asyncio.Lock) -> tuple[bytes, str]:
    """The metrics text, with the Postgres-backed gauges read fresh for this scrape.

    `lock` keeps two concurrent scrapes from interleaving their clear-and-set of the gauges.
    """
    async with lock:
        pending, totals = await jobs.pending_tasks(pool), await documents.index_totals(pool)
        for gauge in (shared.TASKS_PENDING, INDEX_DOCUMENTS, INDEX_CHUNKS, INDEX_BYTES):
            gauge.clear()  # jobs that are gone must drop out of the series
        for namespace, job, count in pending:
            shared.TASKS_PENDING.labels(namespace, job).set(count)
        for t in totals:
            INDEX_DOCUMENTS.labels(t.namespace, t.job, "ingested").set(t.ingested)
            INDEX_DOCUMENTS.labels(t.namespace, t.job, "failed").set(t.failed)
            INDEX_CHUNKS.labels(t.namespace, t.job).set(t.chunks)
            INDEX_BYTES.labels(t.namespace, t.job).set(t.bytes)
        return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


# Probes and scrapes come every few seconds: counted, but not logged.
_QUIET_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})


class RequestMetrics:
    """ASGI middleware counting requests by route template (never the raw path) and status, and logging them."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

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
                log.info(
                    "Served request",
                    extra={
                        "method": scope["method"],
                        "path": scope["path"],
                        "status": status,
                        "seconds": round(elapsed, 4),
                    },
                )
