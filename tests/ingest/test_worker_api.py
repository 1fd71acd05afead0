"""The worker API refuses what a hostile worker might send: another job's path, forged task, run, document,
chunk and vector-space ids, oversized and malformed bodies, floods; and another job's rows (in the same
namespace and in another one) are unchanged afterwards. Driven in process (httpx's ASGI transport): a
socket adds nothing to these answers (test_remote_worker.py runs the service on one)."""

import logging
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from headrace.ingest.app import create_app
from headrace.store import jobs, queue, runs, vectors
from headrace.store.db import Pool
from headrace.store.jobs import JobRecord
from headrace.worker import wire
from headrace.worker.remote import IngestRefused, RemoteStore
from headrace.worker.store import ForeignId
from tests.conftest import volume_spec
from tests.ingest.service import Identities, settings
from tests.sources.helpers import run_once

pytestmark = pytest.mark.postgres

TABLES = ("jobs", "runs", "tasks", "documents", "chunks", "embeddings", "job_events")


async def rows_of(pool: Pool, job: JobRecord) -> dict[str, list[str]]:
    """Every row of the job in every table, as text: what "unchanged" is compared on."""
    found = {}
    for table in TABLES:
        column = "uid" if table == "jobs" else "job_uid"
        found[table] = [
            r["row"]
            for r in await pool.fetch(
                f"SELECT t::text AS row FROM headrace.{table} t WHERE {column} = $1 ORDER BY t::text", job.uid
            )
        ]
    return found


def lay_out(root: Path, name: str) -> Path:
    folder = root / name
    folder.mkdir()
    for i in range(3):
        (folder / f"{name}{i}.txt").write_text(f"{name} document {i}: sluices, weirs and mill races. " * 20)
    return folder


class World:
    """Three jobs with their data: A (team-a), the worker under test's; C, another job of team-a; B, of team-b.
    B's run 2 is under way with a task leased (its lease token known to the test, as it would not be to A)."""

    def __init__(self, pool: Pool, a: JobRecord, b: JobRecord, c: JobRecord, leased: queue.Task) -> None:
        self.pool, self.a, self.b, self.c, self.leased = pool, a, b, c, leased

    async def others(self) -> dict[str, Any]:
        return {"b": await rows_of(self.pool, self.b), "c": await rows_of(self.pool, self.c)}

    async def a_document(self, job: JobRecord) -> int:
        return int(await self.pool.fetchval("SELECT min(id) FROM headrace.documents WHERE job_uid = $1", job.uid))

    async def a_chunk(self, job: JobRecord) -> int:
        return int(await self.pool.fetchval("SELECT min(id) FROM headrace.chunks WHERE job_uid = $1", job.uid))


@pytest.fixture
async def world(pool: Pool, tmp_path: Path) -> World:
    made = {}
    for name, namespace in (("a", "team-a"), ("b", "team-b"), ("c", "team-a")):
        spec = volume_spec(lay_out(tmp_path, name))
        job = await jobs.register_job(pool, uid=uuid.uuid4(), namespace=namespace, name=name, generation=1, spec=spec)
        await run_once(pool, job, secrets_dir=tmp_path)
        made[name] = job
    b = made["b"]
    await runs.start_run(pool, b, reason="second")
    [leased] = await queue.lease(pool, b.uid, worker="b-0", lease_seconds=300)
    return World(pool, made["a"], b, made["c"], leased)


@pytest.fixture
async def identities(tmp_path: Path) -> Identities:
    return Identities(tmp_path / "identities.json")


@pytest.fixture
async def client(pool: Pool, dsn: str, identities: Identities) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings(dsn), pool, identities)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://ingest") as client:
        yield client


def held(task: queue.Task) -> dict[str, Any]:
    return {"id": task.id, "leaseToken": str(task.lease_token)}


