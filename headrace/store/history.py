"""Bounded history and big deletes: old runs pruned, and every large delete done in batches.

A job that runs on a schedule would otherwise keep every run, every finished task and every event
forever. And one `DELETE` of a big job (its documents cascading to their chunks) can run longer than
the pool's `command_timeout`, which cancels it: the finalizer would fail on every retry and the
IngestionJob could never go away. So each statement here touches at most a batch of rows.

This module decides the batches; the statements that delete tasks, documents and chunks are their
tables' owners' (`queue`, `documents`). Those of runs, events and the job row are still written here.
"""

import functools
import uuid
from collections.abc import Awaitable, Callable

from headrace.store import documents, queue
from headrace.store.db import Connection, Pool

DOCUMENT_BATCH = 1000
"""Documents per statement. Each takes its chunks with it (ON DELETE CASCADE)."""

ROW_BATCH = 5000
"""Chunks, tasks or events per statement."""


async def _in_batches(delete: Callable[[int], Awaitable[int]], *, batch: int) -> int:
    """Call `delete(batch)`, a statement deleting at most a batch of rows, until it deletes fewer rows than
    a batch; returns the rows deleted."""
    total = 0
    while True:
        deleted = await delete(batch)
        total += deleted
        if deleted < batch:
            return total


async def _delete_some_events(conn: Pool | Connection, job_uid: uuid.UUID, limit: int, *, up_to_run: int | None) -> int:
    """Delete up to `limit` of the job's events (of its runs up to `up_to_run`, when given)."""
    if up_to_run is None:
        status = await conn.execute(
            "DELETE FROM headrace.job_events WHERE id IN "
            "(SELECT id FROM headrace.job_events WHERE job_uid = $1 LIMIT $2)",
            job_uid,
            limit,
        )
    else:
        status = await conn.execute(
            "DELETE FROM headrace.job_events WHERE id IN "
            "(SELECT id FROM headrace.job_events WHERE job_uid = $1 AND run <= $2 LIMIT $3)",
            job_uid,
            up_to_run,
            limit,
        )
    return int(status.split()[-1])


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
        functools.partial(queue.delete_some_finished, pool, job_uid, up_to_run=newest_pruned), batch=ROW_BATCH
    )
    await _in_batches(functools.partial(_delete_some_events, pool, job_uid, up_to_run=newest_pruned), batch=ROW_BATCH)
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
        last, deleted = await documents.delete_unseen_batch(conn, job_uid, run, after=after, limit=DOCUMENT_BATCH)
        total += deleted
        if last is None:
            return total
        after = last


async def delete_job(pool: Pool, job_uid: uuid.UUID) -> int:
    """Remove the job with its runs, tasks, documents, chunks and events; returns the rows deleted.

    Tasks go first, so a worker still running finds its leases gone; the job row goes last, taking
    with it (by cascade) anything a straggler wrote meanwhile. Safe to call again after a failure.
    """
    deleted = 0
    for delete, batch in (
        (functools.partial(queue.delete_some, pool, job_uid), ROW_BATCH),
        (functools.partial(documents.delete_some_chunks, pool, job_uid), ROW_BATCH),
        (functools.partial(documents.delete_some, pool, job_uid), DOCUMENT_BATCH),
        (functools.partial(_delete_some_events, pool, job_uid, up_to_run=None), ROW_BATCH),
    ):
        deleted += await _in_batches(delete, batch=batch)
    status = await pool.execute("DELETE FROM headrace.jobs WHERE uid = $1", job_uid)
    return deleted + int(status.split()[-1])
