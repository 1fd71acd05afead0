"""Liveness, readiness, the stale-schema refusal, and Prometheus metrics."""

from collections.abc import Callable

import httpx
import pytest
from asgi_lifespan import LifespanManager

from headrace.api.app import create_app
from headrace.api.settings import ApiSettings
from headrace.store.db import Pool
from headrace.store.jobs import JobRecord
from headrace.store.migrate import StaleSchema
from tests.api.conftest import bearer, serve


async def test_healthz_and_readyz(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok", "checks": {}}
    assert (await client.get("/healthz?verbose=1")).status_code == 200
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"postgres": "ok", "vectors": "ok"}


async def test_readyz_is_503_when_postgres_is_gone(settings: Callable[..., ApiSettings]) -> None:
    app = create_app(settings())
    async with (
        LifespanManager(app) as manager,
        httpx.AsyncClient(transport=httpx.ASGITransport(manager.app), base_url="http://headrace") as client,
    ):
        await app.state.services.pool.close()
        response = await client.get("/readyz")
        assert (await client.get("/healthz")).status_code == 200
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["detail"].startswith("postgres: ")


async def test_refuses_to_start_on_a_stale_schema(settings: Callable[..., ApiSettings], pool: Pool) -> None:
    await pool.execute("INSERT INTO headrace.schema_migrations (version, name) VALUES (9999, 'from_the_future')")
    with pytest.raises(StaleSchema, match="9999"):
        async with LifespanManager(create_app(settings())):
            pass


async def test_metrics_expose_backlog_index_and_requests(
    settings: Callable[..., ApiSettings], seeded: dict[str, JobRecord], pool: Pool
) -> None:
    # A pending task for team-b: the backlog gauge must show it.
    await pool.execute(
        "INSERT INTO headrace.tasks (job_uid, run, kind, dedupe_key) VALUES ($1, 1, 'ingest', 'extra')",
        seeded["team-b"].uid,
    )
    async with serve(settings()) as client:
        await client.get("/v1/namespaces/team-a/ingestionjobs/docs", headers=bearer("alice-token"))
        await client.get("/v1/search?q=zephyr", headers=bearer("alice-token"))
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'headrace_tasks_pending{job="docs",namespace="team-a"} 0.0' in text
    assert 'headrace_tasks_pending{job="docs",namespace="team-b"} 1.0' in text
    assert 'headrace_index_documents{job="docs",namespace="team-a",state="ingested"} 2.0' in text
    assert 'headrace_index_documents{job="docs",namespace="team-a",state="failed"} 1.0' in text
    assert 'headrace_index_chunks{job="docs",namespace="team-b"} 1.0' in text
    assert 'headrace_index_bytes{job="docs",namespace="team-b"} 66.0' in text
    route = 'route="/v1/namespaces/{ns}/ingestionjobs/{name}"'
    assert f'headrace_api_requests_total{{method="GET",{route},status="200"}}' in text
    assert "headrace_search_duration_seconds_count" in text
