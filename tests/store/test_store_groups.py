"""A group of documents stored in one transaction: each keeps its own "newer run wins", a refused one
fails alone, vectors go in with their chunks, and a connection lost mid-transaction loses nothing."""

import asyncio
import logging

import pytest

from headrace.store import documents, vectors
from headrace.store.db import Pool
from headrace.store.documents import ChunkRecord, DocumentRecord
from headrace.store.outage import ride_out
from tests.conftest import JobFactory


def _doc(uri: str, *texts: str, content_hash: str = "h1") -> DocumentRecord:
    return DocumentRecord(
        uri=uri,
        title=uri,
        content_hash=content_hash,
        fingerprint="f",
        format="text",
        bytes=1,
        chunks=[ChunkRecord(i, t) for i, t in enumerate(texts)],
    )


async def _stored(pool: Pool, uri: str) -> dict[str, object]:
    row = await pool.fetchrow(
        "SELECT d.run, d.state, d.outcome, d.content_hash, d.embedding_space, "
        "(SELECT array_agg(c.content ORDER BY c.ordinal) FROM headrace.chunks c WHERE c.document_id = d.id) AS chunks, "
        "(SELECT count(*) FROM headrace.embeddings e JOIN headrace.chunks c ON c.id = e.chunk_id "
        " WHERE c.document_id = d.id) AS vectors "
        "FROM headrace.documents d WHERE d.uri = $1",
        uri,
    )
    assert row is not None, uri
    return dict(row)


async def test_a_document_postgres_refuses_fails_alone_and_its_group_mates_are_stored(
    pool: Pool, make_job: JobFactory
) -> None:
    job = await make_job()
    space = await vectors.ensure_space(pool, "test-model", 3)
    group = [
        (_doc("a.txt", "first chunk", "second chunk"), [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]),
        (_doc("nul.txt", "text with a \x00 in it"), [[0.0, 0.0, 1.0]]),
        (_doc("short.txt", "one chunk"), [[1.0, 1.0]]),  # a vector of the wrong dimension
        (_doc("b.txt", "another chunk"), [[0.5, 0.5, 0.5]]),
    ]
    written = await documents.store_documents(pool, job.uid, 1, group, space=space)

    assert written.outcomes == {"a.txt": "added", "b.txt": "added"}
    assert set(written.refused) == {"nul.txt", "short.txt"}
    assert "refused" in written.refused["nul.txt"] and "0x00" in written.refused["nul.txt"]
    assert "not the 3 of model test-model" in written.refused["short.txt"]
    a, b = await _stored(pool, "a.txt"), await _stored(pool, "b.txt")
    assert (a["chunks"], a["vectors"], a["embedding_space"]) == (["first chunk", "second chunk"], 2, space.id)
    assert (b["chunks"], b["vectors"]) == (["another chunk"], 1)
    assert await pool.fetchval("SELECT count(*) FROM headrace.documents WHERE uri IN ('nul.txt', 'short.txt')") == 0
    nearest = await pool.fetchval(
        "SELECT c.content FROM headrace.embeddings e JOIN headrace.chunks c ON c.id = e.chunk_id "
        "ORDER BY e.embedding <=> '[0,1,0]'::vector LIMIT 1"
    )
    assert nearest == "second chunk"  # each vector went to its own chunk


async def test_a_document_a_newer_run_stored_meanwhile_is_left_as_that_run_wrote_it(
    pool: Pool, make_job: JobFactory
) -> None:
    job = await make_job()
    await documents.store_document(pool, job.uid, 2, _doc("a.txt", "written by run 2", content_hash="new"))
    await documents.store_document(pool, job.uid, 1, _doc("b.txt", "old b", content_hash="old"))

    written = await documents.store_documents(
        pool,
        job.uid,
        1,
        [(_doc("a.txt", "late write of run 1", content_hash="old"), []), (_doc("b.txt", "b again"), [])],
    )

    assert written.outcomes == {"b.txt": "added"} and written.refused == {}
    a = await _stored(pool, "a.txt")
    assert (a["run"], a["content_hash"], a["chunks"]) == (2, "new", ["written by run 2"])
    assert (await _stored(pool, "b.txt"))["chunks"] == ["b again"]


async def test_a_connection_lost_mid_group_is_retried_whole_and_stores_each_document_once(
    pool: Pool, make_job: JobFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="headrace.store.outage")
    job = await make_job()
    await documents.store_document(pool, job.uid, 1, _doc("a.txt", "a before"))
    group = [(_doc(f"d{i}.txt", f"chunk {i}.0", f"chunk {i}.1"), []) for i in range(5)]
    group.append((_doc("a.txt", "a after", content_hash="h2"), []))
    async with pool.acquire() as blocker:
        async with blocker.transaction():
            await blocker.execute("LOCK TABLE headrace.chunks IN SHARE MODE")  # the group's writes to chunks wait
            storing = asyncio.create_task(ride_out(documents.store_documents, pool, job.uid, 2, group))
            pid = None
            while pid is None:  # the group's backend, waiting on the lock after its SELECT ... FOR UPDATE
                await asyncio.sleep(0.05)
                pid = await blocker.fetchval(
                    "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND pid <> pg_backend_pid() "
                    "AND datname = current_database()"
                )
            await blocker.execute("SELECT pg_terminate_backend($1)", pid)  # as an outage would
        written = await asyncio.wait_for(storing, 60)  # the lock is gone with the transaction

    outage_records = [r.getMessage() for r in caplog.records if r.name == "headrace.store.outage"]
    assert outage_records == ["Lost database connection"]  # and retried once
    assert written.outcomes == {**{f"d{i}.txt": "added" for i in range(5)}, "a.txt": "updated"}
    for i in range(5):
        assert (await _stored(pool, f"d{i}.txt"))["chunks"] == [f"chunk {i}.0", f"chunk {i}.1"]
    assert (await _stored(pool, "a.txt"))["chunks"] == ["a after"]
    assert await pool.fetchval("SELECT count(*) FROM headrace.chunks") == 11
