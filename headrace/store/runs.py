"""How runs end when their workers cannot end them, and runs asked for by a person rather than a spec change.

The workers close a run that drains (`jobs.finish_run`). A run whose worker Job failed never drains, so
the operator closes it here, in the same row, with the Job's reason: that row stays the one owner of
how the run ended. A run requested by annotation (run now, retry failed) is started here once per value.
"""

import uuid
from typing import Literal

from headrace.model.events import Reason, run_failed
from headrace.store import jobs, queue
from headrace.store.db import Pool
from headrace.store.jobs import JobRecord

RequestKind = Literal["run", "retry"]


async def close_run(pool: Pool, uid: uuid.UUID, run: int, *, reason: str, message: str) -> bool:
    """Close an open run as failed with `reason` (a CamelCase word) and `message`; False when it was closed
    already (a worker finished it, or an earlier call did). Its unfinished tasks are dropped."""
    async with pool.acquire() as conn, conn.transaction():
        closed = await conn.fetchval(
            "UPDATE headrace.runs SET finished_at = now(), error = $3, end_reason = $4 "
            "WHERE job_uid = $1 AND run = $2 AND finished_at IS NULL RETURNING run",
            uid,
            run,
            message,
            reason,
        )
        if closed is None:
            return False
        # Nobody works on them any more: a lease would only make the job look busy.
        await queue.drop_open(conn, uid, run=run)
        await jobs.record_event(conn, uid, run, "Warning", Reason.RUN_FAILED, run_failed(run, message))
    return True


async def record_invalid_spec(
    pool: Pool, *, uid: uuid.UUID, namespace: str, name: str, generation: int, spec: object, error: str
) -> None:
    """Remember that the operator refused this spec, so the API shows the job as Failed with the reason.

    A job seen for the first time is registered with its spec as given; a known one keeps its last valid
    spec (what its workers and data were built from), marked with the error.
    """
    async with pool.acquire() as conn, conn.transaction():
        before = await conn.fetchval("SELECT spec_error FROM headrace.jobs WHERE uid = $1", uid)
        await conn.execute(
            """
            INSERT INTO headrace.jobs (uid, namespace, name, generation, spec, spec_error)
            VALUES ($1, $2, $3, $4, $5, $6)
            ON CONFLICT (uid) DO UPDATE
            SET generation = excluded.generation, spec_error = excluded.spec_error, updated_at = now()
            """,
            uid,
            namespace,
            name,
            generation,
            spec,
            error,
        )
        if before != error:
            run = await conn.fetchval("SELECT current_run FROM headrace.jobs WHERE uid = $1", uid)
            await jobs.record_event(conn, uid, run, "Warning", Reason.INVALID_SPEC, error)


async def started_for(pool: Pool, uid: uuid.UUID, kind: RequestKind, value: str) -> int | None:
    """The run already started for this request, if any."""
    run = await pool.fetchval(
        "SELECT run FROM headrace.runs WHERE job_uid = $1 AND request = $2", uid, f"{kind}:{value}"
    )
    return None if run is None else int(run)


async def start_requested_run(pool: Pool, job: JobRecord, kind: RequestKind, value: str) -> int:
    """Start the run a `run-requested-at` or `retry-failed-requested-at` annotation asks for, once per value.

    A run-now run is a full, incremental run (unchanged documents are skipped by hash). A retry run
    re-processes only the documents that failed in the last run: it lists nothing, so it never deletes.
    """
    done = await started_for(pool, job.uid, kind, value)
    if done is not None:
        return done
    if kind == "run":
        return await jobs.start_run(pool, job, reason=f"requested at {value}", request=f"run:{value}")
    return await _start_retry(pool, job, value)


async def failed_uris(pool: Pool, uid: uuid.UUID, run: int) -> list[str]:
    """What a retry of `run` fetches again: its failed documents (an archive entry's archive as a whole)."""
    rows = await pool.fetch(
        "SELECT uri FROM headrace.documents WHERE job_uid = $1 AND run = $2 AND state = 'failed' ORDER BY uri",
        uid,
        run,
    )
    return sorted({row["uri"].split("!/", 1)[0] for row in rows})


async def _start_retry(pool: Pool, job: JobRecord, value: str) -> int:
    last = job.current_run
    uris = await failed_uris(pool, job.uid, last)
    reason = f"retry of the {len(uris)} failed documents of run {last}, requested at {value}"
    return await jobs.start_run(pool, job, reason=reason, request=f"retry:{value}", retry=jobs.Retry(last, uris))
