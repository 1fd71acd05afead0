"""Bounded history: old runs pruned with their tasks and events; big deletes done in batches."""

import uuid
from pathlib import Path

import kopf
import pytest

from headrace.operator import reconcile
from headrace.operator.handlers import glance
from headrace.operator.kube import KubeClient
from headrace.operator.reconcile import Operator
from headrace.operator.settings import OperatorSettings
from headrace.store import history, jobs, runs
from headrace.store.db import Pool, open_pool
from headrace.store.jobs import JobRecord
from headrace.worker.loop import EXIT_DRAINED, Worker
from headrace.worker.store import DirectStore
from tests.conftest import JobFactory, volume_spec


async def count(pool: Pool, table: str, job: JobRecord | uuid.UUID, where: str = "true") -> int:
    uid = job.uid if isinstance(job, JobRecord) else job
    column = "uid" if table == "jobs" else "job_uid"
    return int(await pool.fetchval(f"SELECT count(*) FROM headrace.{table} WHERE {column} = $1 AND {where}", uid))


async def test_starting_a_run_prunes_all_but_the_last_history_limit_runs(
    pool: Pool, make_job: JobFactory, tmp_path: Path
) -> None:
    for i in range(3):
        (tmp_path / f"doc{i}.txt").write_text(f"Document {i} about millraces.")
    job = await make_job(volume_spec(historyLimit=2, workers={"batchSize": 1}))
    for _ in range(4):
        await runs.start_run(pool, job, reason="again")
        assert await Worker(DirectStore(pool, job.uid), volume_root=tmp_path, poll_seconds=0.05).run() == EXIT_DRAINED

    assert [r.run for r in await jobs.list_runs(pool, job.uid)] == [4, 3]
    assert await count(pool, "tasks", job, "run < 3") == 0
    assert await count(pool, "job_events", job, "run < 3") == 0
    assert await count(pool, "tasks", job, "run = 4") == 4  # discover and three ingest tasks
    assert await count(pool, "documents", job) == 3  # documents are not history


async def test_pruning_never_touches_the_current_or_an_unfinished_run(pool: Pool, make_job: JobFactory) -> None:
    job = await make_job()
    for _ in range(3):
        await runs.start_run(pool, job, reason="again")  # each supersedes (and closes) the one before
    assert await history.prune_runs(pool, job.uid, keep=1) == 2
    assert [r.run for r in await jobs.list_runs(pool, job.uid)] == [3]
    assert await count(pool, "tasks", job, "run = 3 AND state = 'pending'") == 1  # its discover task


async def test_mirror_delete_walks_the_documents_in_batches(
    pool: Pool, make_job: JobFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = await make_job()
    await pool.execute(
        "INSERT INTO headrace.documents (job_uid, uri, state, run, outcome) "
        "SELECT $1, format('doc%s.txt', g), 'ingested', CASE WHEN g % 3 = 0 THEN 2 ELSE 1 END, 'added' "
        "FROM generate_series(1, 3000) g",
        job.uid,
    )
    monkeypatch.setattr(history, "DOCUMENT_BATCH", 128)
    async with pool.acquire() as conn, conn.transaction():
        assert await history.delete_unseen(conn, job.uid, 2) == 2000
    assert await count(pool, "documents", job) == 1000
    assert await count(pool, "documents", job, "run = 2") == 1000


async def test_the_finalizer_deletes_a_job_of_fifty_thousand_documents(
    pool: Pool, dsn: str, make_job: JobFactory
) -> None:
    job = await make_job(volume_spec(retention="Delete"))
    await runs.start_run(pool, job, reason="test")
    await pool.execute(
        "INSERT INTO headrace.documents (job_uid, uri, state, content_hash, run, outcome, chunk_count) "
        "SELECT $1, format('folder%s/doc%s.txt', g % 100, g), 'ingested', md5(g::text), 1, 'added', 2 "
        "FROM generate_series(1, 50000) g",
        job.uid,
    )
    await pool.execute(
        "INSERT INTO headrace.chunks (document_id, job_uid, ordinal, content, config) "
        "SELECT d.id, $1, o, format('Chunk %s of %s, on sluice gates and weirs.', o, d.uri), 'english' "
        "FROM headrace.documents d, generate_series(0, 1) o WHERE d.job_uid = $1",
        job.uid,
    )
    await pool.execute(
        "INSERT INTO headrace.tasks (job_uid, run, kind, dedupe_key, state) "
        "SELECT $1, 1, 'ingest', format('ingest:%s', g), 'done' FROM generate_series(1, 5000) g",
        job.uid,
    )
    statements: list[str] = []

    def log(query: object) -> None:
        statements.append(getattr(query, "query", ""))

    async with open_pool(dsn, min_size=1, max_size=1) as single:  # one connection: every statement is logged
        async with single.acquire() as conn:
            conn.add_query_logger(log)
        op = Operator(
            pool=single,
            kube=KubeClient(),
            config=OperatorSettings(database_url=dsn, worker_image="w", ingest_url="http://ingest:8081"),
        )
        body = kopf.Body({"metadata": {"uid": str(job.uid)}, "spec": {"retention": "Delete"}})
        assert await reconcile.finalize(op, glance(body)) == "Deleted"

    for table in ("jobs", "runs", "tasks", "documents", "chunks", "job_events"):
        assert await count(pool, table, job) == 0, table
    deletes = [s for s in statements if s.lstrip().startswith("DELETE")]
    # No statement deleted more than a batch: 50,000 documents, 100,000 chunks, 5,001 tasks.
    assert len(deletes) >= 50_000 / history.DOCUMENT_BATCH + 100_000 / history.ROW_BATCH + 5_001 / history.ROW_BATCH


async def test_writes_to_a_deleted_job_are_refused_by_name(pool: Pool, make_job: JobFactory) -> None:
    """What the operator's timer meets when the finalizer deleted the job under it: no foreign-key error."""
    job = await make_job()
    await runs.start_run(pool, job, reason="created")
    assert await jobs.record_events(pool, job.uid, 1, [("Normal", "Checked", "a live job")])
    await jobs.retain_job_data(pool, job.uid)
    assert not await jobs.record_events(pool, job.uid, 1, [("Normal", "Checked", "a retained job")])
    await jobs.delete_job_data(pool, job.uid)
    assert not await jobs.record_events(pool, job.uid, 1, [("Normal", "Checked", "a deleted job")])
    with pytest.raises(jobs.JobGone):
        await runs.start_run(pool, job, reason="schedule")
