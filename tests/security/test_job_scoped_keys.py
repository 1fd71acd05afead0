"""A chunk or vector pointed at another job's row: the schema refuses it, and the API's reads ignore it.

Until migration 0010 a tenant's worker role could insert a chunk with its own `job_uid` and another
namespace's `document_id` (foreign keys are checked without row-level security), and the API then
served that document's URI, title and neighbouring chunks as the tenant's own; the same through
`embeddings.chunk_id` for semantic search. Workers hold no SQL any more (they call the ingest service),
but the schema still refuses such a row from anyone, the owner included: the probe of issue 21 runs
here on the owner's connection, the one the ingest service holds. Real Postgres, the real API.
"""

import re
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import asyncpg
import httpx
import pytest

from headrace.api.settings import ApiSettings
from headrace.store import documents, jobs, runs, vectors
from headrace.store.db import Pool
from headrace.store.jobs import JobRecord
from headrace.store.search import statistics as search_statistics
from tests.api.conftest import bearer, serve
from tests.conftest import volume_spec

pytestmark = pytest.mark.postgres

SECRETS = ("secret-plans", "Secret plans", "merger", "lighthouse corp")
"""What team-b stored; none of it may reach team-a's reader."""


@dataclass(frozen=True)
class Tenant:
    namespace: str
    job: JobRecord


async def _job_space(pool: Pool, job: JobRecord) -> vectors.Space:
    """The job's vector space, created as the operator does before a run's workers start."""
    assert await vectors.available(pool), "the test Postgres has pgvector"
    embedding = job.spec.embedding
    assert embedding.model_name is not None and embedding.dimensions is not None
    return await vectors.space_for(pool, embedding.model_name, embedding.dimensions)


async def _tenant(pool: Pool, namespace: str) -> Tenant:
    job = await jobs.register_job(
        pool,
        uid=uuid.uuid4(),
        namespace=namespace,
        name="handbook",
        generation=1,
        spec=volume_spec(),
        namespace_uid=uuid.uuid4(),
    )
    return Tenant(namespace, job)


@pytest.fixture
async def two_tenants(pool: Pool) -> AsyncIterator[tuple[Tenant, Tenant]]:
    """Team-a's job, and team-b's with a finished run: a document, its chunk and vector, a failure."""
    a, b = await _tenant(pool, "team-a"), await _tenant(pool, "team-b")
    run = await runs.start_run(pool, b.job, reason="test")
    space = await _job_space(pool, b.job)
    await documents.store_document(
        pool,
        b.job.uid,
        run,
        documents.DocumentRecord(
            uri="secret-plans.txt",
            title="Secret plans",
            content_hash="h",
            fingerprint="f",
            format="text",
            bytes=30,
            chunks=[documents.ChunkRecord(0, "the merger with lighthouse corp closes friday")],
        ),
        space=space,
        embeddings=[[0.5] * space.dimensions],
    )
    await documents.record_failures(pool, b.job.uid, run, {"broken.pdf": "not a PDF"})
    await search_statistics.build(pool, a.job.uid)
    await search_statistics.build(pool, b.job.uid)
    yield a, b


async def _b_rows(pool: Pool, b: Tenant) -> tuple[int, int]:
    """Team-b's document id and chunk id, as an attacker would guess them (ids are sequential)."""
    row = await pool.fetchrow(
        "SELECT d.id AS document_id, c.id AS chunk_id FROM headrace.documents d "
        "JOIN headrace.chunks c ON c.document_id = d.id WHERE d.job_uid = $1",
        b.job.uid,
    )
    assert row is not None
    return row["document_id"], row["chunk_id"]


async def _bare_chunk(pool: Pool, b: Tenant, document_id: int) -> int:
    """A second chunk of team-b's document, without a vector.

    A chunk with a vector is told apart by the vectors' primary key (chunk_id alone, which the upserts of
    every release since 0006 name), a uniqueness check that runs before any foreign key: an oracle
    only for whoever holds SQL, which since the ingest service is no tenant."""
    return int(
        await pool.fetchval(
            "INSERT INTO headrace.chunks (document_id, job_uid, ordinal, content, config) "
            "VALUES ($1, $2, 1, 'appendix: the merger with lighthouse corp', 'english') RETURNING id",
            document_id,
            b.job.uid,
        )
    )


def _masked(message: str) -> str:
    """An error message with its numbers and uuids blanked: what is left is what it tells about the ids."""
    return re.sub(r"[0-9a-f]{8}-[0-9a-f-]{27}|\d+", "#", message)


