"""The Postgres work queue: lease with SKIP LOCKED, heartbeat, ack, fail with backoff, dead-letter.

Delivery is at-least-once. A lease is identified by a fresh token, so a worker whose lease
expired and was taken over cannot ack or fail the task it no longer holds.
"""

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from headrace.redaction import redact
from headrace.store.db import Connection, Pool

TaskKind = Literal["discover", "ingest"]


@dataclass(frozen=True)
class NewTask:
    """A task to enqueue. `dedupe_key` makes enqueueing idempotent within a run."""

    kind: TaskKind
    dedupe_key: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class Task:
    """A leased task."""

    id: int
    job_uid: uuid.UUID
    run: int
    kind: TaskKind
    payload: dict[str, Any]
    attempts: int
    max_attempts: int
    lease_token: uuid.UUID

    @property
    def last_attempt(self) -> bool:
        """Whether a failure now makes the task dead."""
        return self.attempts >= self.max_attempts


async def enqueue(
    conn: Connection | Pool, job_uid: uuid.UUID, run: int, tasks: list[NewTask], *, max_attempts: int
) -> int:
    """Add tasks to a run, skipping any whose dedupe key the run already has. Returns how many were new."""
    if not tasks:
        return 0
    rows = await conn.fetch(
        insert_tasks(
            "SELECT $1, $2, t.kind, t.dedupe_key, t.payload, $6 "
            "FROM unnest($3::text[], $4::text[], $5::jsonb[]) AS t(kind, dedupe_key, payload)"
        )
        + " RETURNING id",
        job_uid,
        run,
        *task_arrays(tasks),
        max_attempts,
    )
    return len(rows)


def insert_tasks(rows: str) -> str:
    """The INSERT that enqueues tasks, given a query of their (job_uid, run, kind, dedupe_key, payload,
    max_attempts): a dedupe key the run has already is skipped. `enqueue` runs it alone; `runs.start_run`
    inside the one statement that starts a job's first run."""
    return (
        "INSERT INTO headrace.tasks (job_uid, run, kind, dedupe_key, payload, max_attempts) "
        f"{rows} ON CONFLICT (job_uid, run, dedupe_key) DO NOTHING"
    )


def task_arrays(tasks: list[NewTask]) -> tuple[list[str], list[str], list[Any]]:
    """The tasks as the three arrays `insert_tasks`' rows unnest: kinds, dedupe keys and payloads."""
    return [t.kind for t in tasks], [t.dedupe_key for t in tasks], [t.payload for t in tasks]


_LEASE = """
    WITH {acked}expired AS (
        SELECT id FROM headrace.tasks
        WHERE job_uid = $1 AND state = 'leased' AND lease_expires_at < now() AND attempts < max_attempts
          AND run = (SELECT current_run FROM headrace.jobs WHERE uid = $1){not_acked}
        ORDER BY lease_expires_at
        LIMIT $2
        FOR UPDATE SKIP LOCKED
    ),
    pending AS (
        SELECT id FROM headrace.tasks
        WHERE job_uid = $1 AND state = 'pending' AND available_at <= now()
          AND run = (SELECT current_run FROM headrace.jobs WHERE uid = $1)
        ORDER BY available_at, id
        LIMIT $2
        FOR UPDATE SKIP LOCKED
    ),
    ready AS (
        (SELECT id FROM expired) UNION ALL (SELECT id FROM pending) LIMIT $2
    ),
    leased AS (
        UPDATE headrace.tasks t
        SET state = 'leased', attempts = t.attempts + 1, lease_token = gen_random_uuid(),
            leased_by = $3, lease_expires_at = now() + $4::interval
        WHERE t.id = ANY (ARRAY(SELECT id FROM ready))
        RETURNING t.id, t.job_uid, t.run, t.kind, t.payload, t.attempts, t.max_attempts, t.lease_token
    )
    SELECT *{acked_ids} FROM leased{union}
"""

_ACK_MANY = """
        UPDATE headrace.tasks a
        SET state = 'done', finished_at = coalesce(a.finished_at, now()), lease_expires_at = NULL
        FROM unnest({ids}::bigint[], {tokens}::uuid[]) AS held(id, token)
        WHERE a.id = held.id AND a.lease_token = held.token AND a.state IN ('leased', 'done')
          AND ({job}::uuid IS NULL OR a.job_uid::text = {job}::text)
        RETURNING a.id
"""
"""Ack tasks by id and lease token (of the job, when it is not NULL). The job is compared as text so that
no index serves the test, which leaves the primary key the only way in. Compared as uuids, a plan made
while the table had no statistics (a new queue's first minute; asyncpg's prepared statement keeps such a
plan for the connection's life) read every task of the job through `tasks_run_finished`, old row
versions included, to ack ten: an ack cost more with every task the run had done."""

