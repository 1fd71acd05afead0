"""A tenant's worker credential against another tenant's rows: it reads, changes and deletes nothing.

Real Postgres, real roles and row-level security (migration 0005), the credential the operator would
write into namespace A's Secret, and a real worker run with it.
"""

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from headrace.store import documents, jobs, lexicon, search, tenants, vectors
from headrace.store.db import Pool, create_pool
from headrace.store.jobs import JobRecord
from headrace.worker.loop import EXIT_DRAINED, Worker
from headrace.worker.store import DirectStore
from tests.conftest import volume_spec

pytestmark = pytest.mark.postgres


class Tenant:
    def __init__(self, namespace: str, job: JobRecord, url: str) -> None:
        self.namespace, self.job, self.url = namespace, job, url


@pytest.fixture
def prefix() -> str:
    # Roles belong to the whole server, which every test database shares: one prefix per test.
    return f"t{uuid.uuid4().hex[:8]}_"


async def tenant(pool: Pool, dsn: str, prefix: str, namespace: str) -> Tenant:
    namespace_uid = uuid.uuid4()
    job = await jobs.register_job(
        pool,
        uid=uuid.uuid4(),
        namespace=namespace,
        name="handbook",
        generation=1,
        spec=volume_spec(),
        namespace_uid=namespace_uid,
    )
    credential = await tenants.ensure_credential(
        pool, namespace=namespace, namespace_uid=namespace_uid, prefix=prefix, rotate_after=None, now=datetime.now(UTC)
    )
    assert credential is not None
    return Tenant(namespace, job, credential.url(dsn))


async def _job_space(pool: Pool, job: JobRecord) -> vectors.Space:
    """The job's vector space, created as the operator does before a run's workers start."""
    assert await vectors.available(pool), "the test Postgres has pgvector"
    embedding = job.spec.embedding
    assert embedding.model_name is not None and embedding.dimensions is not None
    return await vectors.space_for(pool, embedding.model_name, embedding.dimensions)


@pytest.fixture
async def two_tenants(pool: Pool, dsn: str, prefix: str, tmp_path: Path) -> AsyncIterator[tuple[Tenant, Tenant]]:
    await tenants.prepare(pool, prefix=prefix)
    a = await tenant(pool, dsn, prefix, "team-a")
    b = await tenant(pool, dsn, prefix, "team-b")
    # B has a finished run: documents, chunks, vectors, tasks, runs and events, all written by the owner.
    run = await jobs.start_run(pool, b.job, reason="test")
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
    # Search statistics of both jobs (B's lexeme rows summarise its text), as the operator builds them.
    await lexicon.build(pool, a.job.uid)
    await lexicon.build(pool, b.job.uid)
    yield a, b


