"""Liveness, readiness and the stale-schema refusal."""

from collections.abc import Callable

import httpx
import pytest
from asgi_lifespan import LifespanManager

from headrace.api.app import create_app
from headrace.api.settings import ApiSettings
from headrace.store.db import Pool
from headrace.store.migrate import StaleSchema


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