_ACKED = "acked AS (" + _ACK_MANY.format(ids="$5", tokens="$6", job="$1") + "    ),\n    "


async def lease(pool: Pool, job_uid: uuid.UUID, *, worker: str, lease_seconds: float, limit: int = 1) -> list[Task]:
    """Lease up to `limit` ready tasks of the job's current run: leased ones whose lease expired first, then
    pending ones whose time has come. A task of an older run is never taken: it would record the old run's
    number on its documents, and `sync: mirror` deletes what the current run did not record.

    Each kind is picked in the order of its own partial index (`tasks_leased`, `tasks_ready`), so a lease
    reads only the rows it takes, however many tasks of the job are already done. (One `OR` of the two
    made Postgres walk the primary key past every done task: the cost of a lease grew with the queue.)
    The rows picked are updated by `id = ANY (ARRAY(...))`, which is a primary-key lookup in every plan.
    A join to them was one only in the plans made for the parameters at hand: asyncpg prepares each
    statement, and after five runs Postgres may keep a generic plan, which cannot see `LIMIT $2`, guessed
    a tenth of the table's rows, and hash-joined them to a sequential scan of every task of every job.
    """
    rows = await pool.fetch(
        _LEASE.format(acked="", not_acked="", acked_ids="", union=""),
        job_uid,
        limit,
        worker,
        timedelta(seconds=lease_seconds),
    )
    return [Task(**dict(row)) for row in sorted(rows, key=lambda r: r["id"])]


async def ack_and_lease(
    pool: Pool, job_uid: uuid.UUID, done: list[Task], *, worker: str, lease_seconds: float, limit: int
) -> tuple[set[int], list[Task]]:
    """`ack_many(done)` and `lease(limit)` in one statement, one round trip: what a worker that leases ahead
    does when it has worked through what it held. Returns the ids acked and the tasks leased."""
    if not done:
        return set(), await lease(pool, job_uid, worker=worker, lease_seconds=lease_seconds, limit=limit)
    # The acked tasks are kept out of the expired ones: one statement must not update a row twice.
    rows = await pool.fetch(
        _LEASE.format(
            acked=_ACKED,
            not_acked="\n          AND id <> ALL($5::bigint[])",
            acked_ids=", NULL::bigint AS acked",
            union="\n    UNION ALL SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, id FROM acked",
        ),
        job_uid,
        limit,
        worker,
        timedelta(seconds=lease_seconds),
        [t.id for t in done],
        [t.lease_token for t in done],
    )
    acked = {row["acked"] for row in rows if row["acked"] is not None}
    leased = [Task(**{k: v for k, v in dict(row).items() if k != "acked"}) for row in rows if row["acked"] is None]
    return acked, sorted(leased, key=lambda t: t.id)


async def heartbeat(
    pool: Pool, tasks: list[Task], *, lease_seconds: float, job_uid: uuid.UUID | None = None
) -> set[int]:
    """Extend the leases still held (of tasks of `job_uid` only, when given); returns the ids of the tasks
    whose lease was extended."""
    rows = await pool.fetch(
        """
        UPDATE headrace.tasks SET lease_expires_at = now() + $3::interval
        WHERE id = ANY($1::bigint[]) AND lease_token = ANY($2::uuid[]) AND state = 'leased'
          AND ($4::uuid IS NULL OR job_uid = $4)
        RETURNING id
        """,
        [t.id for t in tasks],
        [t.lease_token for t in tasks],
        timedelta(seconds=lease_seconds),
        job_uid,
    )
    return {row["id"] for row in rows}


async def ack(pool: Pool | Connection, task: Task) -> bool:
    """Mark a task done. False when the lease was lost, in which case someone else owns the task.

    The done task keeps its last lease token, so an ack repeated by its holder (its reply was lost
    when the connection broke, see `store.outage`) is true again rather than "lost".
    """
    status = await pool.execute(
        """
        UPDATE headrace.tasks
        SET state = 'done', finished_at = coalesce(finished_at, now()), lease_expires_at = NULL
        WHERE id = $1 AND lease_token = $2 AND state IN ('leased', 'done')
        """,
        task.id,
        task.lease_token,
    )
    return status == "UPDATE 1"


