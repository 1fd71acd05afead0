"""A hostile pod in team-a against the worker API: the real control plane, the real service, real Postgres.

The pod holds what a tenant's pod can hold: its own projected token, every other token it can mint in
its namespace (any audience, bound to any of its pods or to none), the tokens of pods that are gone,
and the worker API's address. team-b ingests through the same service with its own worker's token.
Each attempt must get a 4xx problem, and team-b's rows, searches and runs must be exactly as they were
(and team-a's other job's too).
"""

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from headrace.ingest.app import create_app
from headrace.ingest.auth import KubernetesWorkerAuthenticator
from headrace.ingest.server import server
from headrace.ingest.settings import IngestSettings
from headrace.kubeapi import KubeApi
from headrace.store import jobs, runs, search
from headrace.store.db import Pool
from headrace.store.jobs import JobRecord
from headrace.worker import wire
from headrace.worker.loop import EXIT_DRAINED, Worker
from headrace.worker.remote import RemoteStore
from headrace.worker.store import DirectStore, WorkerStore
from tests.conftest import volume_spec
from tests.ingest.cluster import (
    AUDIENCE,
    create_pod,
    create_worker,
    delete_pod,
    ingest_kube_settings,
    resign,
    token,
)
from tests.ingest.cluster import (
    Worker as WorkerPod,
)
from tests.kube.controlplane import ControlPlane
from tests.sockets import free_port

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(300)]

PROBLEM = "application/problem+json"


class CountingKube(KubeApi):
    reviews = 0

    async def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.reviews += 1
        return await super().create(path, body)


@dataclass
class Team:
    pod: WorkerPod
    job: JobRecord
    token: str

    @property
    def uid(self) -> uuid.UUID:
        return self.job.uid

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass
class World:
    url: str
    client: httpx.AsyncClient
    kube: CountingKube
    settings: IngestSettings
    paths: dict[str, Any]
    """The worker API's OpenAPI paths: every route, from the app's own schema."""
    a: Team  # the attacker's own job, team-a/docs
    wiki: Team  # another job of team-a
    b: Team  # the victim, team-b/docs, with an index


def lay_out(root: Path, count: int) -> None:
    root.mkdir(parents=True)
    for i in range(count):
        (root / f"gate{i}.txt").write_text(f"Sluice gate {i}.\n\n" + f"The weir keeps the millrace at level {i}. " * 30)


async def team(control_plane: ControlPlane, pool: Pool, namespace: str, name: str) -> Team:
    pod = await create_worker(control_plane, namespace, name)
    spec = volume_spec(".", workers={"batchSize": 2}, embedding={"provider": "builtin"})
    job = await jobs.register_job(pool, uid=pod.job_uid, namespace=namespace, name=name, generation=1, spec=spec)
    await runs.start_run(pool, job, reason="test")
    return Team(pod, job, await token(control_plane, namespace, pod=pod.pod, audiences=[AUDIENCE]))


