"""A tenant trying to wear the API down: token floods, cache eviction, stream hoarding, a saturated pool.

Each test counts what the attack costs (TokenReviews sent, streams held), not only the status codes.
"""

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import kmock
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from headrace.api.app import create_app
from headrace.api.auth import KubernetesAuthenticator, Unauthenticated
from headrace.api.settings import ApiSettings
from headrace.kubeapi import KubeApi
from headrace.store import jobs, runs
from headrace.store.db import Pool
from headrace.store.jobs import JobRecord
from tests.api.conftest import API_SA_TOKEN, Cluster, bearer, reviews
from tests.conftest import volume_spec

pytestmark = pytest.mark.postgres

ALICE = bearer("alice-token")
EVENTS = "/v1/namespaces/team-a/ingestionjobs/docs/events"


@asynccontextmanager
async def running(settings: ApiSettings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = create_app(settings)
    async with (
        LifespanManager(app) as manager,
        httpx.AsyncClient(transport=httpx.ASGITransport(manager.app), base_url="http://headrace") as client,
    ):
        yield app, client


async def until(condition: Callable[[], bool]) -> None:
    """Wait for a counter to reach a state (bounded by the test timeout)."""
    while not condition():  # noqa: ASYNC110 - counters, not events, are what the app exposes
        await asyncio.sleep(0.01)


@pytest.fixture
async def running_job(pool: Pool) -> JobRecord:
    """team-a/docs with a run started and no worker: its event streams stay open."""
    job = await jobs.register_job(
        pool, uid=uuid.uuid4(), namespace="team-a", name="docs", generation=1, spec=volume_spec(".")
    )
    await runs.start_run(pool, job, reason="test")
    return job


async def test_random_tokens_cost_at_most_the_address_burst_in_token_reviews(
    settings: Callable[..., ApiSettings], kmock: kmock.RawHandler, cluster: Cluster
) -> None:
    async with running(settings(rate_limit_burst=5, rate_limit_per_second=0.01)) as (_, client):
        answers = [await client.get(EVENTS, headers=bearer(f"random-{i}")) for i in range(40)]
    assert [a.status_code for a in answers[:5]] == [401] * 5
    assert {a.status_code for a in answers[5:]} == {429}
    assert all("retry-after" in a.headers for a in answers[5:])
    assert len(reviews(kmock, "tokenreviews")) == 5


async def test_a_rejected_token_retried_costs_one_review(
    settings: Callable[..., ApiSettings], kmock: kmock.RawHandler, cluster: Cluster
) -> None:
    async with running(settings(rate_limit_per_second=0)) as (_, client):
        for _ in range(10):
            assert (await client.get(EVENTS, headers=bearer("forged"))).status_code == 401
    assert len(reviews(kmock, "tokenreviews")) == 1


async def test_random_tokens_do_not_evict_a_valid_identity(
    kmock: kmock.RawHandler, cluster: Cluster, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(API_SA_TOKEN)
    async with httpx.AsyncClient(base_url=str(kmock.url)) as http:
        auth = KubernetesAuthenticator(KubeApi(http, token_file=token_file), cache_seconds=600, cache_size=8)
        assert (await auth.authenticate("alice-token")).name == "alice"
        for i in range(50):  # six times the cache's size
            with pytest.raises(Unauthenticated):
                await auth.authenticate(f"random-{i}")
        assert (await auth.authenticate("alice-token")).name == "alice"
    assert len(reviews(kmock, "tokenreviews")) == 1 + 50


async def test_one_caller_cannot_hold_more_than_its_share_of_streams(
    settings: Callable[..., ApiSettings], cluster: Cluster, running_job: JobRecord
) -> None:
    async with running(settings(events_max_streams_per_caller=3, rate_limit_per_second=0)) as (app, client):
        streams = app.state.services.streams
        held = [asyncio.create_task(client.get(EVENTS, headers=ALICE)) for _ in range(3)]
        await until(lambda: streams.held_by("alice") == 3)
        refused = await client.get(EVENTS, headers=ALICE)
        assert refused.status_code == 429
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.headers["retry-after"]
        assert streams.held_by("alice") == 3
        # Another caller is not starved by alice's streams.
        cluster.grants["bob"].add("team-a")
        other = asyncio.create_task(client.get(EVENTS, headers=bearer("bob-token")))
        await until(lambda: streams.held_by("bob") == 1)
        for task in [*held, other]:
            task.cancel()
        await asyncio.gather(*held, other, return_exceptions=True)
        await until(lambda: streams.open == 0)


async def test_a_burst_of_streams_never_passes_the_global_cap(
    settings: Callable[..., ApiSettings], cluster: Cluster, running_job: JobRecord
) -> None:
    async with running(settings(events_max_streams=3, rate_limit_per_second=0)) as (app, client):
        streams = app.state.services.streams
        burst = [asyncio.create_task(client.get(EVENTS, headers=ALICE)) for _ in range(12)]
        await until(lambda: sum(t.done() for t in burst) == 9)
        assert streams.open == 3
        refused = [t.result() for t in burst if t.done()]
        assert {r.status_code for r in refused} == {503}
        for task in burst:
            task.cancel()
        await asyncio.gather(*burst, return_exceptions=True)
        await until(lambda: streams.open == 0)


async def test_a_stream_ends_when_its_job_is_suspended(
    settings: Callable[..., ApiSettings], cluster: Cluster, pool: Pool, running_job: JobRecord
) -> None:
    async with running(settings()) as (app, client):
        stream = asyncio.create_task(client.get(EVENTS, headers=ALICE))
        await until(lambda: app.state.services.streams.open == 1)
        await jobs.register_job(
            pool,
            uid=running_job.uid,
            namespace="team-a",
            name="docs",
            generation=2,
            spec=volume_spec(".", suspend=True),
        )
        response = await asyncio.wait_for(stream, timeout=30)
    assert response.text.rstrip().endswith('data: {"phase": "Suspended"}')
    assert app.state.services.streams.open == 0


async def test_a_stream_ends_when_its_caller_loses_access(
    settings: Callable[..., ApiSettings], kmock: kmock.RawHandler, cluster: Cluster, running_job: JobRecord
) -> None:
    async with running(settings(events_recheck_seconds=0.2, auth_cache_seconds=0)) as (app, client):
        stream = asyncio.create_task(client.get(EVENTS, headers=ALICE))
        await until(lambda: app.state.services.streams.open == 1)
        before = len(reviews(kmock, "subjectaccessreviews"))
        cluster.grants["alice"].discard("team-a")
        response = await asyncio.wait_for(stream, timeout=30)
        assert app.state.services.streams.open == 0
    assert '"reason": "AccessEnded"' in response.text
    assert len(reviews(kmock, "subjectaccessreviews")) > before  # it asked again, it did not assume


async def test_a_stream_ends_when_its_token_is_revoked(
    settings: Callable[..., ApiSettings], cluster: Cluster, running_job: JobRecord
) -> None:
    async with running(settings(events_recheck_seconds=0.2, auth_cache_seconds=0)) as (app, client):
        stream = asyncio.create_task(client.get(EVENTS, headers=ALICE))
        await until(lambda: app.state.services.streams.open == 1)
        del cluster.users["alice-token"]
        response = await asyncio.wait_for(stream, timeout=30)
    assert '"reason": "AccessEnded"' in response.text


async def test_a_saturated_pool_answers_503_with_retry_after_instead_of_hanging(
    settings: Callable[..., ApiSettings], cluster: Cluster, running_job: JobRecord
) -> None:
    async with running(settings(database_pool_size=1, database_acquire_timeout_seconds=0.2)) as (app, client):
        async with app.state.services.pool.acquire():  # another request holds the only connection
            response = await asyncio.wait_for(client.get("/v1/namespaces/team-a/ingestionjobs", headers=ALICE), 30)
        assert response.status_code == 503
        assert response.headers["retry-after"] == "2"
        assert response.headers["content-type"] == "application/problem+json"
        # The connection is back: the same request succeeds.
        assert (await client.get("/v1/namespaces/team-a/ingestionjobs", headers=ALICE)).status_code == 200
