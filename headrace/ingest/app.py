"""The ingest service's application: `create_app(settings, pool, authenticator)` wires the worker API's
routes, health, metrics, limits and errors. The caller (server.py, or a test) opens and closes the pool
and the authenticator."""

import asyncio
import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from headrace.api import problems
from headrace.api.limits import BodyDeadline, RateLimiter, SizeLimits
from headrace.api.metrics import RequestMetrics
from headrace.api.problems import ProblemError, problem_response
from headrace.ingest import routes
from headrace.ingest.auth import WorkerAuthenticator
from headrace.ingest.deps import JobStores, Services
from headrace.ingest.settings import IngestSettings
from headrace.store import vectors
from headrace.store.db import Pool
from headrace.store.errors import MAYBE_CONNECTION_LOST
from headrace.store.outage import is_connection_error
from headrace.worker.store import ForeignId, RunSuperseded

log = logging.getLogger(__name__)

DESCRIPTION = """\
The worker API: what Headrace's worker pods call instead of opening the database. Internal to a
Headrace release: its callers are worker pods, authenticated by their projected ServiceAccount token
(audience `headrace-ingest`), each allowed exactly the IngestionJob whose worker Job owns the pod.
Errors are `application/problem+json` (RFC 9457). See docs/worker-api.md.
"""


async def _on_foreign(request: Request, exc: Exception) -> JSONResponse:
    log.warning("Refused foreign id", extra={"path": request.url.path, "reason": str(exc)})
    return problem_response(404, str(exc), instance=request.url.path)


async def _on_superseded(request: Request, exc: Exception) -> JSONResponse:
    return problem_response(409, str(exc), instance=request.url.path)


async def _on_database_error(request: Request, exc: Exception) -> Response:
    """A lost database connection is a 503 the worker rides out; any other database error is a crash."""
    if not is_connection_error(exc):
        return await problems._on_crash(request, exc)
    log.warning("Lost database connection", extra={"path": request.url.path, "error": repr(exc)})
    return problem_response(
        503, "the database is unreachable; retry shortly", instance=request.url.path, headers={"Retry-After": "1"}
    )


def create_app(settings: IngestSettings, pool: Pool, authenticator: WorkerAuthenticator) -> FastAPI:
    """The app, serving with `pool` and `authenticator` (both the caller's to close)."""
    app = FastAPI(
        title="Headrace worker API",
        version="v1",
        description=DESCRIPTION,
        docs_url=None,
        redoc_url=None,
    )
    app.state.services = Services(
        settings=settings,
        pool=pool,
        auth=authenticator,
        stores=JobStores(pool),
        limiter=RateLimiter(settings.ingest_rate_limit_per_second, settings.ingest_rate_limit_burst),
    )
    problems.install(app)
    app.add_exception_handler(ForeignId, _on_foreign)
    app.add_exception_handler(RunSuperseded, _on_superseded)
    for error in MAYBE_CONNECTION_LOST:  # answered 503 when `is_connection_error` finds it is
        app.add_exception_handler(error, _on_database_error)

    @app.get("/livez", tags=["health"], summary="Liveness: the process answers")
    async def livez() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], summary="Readiness: Postgres answers", responses=problems.responses(503))
    async def readyz() -> dict[str, str]:
        try:
            async with asyncio.timeout(2):
                await vectors.available(pool)
        except Exception as exc:  # any failure of the ping means not ready
            detail = f"postgres: {type(exc).__name__}: {exc}"[:300]
            raise ProblemError(503, detail, headers={"Retry-After": "5"}) from exc
        return {"status": "ok"}

    @app.get("/metrics", tags=["health"], summary="Prometheus metrics of this process", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    app.include_router(routes.router)
    app.add_middleware(SizeLimits, max_body=settings.ingest_max_body_bytes, max_query=4096)
    app.add_middleware(BodyDeadline, seconds=settings.ingest_body_timeout_seconds)
    app.add_middleware(RequestMetrics, quiet_success=True)
    return app
