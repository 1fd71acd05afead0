"""pgvector arriving after the tenants: an admin's later `CREATE EXTENSION vector` gives every existing
namespace role the vector table, confined to its own rows.

As on a managed Postgres: the installation's user owns the database with CREATEROLE and is no superuser,
so migration 0006 cannot create the (untrusted) extension and Headrace runs keyword-only while the
operator creates namespace roles. Then an admin creates the extension and `headrace migrate` runs again
(every `helm upgrade` does): `headrace.ensure_vectors()` creates the table and grants it to the tenant
group, whose members already exist.
"""

from pathlib import Path

import asyncpg
import pytest

from headrace.store import documents, jobs, migrate, search, tenants, vectors
from headrace.store.db import Pool, create_pool
from headrace.worker.loop import EXIT_DRAINED, Worker
from headrace.worker.store import DirectStore
from tests.security.test_tenant_isolation import tenant

pytestmark = pytest.mark.postgres


async def test_tenants_created_before_pgvector_embed_and_search_only_their_own_once_it_arrives(
    owner_database: tuple[str, str, str], tmp_path: Path
) -> None:
    owner_url, admin_url, prefix = owner_database
    pool: Pool = await create_pool(owner_url)
    try:
        await migrate.migrate(pool)
        assert not await vectors.available(pool), "the owner could create pgvector: this test needs it not to"
        await tenants.prepare(pool, prefix=prefix)
        a = await tenant(pool, owner_url, prefix, "team-a")
        b = await tenant(pool, owner_url, prefix, "team-b")

        # The admin creates the extension; the next migrate (a `helm upgrade`) picks it up.
        admin = await asyncpg.connect(admin_url)
        try:
            await admin.execute("CREATE EXTENSION vector")
        finally:
            await admin.close()
        await migrate.migrate(pool)
        assert await vectors.available(pool)

        # The operator creates each job's space before its workers start; B's data is written by the owner.
        embedding = a.job.spec.embedding
        assert embedding.model_name is not None and embedding.dimensions is not None
        space = await vectors.space_for(pool, embedding.model_name, embedding.dimensions)
        run_b = await jobs.start_run(pool, b.job, reason="test")
        secret = documents.ChunkRecord(0, "the lighthouse merger closes friday")
        record = documents.DocumentRecord(
            uri="secret-plans.txt", title="Secret plans", content_hash="h", fingerprint="f", format="text",
            bytes=35, chunks=[secret],
        )  # fmt: skip
        await documents.store_document(
            pool, b.job.uid, run_b, record, space=space, embeddings=[[0.5] * space.dimensions]
        )

        # A's worker, with the namespace credential made before the extension existed, embeds its documents.
        (tmp_path / "keepers.md").write_text("# Keepers\n\nThe lighthouse keeper trims the lamp at dusk.")
        (tmp_path / "fog.txt").write_text("Foghorns sound when the lighthouse lamp cannot be seen.")
        run_a = await jobs.start_run(pool, a.job, reason="test")
        tenant_pool = await create_pool(a.url, max_size=3)
        try:
            worker = Worker(DirectStore(tenant_pool, a.job.uid), volume_root=tmp_path, poll_seconds=0.05)
            assert await worker.run() == EXIT_DRAINED
            state = await jobs.run_state(pool, a.job.uid, run_a)
            assert state is not None and state.finished and state.error is None, state
            assert (state.summary.added, state.summary.failed) == (2, 0)
            chunks_a = await pool.fetchval("SELECT count(*) FROM headrace.chunks WHERE job_uid = $1", a.job.uid)
            embedded_a = await pool.fetchval(
                "SELECT count(*) FROM headrace.embeddings WHERE job_uid = $1 AND space_id = $2", a.job.uid, space.id
            )
            assert embedded_a == chunks_a > 0

            # With its credential, A reads its own vectors only, and semantic search finds only its chunks,
            # though B's vector is exactly the query's.
            seen = {r["job_uid"] for r in await tenant_pool.fetch("SELECT job_uid FROM headrace.embeddings")}
            assert seen == {a.job.uid}

            async def embed(_: vectors.Space, __: str) -> list[float]:
                return [0.5] * space.dimensions

            found = await search.search(tenant_pool, "lighthouse", mode="semantic", embed=embed, limit=50)
            assert {hit.uri for hit in found.hits} == {"keepers.md", "fog.txt"}
            deleted = await tenant_pool.execute("DELETE FROM headrace.embeddings WHERE job_uid = $1", b.job.uid)
            assert deleted == "DELETE 0"
        finally:
            await tenant_pool.close()
        # B's vector is untouched, and the owner (the API) still sees both.
        assert await pool.fetchval("SELECT count(*) FROM headrace.embeddings WHERE job_uid = $1", b.job.uid) == 1
    finally:
        await pool.close()