async def test_a_worker_credential_gets_nothing_of_another_namespace(
    pool: Pool, two_tenants: tuple[Tenant, Tenant]
) -> None:
    a, b = two_tenants
    conn = await asyncpg.connect(a.url)
    try:
        assert await conn.fetchval("SELECT current_user") != await pool.fetchval("SELECT current_user")
        # Read: nothing of B, whichever way it is asked.
        assert await pool.fetchval("SELECT count(*) FROM headrace.embeddings WHERE job_uid = $1", b.job.uid) == 1
        assert await pool.fetchval("SELECT count(*) FROM headrace.lexemes WHERE job_uid = $1", b.job.uid) > 0
        tables = ("jobs", "runs", "tasks", "documents", "chunks", "embeddings", "job_events")
        for table in (*tables, "search_statistics", "lexemes"):
            assert await conn.fetchval(f"SELECT count(*) FROM headrace.{table}") == (
                await pool.fetchval(
                    f"SELECT count(*) FROM headrace.{table} WHERE "
                    + ("uid" if table == "jobs" else "job_uid")
                    + " = $1",
                    a.job.uid,
                )
            ), table
            key = "uid" if table == "jobs" else "job_uid"
            assert await conn.fetch(f"SELECT * FROM headrace.{table} WHERE {key} = $1", b.job.uid) == [], table
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetch("SELECT * FROM headrace.tenants")
        # Search as the tenant: B's passage is invisible, and so are the words of B's statistics.
        assert await conn.fetch("SELECT id FROM headrace.chunks WHERE tsv @@ to_tsquery('english', 'merger')") == []
        assert await conn.fetch("SELECT df FROM headrace.lexemes WHERE lexeme = 'merger'") == []
        assert await conn.fetchval("SELECT count(*) FROM headrace.search_statistics") == 1  # its own job's

        # Update and delete: zero rows.
        for table in ("tasks", "documents", "chunks", "embeddings"):
            assert await conn.execute(f"DELETE FROM headrace.{table} WHERE job_uid = $1", b.job.uid) == "DELETE 0"
        assert await conn.execute("UPDATE headrace.tasks SET state = 'dead' WHERE job_uid = $1", b.job.uid) == (
            "UPDATE 0"
        )
        assert await conn.execute("UPDATE headrace.documents SET title = 'x' WHERE job_uid = $1", b.job.uid) == (
            "UPDATE 0"
        )
        assert await conn.execute("UPDATE headrace.jobs SET updated_at = now() WHERE uid = $1", b.job.uid) == "UPDATE 0"
        assert await conn.execute("UPDATE headrace.runs SET error = 'x' WHERE job_uid = $1", b.job.uid) == "UPDATE 0"

        # What the worker has no business doing at all: permission denied, B's or its own.
        for statement in (
            "UPDATE headrace.jobs SET spec = '{}' WHERE uid = $1",
            "UPDATE headrace.jobs SET namespace_uid = gen_random_uuid() WHERE uid = $1",
            "UPDATE headrace.jobs SET namespace = 'team-b', name = 'x' WHERE uid = $1",
            "UPDATE headrace.jobs SET deleted_at = now() WHERE uid = $1",
            "UPDATE headrace.jobs SET spec_error = 'x' WHERE uid = $1",
            "UPDATE headrace.runs SET job_uid = gen_random_uuid() WHERE job_uid = $1",
            "DELETE FROM headrace.jobs WHERE uid = $1",
            "DELETE FROM headrace.job_events WHERE job_uid = $1",
            "DELETE FROM headrace.runs WHERE job_uid = $1",
            "UPDATE headrace.job_events SET message = 'x' WHERE job_uid = $1",
            # The search statistics are the owner's to write (the operator builds them), read-only to tenants.
            "DELETE FROM headrace.lexemes WHERE job_uid = $1",
            "UPDATE headrace.search_statistics SET chunks = 0 WHERE job_uid = $1",
            "INSERT INTO headrace.lexemes (job_uid, config, lexeme, df, ids, tfs, lens) "
            "VALUES ($1, 'english', 'merger', 1, '{}', '{}', '{}')",
        ):
            for uid in (a.job.uid, b.job.uid):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.execute(statement, uid)
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(
                "INSERT INTO headrace.tenants (role, namespace, namespace_uid) "
                "VALUES (current_user, 'team-b', gen_random_uuid())"
            )
        # Writing rows into B's job: refused by the policy.
        for statement in (
            "INSERT INTO headrace.documents (job_uid, uri, state, run, outcome) "
            "VALUES ($1, 'x', 'failed', 1, 'failed')",
            "INSERT INTO headrace.tasks (job_uid, run, kind, dedupe_key) VALUES ($1, 1, 'discover', 'x')",
            "INSERT INTO headrace.job_events (job_uid, run, type, reason) VALUES ($1, 1, 'Normal', 'X')",
            "INSERT INTO headrace.embeddings (chunk_id, job_uid, space_id, embedding) "
            "VALUES (1, $1, (SELECT min(id) FROM headrace.embedding_spaces), '[1]')",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
                await conn.execute(statement, b.job.uid)
        # Moving its own rows over to B's job is refused too (the new row must satisfy the policy).
        await conn.execute(
            "INSERT INTO headrace.tasks (job_uid, run, kind, dedupe_key) VALUES ($1, 1, 'discover', 'own')", a.job.uid
        )
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
            await conn.execute("UPDATE headrace.tasks SET job_uid = $1", b.job.uid)
    finally:
        await conn.close()

    # And everything of B is still there, unchanged.
    assert await pool.fetchval("SELECT count(*) FROM headrace.documents WHERE job_uid = $1", b.job.uid) == 2
    assert await pool.fetchval("SELECT title FROM headrace.documents WHERE uri = 'secret-plans.txt'") == "Secret plans"
    assert await pool.fetchval("SELECT spec_error FROM headrace.jobs WHERE uid = $1", b.job.uid) is None
    assert await pool.fetchval("SELECT count(*) FROM headrace.embeddings WHERE job_uid = $1", b.job.uid) == 1


async def test_a_worker_completes_a_run_with_its_namespace_credential(
    pool: Pool, two_tenants: tuple[Tenant, Tenant], tmp_path: Path
) -> None:
    a, b = two_tenants
    (tmp_path / "keepers.md").write_text("# Keepers\n\nThe lighthouse keeper trims the lamp at dusk.")
    (tmp_path / "fog.txt").write_text("Foghorns sound when the lighthouse lamp cannot be seen.")
    run = await jobs.start_run(pool, a.job, reason="test")
    space = await _job_space(pool, a.job)  # embeddings on (the built-in model): the spec's default
    tenant_pool = await create_pool(a.url, max_size=3)
    try:
        worker = Worker(DirectStore(tenant_pool, a.job.uid), volume_root=tmp_path, poll_seconds=0.05)
        assert await worker.run() == EXIT_DRAINED
        # The same credential, told to work on B's job, finds no job at all.
        assert await jobs.get_job(tenant_pool, b.job.uid) is None
    finally:
        await tenant_pool.close()
    state = await jobs.run_state(pool, a.job.uid, run)
    assert state is not None and state.finished and state.error is None
    assert (state.summary.added, state.summary.failed) == (2, 0)
    hits = await search.search(pool, "lighthouse", where=search.SearchFilter(job_uid=a.job.uid))
    assert {h.uri for h in hits.hits} == {"keepers.md", "fog.txt"}
    # Written with the namespace's credential: every chunk has its vector, in the job's space.
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM headrace.chunks c JOIN headrace.embeddings e ON e.chunk_id = c.id "
            "WHERE c.job_uid = $1 AND e.space_id = $2",
            a.job.uid,
            space.id,
        )
        == await pool.fetchval("SELECT count(*) FROM headrace.chunks WHERE job_uid = $1", a.job.uid)
        > 0
    )
    assert set(
        await pool.fetchval(
            "SELECT array_agg(DISTINCT embedding_space) FROM headrace.documents WHERE job_uid = $1", a.job.uid
        )
    ) == {space.id}
    assert await jobs.job_phase(pool, a.job.uid) == ("Succeeded", run)