async def ack_many(pool: Pool | Connection, tasks: list[Task], *, job_uid: uuid.UUID | None = None) -> set[int]:
    """Mark several tasks done (of `job_uid` only, when given) in one round trip. Returns the ids acked; a task
    missing from it lost its lease."""
    if not tasks:
        return set()
    rows = await pool.fetch(
        _ACK_MANY.format(ids="$1", tokens="$2", job="$3"),
        [t.id for t in tasks],
        [t.lease_token for t in tasks],
        job_uid,
    )
    return {row["id"] for row in rows}


async def cancel_superseded(conn: Connection, job_uid: uuid.UUID, run: int, why: str) -> int:
    """Cancel the unfinished tasks of runs older than `run`, with `why` as their last error (called as
    `run` starts, by `runs.start_run`). Returns how many.

    A leased one loses its lease token, so its worker's heartbeat, ack, fail and release all find it
    gone: the worker abandons it, and nothing hands it back to be leased again.
    """
    status = await conn.execute(
        """
        UPDATE headrace.tasks
        SET state = 'cancelled', finished_at = now(), lease_token = NULL, lease_expires_at = NULL, last_error = $3
        WHERE job_uid = $1 AND run < $2 AND state IN ('pending', 'leased')
        """,
        job_uid,
        run,
        why,
    )
    return int(status.split()[-1])


async def discovery_error(conn: Pool | Connection, job_uid: uuid.UUID, run: int) -> str | None:
    """Why `run`'s discovery task died ('unknown error' when it recorded none), or None when it did not die."""
    error: str | None = await conn.fetchval(
        "SELECT coalesce(last_error, 'unknown error') FROM headrace.tasks "
        "WHERE job_uid = $1 AND run = $2 AND kind = 'discover' AND state = 'dead'",
        job_uid,
        run,
    )
    return error


async def lock_run_if_current(conn: Connection, job_uid: uuid.UUID, run: int) -> bool:
    """Whether `run` is the job's current run, holding that true until the caller's transaction ends.

    The share lock makes a concurrent `start_run` (which updates the job row) wait, so tasks enqueued
    under it are either cancelled by the new run or never enqueued at all.
    """
    current = await conn.fetchval("SELECT current_run FROM headrace.jobs WHERE uid = $1 FOR SHARE", job_uid)
    return bool(current == run)


async def not_of_job(conn: Pool | Connection, job_uid: uuid.UUID, ids: list[int]) -> set[int]:
    """Which of these task ids are not tasks of the job (whatever they are, or whether they exist)."""
    rows = await conn.fetch("SELECT id FROM headrace.tasks WHERE job_uid = $1 AND id = ANY($2::bigint[])", job_uid, ids)
    return set(ids) - {row["id"] for row in rows}


async def drop_open(conn: Pool | Connection, job_uid: uuid.UUID, *, run: int | None = None) -> None:
    """Delete the job's pending and leased tasks (of `run` only, when given): nobody is to work on them
    any more. A worker holding one finds its lease gone."""
    if run is None:
        await conn.execute("DELETE FROM headrace.tasks WHERE job_uid = $1 AND state IN ('pending', 'leased')", job_uid)
    else:
        await conn.execute(
            "DELETE FROM headrace.tasks WHERE job_uid = $1 AND run = $2 AND state IN ('pending', 'leased')",
            job_uid,
            run,
        )


async def delete_some_finished(conn: Pool | Connection, job_uid: uuid.UUID, limit: int, *, up_to_run: int) -> int:
    """Delete up to `limit` finished tasks (done, dead or cancelled) of the job's runs up to `up_to_run`;
    returns how many."""
    status = await conn.execute(
        "DELETE FROM headrace.tasks WHERE id IN (SELECT id FROM headrace.tasks WHERE job_uid = $1 AND run <= $2 "
        "AND state NOT IN ('pending', 'leased') LIMIT $3)",
        job_uid,
        up_to_run,
        limit,
    )
    return int(status.split()[-1])


async def delete_some(conn: Pool | Connection, job_uid: uuid.UUID, limit: int) -> int:
    """Delete up to `limit` of the job's tasks, whatever their state; returns how many."""
    status = await conn.execute(
        "DELETE FROM headrace.tasks WHERE id IN (SELECT id FROM headrace.tasks WHERE job_uid = $1 LIMIT $2)",
        job_uid,
        limit,
    )
    return int(status.split()[-1])