async def test_a_worker_can_reach_no_other_job_and_no_other_jobs_rows(
    world: World, client: httpx.AsyncClient, identities: Identities, tmp_path: Path
) -> None:
    a, b, c, leased = world.a, world.b, world.c, world.leased
    auth = {"Authorization": f"Bearer {identities.issue(a)}"}
    before = await world.others()
    model = a.spec.embedding
    assert model.model_name is not None and model.dimensions is not None
    space = await vectors.space_for(world.pool, model.model_name, model.dimensions)
    b_document, c_chunk = await world.a_document(b), await world.a_chunk(c)
    attempts: list[tuple[str, str, dict[str, Any] | None, int]] = [
        # Another job's path, in another namespace and in the worker's own.
        ("GET", f"/v1/jobs/{b.uid}", None, 403),
        ("POST", f"/v1/jobs/{c.uid}/leases", {"worker": "w", "leaseSeconds": 30, "limit": 5}, 403),
        ("POST", f"/v1/jobs/{c.uid}/runs/1/outcomes", {"failures": {"c0": "forged"}}, 403),
        # B's leased task, even with its real lease token.
        ("POST", f"/v1/jobs/{a.uid}/heartbeats", {"tasks": [held(leased)], "leaseSeconds": 3600}, 404),
        ("POST", f"/v1/jobs/{a.uid}/acks", {"tasks": [held(leased)]}, 404),
        (
            "POST",
            f"/v1/jobs/{a.uid}/leases",
            {"acks": [held(leased)], "worker": "w", "leaseSeconds": 30, "limit": 1},
            404,
        ),
        (
            "POST",
            f"/v1/jobs/{a.uid}/tasks/{leased.id}/failure",
            {"leaseToken": str(leased.lease_token), "error": "forged", "backoffSeconds": 0, "permanent": True},
            404,
        ),
        ("POST", f"/v1/jobs/{a.uid}/tasks/{leased.id}/release", {"leaseToken": str(leased.lease_token)}, 404),
        # Runs that are not A's: B's run 2, a run to come.
        ("POST", f"/v1/jobs/{a.uid}/runs/2/processed", {"uris": ["x"]}, 404),
        ("POST", f"/v1/jobs/{a.uid}/runs/2/outcomes", {"failures": {"x": "forged"}}, 404),
        ("POST", f"/v1/jobs/{a.uid}/runs/2/discovered", {"tasks": [], "maxAttempts": 1, "total": 0, "done": True}, 404),
        ("POST", f"/v1/jobs/{a.uid}/runs/2/finish", None, 404),
        ("POST", f"/v1/jobs/{a.uid}/runs/0/finish", None, 422),
        # B's document and C's chunk.
        ("POST", f"/v1/jobs/{a.uid}/documents/{b_document}/chunks-to-embed", {"spaceId": space.id}, 404),
        ("POST", f"/v1/jobs/{a.uid}/runs/1/documents/{b_document}/drop-vectors", None, 404),
        ("POST", f"/v1/jobs/{a.uid}/runs/1/documents/{b_document}/reembedded", {"spaceId": space.id}, 404),
        (
            "POST",
            f"/v1/jobs/{a.uid}/chunk-vectors",
            {"spaceId": space.id, "chunkIds": [c_chunk], "vectors": wire.encode_vectors([[0.5] * space.dimensions])},
            404,
        ),
        # A vector space that does not exist.
        ("POST", f"/v1/jobs/{a.uid}/documents/stale-embeddings", {"spaceId": 987654, "uris": ["a0"]}, 404),
        # Discovery may enqueue ingest batches only: a forged discover task would list the source again.
        (
            "POST",
            f"/v1/jobs/{a.uid}/runs/1/discovered",
            {
                "tasks": [{"kind": "discover", "dedupeKey": "d", "payload": {}}],
                "maxAttempts": 1,
                "total": 0,
                "done": True,
            },
            422,
        ),
    ]
    for method, path, body, status in attempts:
        answer = await client.request(method, path, json=body, headers=auth)
        assert answer.status_code == status, (path, answer.text)
        assert answer.headers["content-type"] == "application/problem+json", path
        assert answer.json()["status"] == status
    # URIs are the job's own: A recording "b0" as failed records A's document of that name, not B's.
    recorded = await client.post(f"/v1/jobs/{a.uid}/runs/1/outcomes", json={"failures": {"b0": "x"}}, headers=auth)
    assert recorded.status_code == 200, recorded.text
    assert await world.others() == before


async def test_a_token_of_no_worker_is_refused(world: World, client: httpx.AsyncClient) -> None:
    for headers in ({}, {"Authorization": "Bearer forged"}, {"Authorization": "Basic eDp5"}):
        answer = await client.get(f"/v1/jobs/{world.a.uid}/drained", headers=headers)
        assert answer.status_code == 401, answer.text
        assert answer.headers["content-type"] == "application/problem+json"