@pytest.fixture
async def world(
    control_plane: ControlPlane, pool: Pool, dsn: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[World]:
    kube_settings = await ingest_kube_settings(control_plane, tmp_path)
    # A test may give the service tighter limits; its victims then ingest with the database in hand,
    # so that their own ingest does not spend the budgets under test.
    limits = getattr(request, "param", {})
    settings = IngestSettings(
        database_url=dsn,  # type: ignore[arg-type]
        kube_api_url=kube_settings.kube_api_url,
        kube_ca_file=kube_settings.kube_ca_file,
        kube_token_file=kube_settings.kube_token_file,
        ingest_host="127.0.0.1",
        ingest_port=free_port(),
        **limits,
    )
    team_a = await control_plane.create_namespace(prefix="team-a")
    team_b = await control_plane.create_namespace(prefix="team-b")
    a, wiki, b = await asyncio.gather(
        team(control_plane, pool, team_a, "docs"),
        team(control_plane, pool, team_a, "wiki"),
        team(control_plane, pool, team_b, "docs"),
    )
    # A review answered late on a loaded machine would be a 503 (AuthUnavailable), which the flood test does
    # not count: the apiserver's latency is not what these tests are about.
    kube = CountingKube.from_settings(settings, timeout=30.0)
    auth = KubernetesWorkerAuthenticator(kube, audience=AUDIENCE, cache_seconds=settings.auth_cache_seconds)
    app = create_app(settings, pool, auth)
    serving = server(app, settings)
    task = asyncio.create_task(serving.serve())
    url = f"http://127.0.0.1:{settings.ingest_port}"
    try:
        while not serving.started:
            assert not task.done(), "the ingest service did not start"
            await asyncio.sleep(0.02)
        # team-b and team-a's wiki ingest through the service, as their worker pods do.
        for victim in (b, wiki):
            lay_out(tmp_path / str(victim.uid), 6)
            token_file = tmp_path / f"{victim.uid}.token"
            token_file.write_text(victim.token)
            store: WorkerStore = (
                DirectStore(pool, victim.uid) if limits else RemoteStore(url, victim.uid, token_file=token_file)
            )
            try:
                worker = Worker(store, volume_root=tmp_path / str(victim.uid), poll_seconds=0.02)
                assert await worker.run() == EXIT_DRAINED
            finally:
                await store.aclose()
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            yield World(url, client, kube, settings, app.openapi()["paths"], a, wiki, b)
    finally:
        serving.should_exit = True
        await task
        await auth.aclose()


async def snapshot(pool: Pool, job: JobRecord) -> dict[str, Any]:
    """Every row of the job in every table that has one, and what searching it finds."""
    tables = [
        r["table_name"]
        for r in await pool.fetch(
            "SELECT table_name FROM information_schema.columns WHERE table_schema = 'headrace' "
            "AND column_name = 'job_uid' ORDER BY table_name"
        )
    ]
    rows: dict[str, Any] = {}
    for table in tables:
        rows[table] = [
            r[0]
            for r in await pool.fetch(
                f"SELECT to_jsonb(t)::text FROM headrace.{table} t WHERE job_uid = $1 ORDER BY 1", job.uid
            )
        ]
    rows["jobs"] = await pool.fetchval("SELECT to_jsonb(j)::text FROM headrace.jobs j WHERE uid = $1", job.uid)
    rows["embeddings"] = [
        r[0]
        for r in await pool.fetch(
            "SELECT to_jsonb(e)::text FROM headrace.embeddings e JOIN headrace.chunks c ON c.id = e.chunk_id "
            "WHERE c.job_uid = $1 ORDER BY 1",
            job.uid,
        )
    ]
    for query in ("weir millrace", "sluice gate 3"):
        page = await search.search(pool, query, where=search.SearchFilter(job_uid=job.uid), limit=50)
        rows[f"search:{query}"] = [(hit.chunk_id, round(hit.score, 9)) for hit in page.hits]
    assert rows["documents"] and rows["chunks"] and rows["embeddings"] and rows[f"search:{query}"]
    return rows


async def ids(pool: Pool, job: JobRecord) -> tuple[int, int, int]:
    """A task, a document and a chunk of the job."""
    task = await pool.fetchval("SELECT min(id) FROM headrace.tasks WHERE job_uid = $1", job.uid)
    document = await pool.fetchval("SELECT min(id) FROM headrace.documents WHERE job_uid = $1", job.uid)
    chunk = await pool.fetchval("SELECT min(id) FROM headrace.chunks WHERE job_uid = $1", job.uid)
    return task, document, chunk


def assert_problem(response: httpx.Response, *statuses: int) -> None:
    assert response.status_code in statuses, f"{response.request.method} {response.request.url.path}: {response.text}"
    assert response.headers["content-type"] == PROBLEM, response.text


def routes(app_paths: dict[str, Any]) -> list[tuple[str, str]]:
    return [(method.upper(), path) for path, ops in app_paths.items() for method in ops if "{job_uid}" in path]


async def test_team_a_cannot_touch_team_b_or_its_own_other_job(world: World, pool: Pool) -> None:
    before = {job.uid: await snapshot(pool, job) for job in (world.b.job, world.wiki.job)}
    task, document, _ = await ids(pool, world.b.job)
    attempts = routes(world.paths)
    assert len(attempts) >= 20  # every route of the worker API, found from its own schema
    for victim in (world.b, world.wiki):
        for method, template in attempts:
            path = template.format(job_uid=victim.uid, run=1, task_id=task, document_id=document)
            response = await world.client.request(method, path, headers=world.a.headers(), json={})
            assert_problem(response, 403)
            assert victim.job.name in response.text or str(victim.uid) in response.text
    after = {job.uid: await snapshot(pool, job) for job in (world.b.job, world.wiki.job)}
    assert after == before


async def test_forged_ids_on_its_own_job_are_refused(world: World, pool: Pool) -> None:
    """team-a's worker names team-b's runs, tasks, documents and chunks on its own job's routes."""
    before = await snapshot(pool, world.b.job)
    task, document, chunk = await ids(pool, world.b.job)
    lease = {"id": task, "leaseToken": str(uuid.uuid4())}
    own = f"/v1/jobs/{world.a.uid}"
    space = await pool.fetchval("SELECT id FROM headrace.embedding_spaces ORDER BY id LIMIT 1")
    vector = wire.encode_vectors(
        [[0.0] * await pool.fetchval("SELECT dimensions FROM headrace.embedding_spaces WHERE id = $1", space)]
    )
    attempts: list[tuple[str, dict[str, Any]]] = [
        (f"{own}/tasks/{task}/failure", {"leaseToken": lease["leaseToken"], "error": "x", "backoffSeconds": 0}),
        (f"{own}/tasks/{task}/release", {"leaseToken": lease["leaseToken"]}),
        (f"{own}/heartbeats", {"tasks": [lease], "leaseSeconds": 30}),
        (f"{own}/acks", {"tasks": [lease]}),
        (f"{own}/leases", {"acks": [lease], "worker": "w", "leaseSeconds": 30, "limit": 1}),
        (f"{own}/runs/{document}/documents/{document}/drop-vectors", {}),
        (f"{own}/runs/1/documents/{document}/drop-vectors", {}),
        (f"{own}/documents/{document}/chunks-to-embed", {"spaceId": space}),
        (f"{own}/runs/1/documents/{document}/reembedded", {"spaceId": space}),
        (f"{own}/chunk-vectors", {"spaceId": space, "chunkIds": [chunk], "vectors": vector}),
        (f"{own}/runs/2/finish", {}),  # a run the job does not have (team-b's run numbers are its own)
        (f"{own}/runs/2/outcomes", {"failures": {"file:///gate1.txt": "forged"}}),
        (f"{own}/chunk-vectors", {"spaceId": 2**62, "chunkIds": [chunk], "vectors": vector}),
    ]
    for path, body in attempts:
        response = await world.client.post(path, headers=world.a.headers(), json=body)
        assert_problem(response, 404, 409, 422)
    assert await snapshot(pool, world.b.job) == before


async def test_tokens_that_are_not_a_live_worker_of_the_job_are_refused(
    world: World, pool: Pool, control_plane: ControlPlane
) -> None:
    before = await snapshot(pool, world.b.job)
    namespace = world.a.pod.namespace
    shell = await create_pod(control_plane, namespace, "shell")
    replayed = await token(control_plane, namespace, pod=world.a.pod.pod, audiences=[AUDIENCE])
    await delete_pod(control_plane, world.a.pod.pod)
    attempts = {
        "no token": (None, 401),
        "not a token": ("Bearer not-a-token", 401),
        "a deleted pod's": (replayed, 401),
        "an expired one": (resign(control_plane, world.wiki.token, exp=int(time.time()) - 60), 401),
        "the pod's default ServiceAccount token": (await token(control_plane, namespace, pod=shell), 401),
        "another audience": (await token(control_plane, namespace, pod=shell, audiences=["vault"]), 401),
        "not bound to a pod": (await token(control_plane, namespace, audiences=[AUDIENCE]), 403),
        "a tenant's own pod": (await token(control_plane, namespace, pod=shell, audiences=[AUDIENCE]), 403),
    }
    for what, (presented, status) in attempts.items():
        headers = (
            {}
            if presented is None
            else {"Authorization": presented if presented.startswith("Bearer") else f"Bearer {presented}"}
        )
        for target in (world.a.uid, world.b.uid):
            response = await world.client.get(f"/v1/jobs/{target}", headers=headers)
            assert response.status_code == status, (what, response.text)
            assert response.headers["content-type"] == PROBLEM
    assert await snapshot(pool, world.b.job) == before


async def test_oversized_and_malformed_batches_are_4xx(world: World, pool: Pool) -> None:
    before = {job.uid: await snapshot(pool, job) for job in (world.b.job, world.wiki.job)}
    own = f"/v1/jobs/{world.a.uid}/runs/1/documents"
    document = {
        "uri": "file:///x.txt", "title": "x", "contentHash": "h", "fingerprint": "f", "format": "text/plain",
        "bytes": 1, "chunks": [{"ordinal": 0, "content": "x"}],
    }  # fmt: skip
    headers = world.a.headers() | {"Content-Type": "application/json"}
    big = json.dumps({"documents": [document | {"title": "x" * 60_000}] * 700})
    assert len(big) > world.settings.ingest_max_body_bytes
    assert_problem(await world.client.post(own, headers=headers, content=big), 413)
    too_many = {"documents": [document | {"uri": f"file:///{i}"} for i in range(wire.MAX_DOCUMENTS + 1)]}
    assert_problem(await world.client.post(own, headers=headers, json=too_many), 422)
    for malformed in (b"{", b"[]", b"\xff\xfe", b'{"documents": "all"}', b'{"documents": [{"uri": 5}]}'):
        assert_problem(await world.client.post(own, headers=headers, content=malformed), 422)
    extra = {"documents": [document | {"jobUid": str(world.b.uid)}]}  # an unknown field is not ignored
    assert_problem(await world.client.post(own, headers=headers, json=extra), 422)
    two = document | {"chunks": [{"ordinal": 0, "content": "x"}, {"ordinal": 1, "content": "y"}]}
    vectors = {"documents": [two | {"vectors": wire.encode_vectors([[1.0] * 7])}]}  # 7 floats for 2 chunks
    assert_problem(await world.client.post(own, headers=headers, json=vectors), 422)
    assert {job.uid: await snapshot(pool, job) for job in (world.b.job, world.wiki.job)} == before
    assert await pool.fetchval("SELECT count(*) FROM headrace.documents WHERE job_uid = $1", world.a.uid) == 0


@pytest.mark.parametrize("world", [{"ingest_rate_limit_per_second": 0.01, "ingest_rate_limit_burst": 5}], indirect=True)
async def test_a_flood_is_limited_per_job_and_costs_the_api_server_nothing_past_a_burst(
    world: World, pool: Pool
) -> None:
    before = await snapshot(pool, world.b.job)
    drained = f"/v1/jobs/{world.a.uid}/drained"
    statuses = [(await world.client.get(drained, headers=world.a.headers())).status_code for _ in range(20)]
    assert statuses.count(200) in (5, 6) and statuses[-1] == 429  # the burst (and a token refilled, on a slow day)
    limited = await world.client.get(drained, headers=world.a.headers())
    assert_problem(limited, 429)
    assert int(limited.headers["Retry-After"]) >= 1
    # team-b's workers have a budget of their own.
    assert (await world.client.get(f"/v1/jobs/{world.b.uid}/drained", headers=world.b.headers())).status_code == 200

    # Tokens nobody knows, all at once: a review each for the address's burst, then 429s that cost none.
    reviews = world.kube.reviews
    flood = await asyncio.gather(
        *(world.client.get(f"/v1/jobs/{world.b.uid}", headers={"Authorization": f"Bearer x.{i}.y"}) for i in range(100))
    )
    assert {r.status_code for r in flood} == {401, 429}
    assert world.kube.reviews - reviews == sum(r.status_code == 401 for r in flood)
    assert await snapshot(pool, world.b.job) == before


@pytest.mark.parametrize("world", [{"ingest_body_timeout_seconds": 3}], indirect=True)
async def test_slow_clients_hold_no_database_connection_and_are_cut_off(world: World, pool: Pool) -> None:
    """Connections that send half a request and stall cost a socket each, not a database connection,
    and only until the body deadline: then each is answered 408 and closed."""
    before = await snapshot(pool, world.b.job)
    port = world.settings.ingest_port
    stalled = []
    for _ in range(30):  # more than the service's pool has connections
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            f"POST /v1/jobs/{world.a.uid}/runs/1/documents HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {world.a.token}\r\nContent-Type: application/json\r\n"
            'Content-Length: 100000\r\n\r\n{"documents": ['.encode()
        )
        await writer.drain()
        stalled.append((reader, writer))
    try:
        for _ in range(3):
            response = await world.client.get(f"/v1/jobs/{world.b.uid}/drained", headers=world.b.headers())
            assert response.status_code == 200 and response.json() == {"drained": True}
        for reader, _ in stalled:  # the service answers and closes each: read until it does
            assert (await reader.read()).startswith(b"HTTP/1.1 408 ")
    finally:
        for _, writer in stalled:
            writer.close()
    assert await snapshot(pool, world.b.job) == before