async def test_nobody_can_point_a_chunk_or_vector_at_another_jobs_row(
    pool: Pool, dsn: str, two_tenants: tuple[Tenant, Tenant]
) -> None:
    a, b = two_tenants
    document_id, _ = await _b_rows(pool, b)
    space = await _job_space(pool, a.job)
    nowhere = 10**12
    bare = await _bare_chunk(pool, b, document_id)
    before = await pool.fetch("SELECT * FROM headrace.chunks ORDER BY id")
    conn = await asyncpg.connect(dsn)
    try:
        chunk = (
            "INSERT INTO headrace.chunks (document_id, job_uid, ordinal, content, config) "
            "VALUES ($1, $2, 99, 'planted', 'english')"
        )
        vector = "INSERT INTO headrace.embeddings (chunk_id, job_uid, space_id, embedding) VALUES ($1, $2, $3, $4)"
        errors = []
        for statement, args in (
            (chunk, (document_id, a.job.uid)),
            (chunk, (nowhere, a.job.uid)),
            (vector, (bare, a.job.uid, space.id, str([0.5] * space.dimensions))),
            (vector, (nowhere, a.job.uid, space.id, str([0.5] * space.dimensions))),
        ):
            with pytest.raises(asyncpg.ForeignKeyViolationError) as refused:
                await conn.execute(statement, *args)
            errors.append(_masked(f"{refused.value} {refused.value.detail} {refused.value.constraint_name}"))
        # Another job's id and an id that exists nowhere are refused in the same words: no oracle of ids.
        assert errors[0] == errors[1] and errors[2] == errors[3], errors
    finally:
        await conn.close()
    assert await pool.fetch("SELECT * FROM headrace.chunks ORDER BY id") == before
    assert await pool.fetchval("SELECT count(*) FROM headrace.embeddings WHERE job_uid = $1", a.job.uid) == 0


async def test_a_planted_chunk_or_vector_reveals_nothing_through_the_api(
    pool: Pool, two_tenants: tuple[Tenant, Tenant], settings: Callable[..., ApiSettings]
) -> None:
    """The reads join on the job as well as on the id, so they hold without the keys: rows planted with the
    keys' triggers off (as a database restored from before 0010 could hold them) give team-a's reader none
    of team-b's document, by chunk, by passage or by search."""
    a, b = two_tenants
    document_id, chunk_id = await _b_rows(pool, b)
    space = await _job_space(pool, a.job)
    bare = await _bare_chunk(pool, b, document_id)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL session_replication_role = replica")  # superuser only: the test's owner is
        planted = await conn.fetchval(
            "INSERT INTO headrace.chunks (document_id, job_uid, ordinal, content, config) "
            "VALUES ($1, $2, 2, 'planted harbour notes', 'english') RETURNING id",
            document_id,
            a.job.uid,
        )
        await conn.execute(
            "INSERT INTO headrace.embeddings (chunk_id, job_uid, space_id, embedding) VALUES ($1, $2, $3, $4)",
            bare,
            a.job.uid,
            space.id,
            str([0.5] * space.dimensions),
        )

    # As the operator does after a run: the planted chunk is in A's statistics.
    await search_statistics.build(pool, a.job.uid)

    async with serve(settings()) as client:
        alice = bearer("alice-token")
        base = "/v1/namespaces/team-a/ingestionjobs/handbook"
        answers: list[httpx.Response] = [
            await client.get(f"{base}/chunks/{planted}", params={"context": 3}, headers=alice),
            await client.get(f"{base}/chunks/{chunk_id}", params={"context": 3}, headers=alice),
            await client.get(f"{base}/chunks/{bare}", params={"context": 3}, headers=alice),
        ]
        for answer in answers:
            assert answer.status_code == 404, answer.text
            assert answer.headers["content-type"] == "application/problem+json"
        for mode in ("keyword", "semantic", "hybrid"):
            for q in ("planted harbour", "merger lighthouse"):
                found = await client.post(
                    "/v1/search", json={"q": q, "mode": mode, "namespaces": ["team-a"]}, headers=alice
                )
                assert found.status_code == 200, (mode, q, found.text)
                assert found.json()["items"] == [], (mode, q)
                answers.append(found)
        for answer in answers:
            for secret in SECRETS:
                assert secret not in answer.text
        # Team-b's own reader still gets its passage, unchanged.
        own = await client.get(
            f"/v1/namespaces/team-b/ingestionjobs/handbook/chunks/{chunk_id}", headers=bearer("bob-token")
        )
        assert own.status_code == 200 and own.json()["title"] == "Secret plans"