def backoff_seconds(attempts: int, *, base: float, cap: float) -> float:
    """Exponential backoff after the given number of attempts: base, 2·base, 4·base, ... up to cap."""
    return float(min(cap, base * 2 ** max(0, attempts - 1)))


async def fail(
    pool: Pool, task: Task, error: str, *, backoff: float, permanent: bool = False, job_uid: uuid.UUID | None = None
) -> Literal["retry", "dead", "lost"]:
    """Record a failed attempt: retry after `backoff` seconds, or dead when attempts are used up or the
    error is `permanent` (a source folder that does not exist will not appear on a retry).

    Like `ack`, the task keeps the failed lease's token until it is leased again, so a repeated call
    by the same holder answers the same instead of "lost" (a dead task's documents must be recorded).
    """
    row = await pool.fetchrow(
        """
        WITH failed AS (
            UPDATE headrace.tasks
            SET state = CASE WHEN attempts >= max_attempts OR $5 THEN 'dead' ELSE 'pending' END,
                available_at = now() + $3::interval,
                finished_at = CASE WHEN attempts >= max_attempts OR $5 THEN now() END,
                last_error = $4, lease_expires_at = NULL
            WHERE id = $1 AND lease_token = $2 AND state = 'leased' AND ($6::uuid IS NULL OR job_uid = $6)
            RETURNING state
        )
        SELECT state FROM failed
        UNION ALL
        SELECT state FROM headrace.tasks WHERE id = $1 AND lease_token = $2 AND state IN ('pending', 'dead')
          AND ($6::uuid IS NULL OR job_uid = $6)
        """,
        task.id,
        task.lease_token,
        timedelta(seconds=backoff),
        redact(error)[:4000],
        permanent,
        job_uid,
    )
    if row is None:
        return "lost"
    return "dead" if row["state"] == "dead" else "retry"


async def release(pool: Pool, task: Task, *, job_uid: uuid.UUID | None = None) -> bool:
    """Give a task back unprocessed (on shutdown), without counting the attempt (of `job_uid` only, when given)."""
    status = await pool.execute(
        """
        UPDATE headrace.tasks
        SET state = 'pending', attempts = attempts - 1, available_at = now(),
            lease_token = NULL, lease_expires_at = NULL, leased_by = NULL
        WHERE id = $1 AND lease_token = $2 AND state = 'leased' AND ($3::uuid IS NULL OR job_uid = $3)
        """,
        task.id,
        task.lease_token,
        job_uid,
    )
    return status == "UPDATE 1"


async def reap_expired(pool: Pool, job_uid: uuid.UUID) -> list[Task]:
    """Dead-letter tasks whose lease expired on their last attempt: their worker died every time.

    Returns them, so the caller can record their documents as failed.
    """
    rows = await pool.fetch(
        """
        UPDATE headrace.tasks
        SET state = 'dead', finished_at = now(), lease_token = NULL, lease_expires_at = NULL,
            last_error = coalesce(last_error || '; ', '')
                         || format('lease expired on attempt %s of %s: the worker died or hung',
                                   attempts, max_attempts)
        WHERE job_uid = $1 AND state = 'leased' AND lease_expires_at < now()
          AND attempts >= max_attempts
        RETURNING id, job_uid, run, kind, payload, attempts, max_attempts,
                  '00000000-0000-0000-0000-000000000000'::uuid AS lease_token
        """,
        job_uid,
    )
    return [Task(**dict(row)) for row in rows]


async def counts(pool: Pool | Connection, job_uid: uuid.UUID) -> dict[str, int]:
    """Tasks of a job by state: pending, leased, done, dead and cancelled (zero when absent)."""
    rows = await pool.fetch(
        "SELECT state, count(*) AS n FROM headrace.tasks WHERE job_uid = $1 GROUP BY state", job_uid
    )
    result = dict.fromkeys(("pending", "leased", "done", "dead", "cancelled"), 0)
    result.update({row["state"]: row["n"] for row in rows})
    return result


async def is_drained(pool: Pool | Connection, job_uid: uuid.UUID) -> bool:
    """Nothing left to do: no task pending (ready or waiting for a retry) or leased."""
    return not await pool.fetchval(
        "SELECT EXISTS (SELECT 1 FROM headrace.tasks WHERE job_uid = $1 AND state IN ('pending', 'leased'))",
        job_uid,
    )
