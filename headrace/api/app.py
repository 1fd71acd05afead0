"""The FastAPI application: `create_app(settings)` wires routers, limits, errors and the lifespan."""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI

from headrace.api import auth, problems
from headrace.api import metrics as api_metrics
from headrace.api.deps import Services, StreamSlots, reject_unknown_query
from headrace.api.limits import BodyDeadline, RateLimiter, SizeLimits
from headrace.api.metrics import RequestMetrics
from headrace.api.rerank import Reranker
from headrace.api.routes import events, health, jobs, passages, search
from headrace.api.settings import ApiSettings
from headrace.store import migrate
from headrace.store.db import close_pool, create_pool

log = logging.getLogger(__name__)

DESCRIPTION = """\
Status, live progress and full-text search of Headrace IngestionJobs.

Authenticate with `Authorization: Bearer <token>`. In the default `kubernetes` mode the token is any
token of the cluster (a ServiceAccount's, for instance); a namespace is readable when its holder may
`get` `ingestionjobs.headrace.io` there. Errors are `application/problem+json` (RFC 9457).
"""


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: ApiSettings = app.state.settings
    pool = await create_pool(
        settings.database_url.get_secret_value(),
        max_size=settings.database_pool_size,
        acquire_timeout=settings.database_acquire_timeout_seconds,
    )
    try:
        await migrate.ensure_current(pool)  # raises StaleSchema: never serve a schema we don't know
        authenticator = auth.build(settings)
        reranker = Reranker(settings) if settings.rerank_url else None
        metrics_server = api_metrics.serving(
            pool,
            host=settings.metrics_host or settings.listen_host,
            port=settings.metrics_port,
            refresh_seconds=settings.metrics_refresh_seconds,
        )
        try:
            app.state.services = Services(
                settings=settings,
                pool=pool,
                auth=authenticator,
                limiter=RateLimiter(settings.rate_limit_per_second, settings.rate_limit_burst),
                streams=StreamSlots(
                    total=settings.events_max_streams, per_caller=settings.events_max_streams_per_caller
                ),
                reranker=reranker,
            )
            async with metrics_server as metrics_port:
                app.state.metrics_port = metrics_port
                log.info("Started API", extra={"auth": settings.auth_mode})
                yield
        finally:
            await authenticator.aclose()
            if reranker is not None:
                await reranker.aclose()
    finally:
        await close_pool(pool)
        log.info("Stopped API")


def _problem_openapi(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI schema, with error bodies declared as application/problem+json."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = FastAPI.openapi(app)
    problem = {"content": {problems.PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}}
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            # The size limits, the body deadline and the crash handler answer for every route.
            answers = operation.setdefault("responses", {})
            answers.setdefault("414", {"description": "URI Too Long", **problem})
            answers.setdefault("500", {"description": "Internal Server Error", **problem})
            if "requestBody" in operation:
                answers.setdefault("408", {"description": "Request Timeout", **problem})
                answers.setdefault("413", {"description": "Content Too Large", **problem})
            for status, response in answers.items():
                content = response.get("content", {})
                if status[0] in "45" and "application/json" in content:
                    content[problems.PROBLEM_JSON] = content.pop("application/json")
    return schema


def create_app(settings: ApiSettings) -> FastAPI:
    """A new app; nothing is opened until its lifespan starts."""
    app = FastAPI(
        title="Headrace API",
        version="v1",
        description=DESCRIPTION,
        lifespan=_lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.settings = settings
    problems.install(app)
    # Probes are answered whatever they append; the API proper refuses unknown parameters.
    app.include_router(health.router)
    for router in (jobs.router, events.router, search.router, passages.router):
        app.include_router(router, dependencies=[Depends(reject_unknown_query)])
    app.add_middleware(SizeLimits, max_body=settings.max_body_bytes, max_query=settings.max_query_chars)
    app.add_middleware(BodyDeadline, seconds=settings.body_timeout_seconds)
    app.add_middleware(RequestMetrics)
    app.openapi = lambda: _problem_openapi(app)  # type: ignore[method-assign]
    return app