async def test_a_role_without_a_tenant_mapping_sees_nothing(pool: Pool, dsn: str, prefix: str) -> None:
    """The policies apply to every role but the owner: a stray login role of the server reads no row."""
    await tenants.prepare(pool, prefix=prefix)
    namespace_uid = uuid.uuid4()
    await jobs.register_job(
        pool, uid=uuid.uuid4(), namespace="x", name="y", generation=1, spec=volume_spec(), namespace_uid=namespace_uid
    )
    stray = f"{prefix}stray"
    await pool.execute(f'CREATE ROLE "{stray}" LOGIN IN ROLE "{tenants.group_role(prefix)}"')
    conn = await asyncpg.connect(tenants.TenantCredential(stray, "", datetime.now(UTC)).url(dsn))
    try:
        assert await conn.fetchval("SELECT count(*) FROM headrace.jobs") == 0
    finally:
        await conn.close()


async def test_disabling_the_role_when_the_namespace_has_no_live_job(
    pool: Pool, two_tenants: tuple[Tenant, Tenant]
) -> None:
    a, _ = two_tenants
    namespace_uid = a.job.namespace_uid
    assert namespace_uid is not None
    assert not await tenants.disable(pool, namespace_uid=namespace_uid, prefix=a.url.split("@")[0].split("//")[1][:10])
    await jobs.retain_job_data(pool, a.job.uid)
    role = a.url.split("//", 1)[1].split(":", 1)[0]
    prefix = role[: role.index("ns_")]
    assert await tenants.disable(pool, namespace_uid=namespace_uid, prefix=prefix)
    assert await pool.fetchval("SELECT rolcanlogin FROM pg_roles WHERE rolname = $1", role) is False


async def test_a_createrole_owner_that_is_not_superuser_manages_tenants(
    owner_database: tuple[str, str, str],
) -> None:
    """As on a managed Postgres: the installation's user owns the database and has CREATEROLE, nothing more."""
    owner_url, _, prefix = owner_database
    pool = await create_pool(owner_url)
    try:
        from headrace.store import migrate

        await migrate.migrate(pool)
        await tenants.check_privilege(pool)
        await tenants.prepare(pool, prefix=prefix)
        a = await tenant(pool, owner_url, prefix, "team-a")
        b = await tenant(pool, owner_url, prefix, "team-b")
        conn = await asyncpg.connect(a.url)
        try:
            assert [r["uid"] for r in await conn.fetch("SELECT uid FROM headrace.jobs")] == [a.job.uid]
        finally:
            await conn.close()
        # Rotation and disabling work with the owner's ADMIN OPTION on the roles it created.
        namespace_uid = b.job.namespace_uid
        assert namespace_uid is not None
        rotated = await tenants.ensure_credential(
            pool,
            namespace="team-b",
            namespace_uid=namespace_uid,
            prefix=prefix,
            rotate_after=None,
            force=True,
            now=datetime.now(UTC),
        )
        assert rotated is not None
        await jobs.retain_job_data(pool, b.job.uid)
        assert await tenants.disable(pool, namespace_uid=namespace_uid, prefix=prefix)
    finally:
        await pool.close()


async def test_an_owner_without_createrole_is_told_the_way_out(postgres_server: str, prefix: str, dsn: str) -> None:
    plain = f"{prefix}plain"
    admin = await asyncpg.connect(postgres_server)
    try:
        await admin.execute(f'CREATE ROLE "{plain}" LOGIN')
    finally:
        await admin.close()
    pool = await create_pool(tenants.TenantCredential(plain, "", datetime.now(UTC)).url(dsn))
    try:
        with pytest.raises(tenants.MissingPrivilege, match=r"CREATEROLE.*tenant-credentials=shared"):
            await tenants.check_privilege(pool)
    finally:
        await pool.close()
