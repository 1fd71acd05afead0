"""Bounded history and big deletes: old runs pruned, and every large delete done in batches.

A job that runs on a schedule would otherwise keep every run, every finished task and every event
forever. And one `DELETE` of a big job (its documents cascading to their chunks) can run longer than
the pool's `command_timeout`, which cancels it: the finalizer would fail on every retry and the
IngestionJob could never go away. So each statement here touches at most a batch of rows.
"""

import uuid

from headrace.store.db import Connection, Pool

DOCUMENT_BATCH = 1000
"""Documents per statement. Each takes its chunks with it (ON DELETE CASCADE)."""

ROW_BATCH = 5000
"""Chunks, tasks or events per statement."""


async def _in_batches(conn: Pool | Connection, sql: str, *args: object, batch: int) -> int:
    """Run a `DELETE ... LIMIT $last` until it deletes fewer rows than a batch; returns the rows deleted."""
    total = 0
    while True:
        status = await conn.execute(sql, *args, batch)
        deleted = int(status.split()[-1])
        total += deleted
        if deleted < batch:
            return total


async def prune_runs(pool: Pool, job_uid: uuid.UUID, *, keep: int) -> int:
    """Keep the job's last `keep` runs; delete older finished runs with their tasks and events.

    Returns how many runs were pruned. Documents stay: a document's `run` names the last run that
    recorded it, and that may be an old one (an `incremental` job never deletes what left the source).
    """
    newest_pruned = await pool.fetchval(
        "SELECT run FROM headrace.runs WHERE job_uid = $1 ORDER BY run DESC OFFSET $2 LIMIT 1", job_uid, max(keep, 1)
    )
    if newest_pruned is None:
        return 0
    await _in_batches(
        pool,
        "DELETE FROM headrace.tasks WHERE id IN (SELECT id FROM headrace.tasks WHERE job_uid = $1 AND run <= $2 "
        "AND state NOT IN ('pending', 'leased') LIMIT $3)",
        job_uid,
        newest_pruned,
        batch=ROW_BATCH,
    )
    await _in_batches(
        pool,
        "DELETE FROM headrace.job_events WHERE id IN "
        "(SELECT id FROM headrace.job_events WHERE job_uid = $1 AND run <= $2 LIMIT $3)",
        job_uid,
        newest_pruned,
        batch=ROW_BATCH,
    )
    status = await pool.execute(
        "DELETE FROM headrace.runs WHERE job_uid = $1 AND run <= $2 AND finished_at IS NOT NULL",
        job_uid,
        newest_pruned,
    )
    return int(status.split()[-1])


async def delete_unseen(conn: Connection, job_uid: uuid.UUID, run: int) -> int:
    """`sync: mirror`: delete the job's documents that `run` did not record; returns how many.

    Walks the job's documents in URI order (its unique index), a batch per statement, so each
    statement stays short however many documents the job has and however many are deleted.
    """
    total, after = 0, ""
    while True:
        row = await conn.fetchrow(
            """
            WITH scanned AS (
                SELECT id, uri, run FROM headrace.documents
                WHERE job_uid = $1 AND uri > $3 ORDER BY uri LIMIT $4
            ),
            gone AS (
                DELETE FROM headrace.documents d USING scanned s WHERE d.id = s.id AND s.run < $2 RETURNING 1
            )
            SELECT (SELECT max(uri) FROM scanned) AS last, (SELECT count(*) FROM gone) AS deleted
            """,
            job_uid,
            run,
            after,
            DOCUMENT_BATCH,
        )
        assert row is not None
        total += int(row["deleted"])
        if row["last"] is None:
            return total
        after = row["last"]


async def delete_job(pool: Pool, job_uid: uuid.UUID) -> int:
    """Remove the job with its runs, tasks, documents, chunks and events; returns the rows deleted.

    Tasks go first, so a worker still running finds its leases gone; the job row goes last, taking
    with it (by cascade) anything a straggler wrote meanwhile. Safe to call again after a failure.
    """
    deleted = 0
    for table, batch in (
        ("tasks", ROW_BATCH),
        ("chunks", ROW_BATCH),
        ("documents", DOCUMENT_BATCH),
        ("job_events", ROW_BATCH),
    ):
        sql = f"DELETE FROM headrace.{table} WHERE id IN (SELECT id FROM headrace.{table} WHERE job_uid = $1 LIMIT $2)"
        deleted += await _in_batches(pool, sql, job_uid, batch=batch)
    status = await pool.execute("DELETE FROM headrace.jobs WHERE uid = $1", job_uid)
    return deleted + int(status.split()[-1])
