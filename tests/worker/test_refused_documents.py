"""The worker stores documents a group per transaction: what a user sees of a group with a bad document."""

from pathlib import Path

from headrace.store import jobs, runs
from headrace.store.db import Pool
from headrace.worker.loop import EXIT_DRAINED
from tests.conftest import JobFactory, volume_spec
from tests.worker.test_worker import documents, run_worker, write

# Text whose first 8 KiB are clean, so extraction takes it, with a NUL character further on, which
# Postgres cannot store in a text column.
LATE_NUL = ("Plain prose about canal locks. " * 300 + "\x00" + "More prose about locks. " * 50).encode()


async def test_a_document_postgres_refuses_fails_with_the_reason_and_its_group_mates_are_ingested(
    pool: Pool, make_job: JobFactory, tmp_path: Path
) -> None:
    corpus = {f"lock{i}.txt": f"Lock {i} lifts barges. " * 200 for i in range(6)}
    write(tmp_path, {**corpus, "late-nul.txt": LATE_NUL})
    job = await make_job(volume_spec(workers={"batchSize": 10}))  # one task, one or two groups
    run = await runs.start_run(pool, job, reason="test")
    assert await run_worker(pool, job, tmp_path) == EXIT_DRAINED

    docs = await documents(pool, job)
    assert set(docs) == {*corpus, "late-nul.txt"}
    bad = docs.pop("late-nul.txt")
    assert bad["state"] == "failed" and "refused" in str(bad["error"]) and "0x00" in str(bad["error"])
    assert all(d["state"] == "ingested" and d["chunk_count"] == d["chunks"] > 0 for d in docs.values())
    embedded = await pool.fetchval(
        "SELECT count(*) FROM headrace.embeddings e JOIN headrace.chunks c ON c.id = e.chunk_id WHERE c.job_uid = $1",
        job.uid,
    )
    assert embedded == sum(d["chunks"] for d in docs.values())  # type: ignore[misc]
    task = await pool.fetchrow(
        "SELECT state, attempts FROM headrace.tasks WHERE job_uid = $1 AND kind = 'ingest'", job.uid
    )
    assert dict(task) == {"state": "done", "attempts": 1}  # the task itself never failed
    state = await jobs.run_state(pool, job.uid, run)
    assert state is not None and state.finished
    assert (state.summary.added, state.summary.failed) == (6, 1)