async def test_oversized_and_malformed_bodies_are_refused_naming_the_problem(
    world: World, client: httpx.AsyncClient, identities: Identities
) -> None:
    auth = {"Authorization": f"Bearer {identities.issue(world.a)}"}
    path = f"/v1/jobs/{world.a.uid}/runs/1/documents"
    before = await rows_of(world.pool, world.a)

    too_big = await client.post(path, content=b" " * (settings("x").ingest_max_body_bytes + 1), headers=auth)
    assert too_big.status_code == 413, too_big.text

    not_json = await client.post(path, content=b"{not json", headers={**auth, "Content-Type": "application/json"})
    assert not_json.status_code == 422

    document = {
        "uri": "a9.txt",
        "title": "",
        "contentHash": "h",
        "fingerprint": "f",
        "format": "text",
        "bytes": 1,
        "chunks": [{"ordinal": 0, "content": "one"}, {"ordinal": 1, "content": "two"}],
    }
    cases = [
        ({"documents": []}, "body.documents"),
        ({"documents": [{**document, "jobUid": str(world.b.uid)}]}, "body.documents[0].jobUid"),
        (
            {"documents": [{**document, "chunks": [{"ordinal": -1, "content": "x"}]}]},
            "body.documents[0].chunks[0].ordinal",
        ),
        ({"documents": [{**document, "vectors": wire.encode_vectors([[1.0, 2.0, 3.0]])}]}, "body.documents[0].vectors"),
        ({"documents": [{**document, "vectors": "not base64!"}]}, "body.documents[0].vectors"),
    ]
    for body, field in cases:
        answer = await client.post(path, json=body, headers=auth)
        assert answer.status_code == 422, (body, answer.text)
        assert answer.headers["content-type"] == "application/problem+json"
        assert field in answer.text, (field, answer.text)
    assert await rows_of(world.pool, world.a) == before


async def test_a_job_past_its_rate_limit_is_told_when_to_come_back(
    world: World, pool: Pool, dsn: str, identities: Identities, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(settings(dsn, ingest_rate_limit_per_second=2, ingest_rate_limit_burst=3), pool, identities)
    token = tmp_path / "token"
    token.write_text(identities.issue(world.a))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://ingest") as client:
        statuses = [
            (
                await client.get(
                    f"/v1/jobs/{world.a.uid}/drained", headers={"Authorization": f"Bearer {token.read_text()}"}
                )
            )
            for _ in range(4)
        ]
    assert [s.status_code for s in statuses] == [200, 200, 200, 429]
    assert int(statuses[-1].headers["Retry-After"]) >= 1
    # Another job's workers have their own budget.
    other = identities.issue(world.c)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://ingest") as client:
        assert (
            await client.get(f"/v1/jobs/{world.c.uid}/drained", headers={"Authorization": f"Bearer {other}"})
        ).status_code == 200
    # A worker waits as told, and goes on.
    caplog.set_level(logging.WARNING, logger="headrace.store.outage")
    store = RemoteStore("http://ingest", world.a.uid, token_file=token, transport=httpx.ASGITransport(app))
    try:
        assert await store.is_drained()  # A's only run is over
    finally:
        await store.aclose()
    assert any("429" in getattr(r, "error", "") for r in caplog.records), "the worker was never limited"


async def test_a_remote_store_rereads_its_token_and_does_not_retry_a_refusal(
    world: World, pool: Pool, dsn: str, identities: Identities, tmp_path: Path
) -> None:
    app = create_app(settings(dsn), pool, identities)
    token = tmp_path / "token"
    first = identities.issue(world.a)
    token.write_text(first)
    store = RemoteStore("http://ingest", world.a.uid, token_file=token, transport=httpx.ASGITransport(app))
    try:
        assert await store.is_drained()
        # The kubelet replaces the token; the old one stops being valid.
        token.write_text(identities.issue(world.a))
        identities.revoke(first)
        assert await store.is_drained()
        # A token that is no worker's is a 401 at once, not an outage to wait out.
        token.write_text("forged")
        with pytest.raises(IngestRefused) as refused:
            await store.is_drained()
        assert refused.value.status == 401
        # Another job's ids are a ForeignId naming the route.
        token.write_text(identities.issue(world.a))
        with pytest.raises(ForeignId, match="heartbeats"):
            await store.heartbeat([world.leased], lease_seconds=30)
    finally:
        await store.aclose()
