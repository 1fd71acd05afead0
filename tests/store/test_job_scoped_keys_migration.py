"""Migration 0010 on a database that already holds data, forged rows among it: the forged rows go, the
rest stays, and the job-scoped keys hold afterwards (tests/security/test_job_scoped_keys.py probes them
with a tenant's role)."""

import uuid

import asyncpg
import pytest

from headrace.store import documents, jobs, migrate, runs, vectors
from headrace.store.db import create_pool
from tests.conftest import add_columns_this_release_writes, volume_spec

pytestmark = pytest.mark.postgres

KEYS = {"chunks_document_job_fkey", "embeddings_chunk_job_fkey"}


async def test_the_migration_removes_forged_rows_keeps_the_rest_and_holds_afterwards(
    empty_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    shipped = migrate.available_migrations()
    pool = await create_pool(empty_dsn)
    try:
        monkeypatch.setattr(migrate, "available_migrations", lambda: [m for m in shipped if m.version < 10])
        await migrate.migrate(pool)
        assert await migrate.current_version(pool) == 9
        await add_columns_this_release_writes(pool)
        a, b = [
            await jobs.register_job(
                pool,
                uid=uuid.uuid4(),
                namespace=ns,
                name="handbook",
                generation=1,
                spec=volume_spec(),
            )
            for ns in ("team-a", "team-b")
        ]
        assert await vectors.available(pool)
        space = await vectors.space_for(pool, "test-model", 3)
        for job, text in ((a, "keepers trim the lamp"), (b, "the merger closes friday")):
            run = await runs.start_run(pool, job, reason="test")
            await documents.store_document(
                pool,
                job.uid,
                run,
                documents.DocumentRecord(
                    uri=f"{job.namespace}.txt",
                    title=job.namespace,
                    content_hash="h",
                    fingerprint="f",
                    format="text",
                    bytes=len(text),
                    chunks=[documents.ChunkRecord(0, text), documents.ChunkRecord(1, "more of " + text)],
                ),
                space=space,
                embeddings=[[0.1, 0.2, 0.3], [0.3, 0.2, 0.1]],
            )
        b_document, b_chunk = await pool.fetchrow(
            "SELECT d.id, min(c.id) FROM headrace.documents d JOIN headrace.chunks c ON c.document_id = d.id "
            "WHERE d.job_uid = $1 GROUP BY d.id",
            b.uid,
        )
        # What a tenant's role could write before 0010: rows of job A pointing at job B's document and chunk.
        forged_chunk = await pool.fetchval(
            "INSERT INTO headrace.chunks (document_id, job_uid, ordinal, content, config) "
            "VALUES ($1, $2, 7, 'forged', 'english') RETURNING id",
            b_document,
            a.uid,
        )
        await pool.execute("DELETE FROM headrace.embeddings WHERE chunk_id = $1", b_chunk)
        await pool.execute(
            "INSERT INTO headrace.embeddings (chunk_id, job_uid, space_id, embedding) VALUES ($1, $2, $3, '[1,1,1]')",
            b_chunk,
            a.uid,
            space.id,
        )
        rows = "SELECT id, job_uid, document_id, content FROM headrace.chunks WHERE id <> $1 ORDER BY id"
        kept = await pool.fetch(rows, forged_chunk)
        kept_vectors = await pool.fetch(
            "SELECT chunk_id, job_uid FROM headrace.embeddings WHERE chunk_id <> $1", b_chunk
        )

        monkeypatch.setattr(migrate, "available_migrations", lambda: shipped)
        assert [m.version for m in await migrate.migrate(pool)] == [m.version for m in shipped if m.version >= 10]
        assert await migrate.migrate(pool) == []  # a second run changes nothing

        assert await pool.fetch(rows, forged_chunk) == kept
        assert await pool.fetchval("SELECT count(*) FROM headrace.chunks WHERE id = $1", forged_chunk) == 0
        assert await pool.fetch("SELECT chunk_id, job_uid FROM headrace.embeddings") == kept_vectors
        assert {
            r["conname"]: r["def"]
            for r in await pool.fetch(
                "SELECT conname, pg_get_constraintdef(oid) AS def FROM pg_constraint WHERE contype = 'f' "
                "AND conrelid IN ('headrace.chunks'::regclass, 'headrace.embeddings'::regclass) "
                "AND confrelid <> 'headrace.embedding_spaces'::regclass"
            )
        } == {
            "chunks_document_job_fkey": "FOREIGN KEY (document_id, job_uid) REFERENCES headrace.documents(id, job_uid) "
            "ON UPDATE CASCADE ON DELETE CASCADE",
            "embeddings_chunk_job_fkey": "FOREIGN KEY (chunk_id, job_uid) REFERENCES headrace.chunks(id, job_uid) "
            "ON UPDATE CASCADE ON DELETE CASCADE",
        }
        with pytest.raises(asyncpg.ForeignKeyViolationError):
            await pool.execute(
                "INSERT INTO headrace.chunks (document_id, job_uid, ordinal, content, config) "
                "VALUES ($1, $2, 7, 'forged', 'english')",
                b_document,
                a.uid,
            )
        # Deleting a document still takes its chunks and their vectors with it.
        await pool.execute("DELETE FROM headrace.documents WHERE id = $1", b_document)
        assert await pool.fetchval("SELECT count(*) FROM headrace.chunks WHERE job_uid = $1", b.uid) == 0
        assert await pool.fetchval("SELECT count(*) FROM headrace.embeddings WHERE job_uid = $1", b.uid) == 0
    finally:
        await pool.close()
