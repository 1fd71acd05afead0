"""The run service: the one module that starts, supersedes and closes a job's runs.

Every writer of a run's row goes through here, and every one of them records how the run ended in
`end_reason` (`model.events.Reason`), from which the CR's conditions, the API, its event stream and the
metrics all read it:

- `start_run` begins a run, called by the operator (a new spec, a schedule, a request by annotation)
  and by local mode (`headrace run`); it closes the job's unfinished run as RunSuperseded;
- `finish_run` closes a drained run, called by the workers (through the ingest service in a cluster):
  RunSucceeded, DiscoveryFailed or FailurePolicyExceeded;
- `close_run` closes a run that cannot drain: the operator's when its worker Job failed (the Job's own
  Kubernetes reason), local mode's when it was interrupted (RunInterrupted).

The job's row (its current run) and its event log belong to `store/jobs.py`, the tasks to
`store/queue.py`; this module calls them, in the transaction that makes the change true.
"""

import uuid
from dataclasses import dataclass
from typing import Literal

from headrace.model import IngestionJobSpec, Progress
from headrace.model import events as messages
from headrace.model.events import Reason
from headrace.model.run import RunState
from headrace.redaction import redact
from headrace.store import documents, history, jobs, queue
from headrace.store.db import Connection, Pool
from headrace.store.jobs import JobGone, JobRecord

RequestKind = Literal["run", "retry"]


@dataclass(frozen=True)
class Retry:
    """A run that re-processes only the documents that failed in run `of_run`, instead of discovering."""

    of_run: int
    uris: list[str]


def _run_row(job: JobRecord, reason: str, request: str | None, retry: Retry | None) -> tuple[object, ...]:
    """A new run's row after its job and number: reason, fingerprint, request, retry_of, discovered and
    discovery_done (a retry starts with its documents known, so discovery is done)."""
    return (
        reason,
        job.spec.run_fingerprint(),
        request,
        retry.of_run if retry else None,
        len(retry.uris) if retry else 0,
        retry is not None,
    )


async def start_run(
    pool: Pool, job: JobRecord, *, reason: str, request: str | None = None, retry: Retry | None = None
) -> int:
    """Begin a new run: supersede the unfinished one and its work, and enqueue discovery (or, for a
    retry, the failed documents). `request` is the annotation value that asked for the run, if any."""
    if job.current_run == 0 and await _start_first_run(pool, job, reason=reason, request=request, retry=retry):
        return 1
    async with pool.acquire() as conn, conn.transaction():
        run = await jobs.advance_run(conn, job.uid)
        if run is None:
            raise JobGone(str(job.uid))
        if run > 1:  # a first run has nothing to supersede
            await _supersede(conn, job.uid, run)
        await conn.execute(
            "INSERT INTO headrace.runs "
            "(job_uid, run, reason, fingerprint, request, retry_of, discovered, discovery_done) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            job.uid,
            run,
            *_run_row(job, reason, request, retry),
        )
        await queue.enqueue(conn, job.uid, run, _first_tasks(job, retry), max_attempts=job.spec.retries.max_attempts)
        await jobs.record_event(conn, job.uid, run, "Normal", Reason.RUN_STARTED, messages.run_started(run, reason))
    # Every run is started here, by the operator (or local mode) with the owner's connection: the one
    # place to drop the runs before the last historyLimit, however those ended (drained, or closed by
    # the operator when their worker Job failed).
    if run > max(job.spec.history_limit, 1):  # runs are numbered from 1: no more of them than `run` exist
        await history.prune_runs(pool, job.uid, keep=job.spec.history_limit)
    return run


_FIRST_RUN = f"""
    WITH advanced AS (
        UPDATE headrace.jobs SET current_run = 1, updated_at = now() WHERE uid = $1 AND current_run = 0 RETURNING uid
    ), run AS (
        INSERT INTO headrace.runs (job_uid, run, reason, fingerprint, request, retry_of, discovered, discovery_done)
        SELECT uid, 1, $2::text, $3::text, $4::text, $5::int, $6::int, $7::bool FROM advanced
        RETURNING job_uid
    ), tasks AS (
        {
    queue.insert_tasks(
        "SELECT run.job_uid, 1, t.kind, t.dedupe_key, t.payload, $11::int "
        "FROM run, unnest($8::text[], $9::text[], $10::jsonb[]) AS t(kind, dedupe_key, payload)"
    )
}
    ), event AS (
        {jobs.insert_events("SELECT job_uid, 1, $12::text, $13::text, $14::text FROM run")}
    )
    SELECT EXISTS (SELECT 1 FROM run)
"""


async def _start_first_run(
    pool: Pool, job: JobRecord, *, reason: str, request: str | None, retry: Retry | None
) -> bool:
    """Start run 1 of a job that never ran, as `start_run` does, in one statement instead of six round trips
    (the first reconcile of every new IngestionJob of a burst): nothing to supersede or prune. False, having
    written nothing, when the job is gone or its run advanced meanwhile; `start_run` then goes the long way."""
    return bool(
        await pool.fetchval(
            _FIRST_RUN,
            job.uid,
            *_run_row(job, reason, request, retry),
            *queue.task_arrays(_first_tasks(job, retry)),
            job.spec.retries.max_attempts,
            "Normal",
            Reason.RUN_STARTED,
            redact(messages.run_started(1, reason)),
        )
    )


async def _supersede(conn: Connection, uid: uuid.UUID, run: int) -> None:
    """Close the job's unfinished run as RunSuperseded by `run`, and cancel the work of older runs: this
    run's discovery redoes it, and left alone it would record the old run."""
    superseded = messages.superseded_by(run)
    await queue.cancel_superseded(conn, uid, run, superseded)
    await conn.execute(
        "UPDATE headrace.runs SET finished_at = now(), error = $2, end_reason = $3 "
        "WHERE job_uid = $1 AND finished_at IS NULL",
        uid,
        superseded,
        Reason.RUN_SUPERSEDED,
    )


def _first_tasks(job: JobRecord, retry: Retry | None) -> list[queue.NewTask]:
    if retry is None:
        return [queue.NewTask("discover", "discover", {})]
    size = job.spec.workers.batch_size
    return [
        queue.NewTask("ingest", f"retry:{n}", {"documents": [{"uri": uri} for uri in retry.uris[start : start + size]]})
        for n, start in enumerate(range(0, len(retry.uris), size))
    ]


async def ensure_run(pool: Pool, job: JobRecord, *, reason: str) -> int:
    """The current run if it was started for this spec's source and chunking, else a new run."""
    if job.current_run == 0:  # never run: a new job's first reconcile
        return await start_run(pool, job, reason=reason)
    fingerprint = await pool.fetchval(
        "SELECT fingerprint FROM headrace.runs WHERE job_uid = $1 AND run = $2", job.uid, job.current_run
    )
    if fingerprint == job.spec.run_fingerprint():
        return job.current_run
    return await start_run(pool, job, reason=reason)


async def set_discovered(conn: Connection, uid: uuid.UUID, run: int, *, total: int, done: bool) -> None:
    """Record how many documents discovery has found so far, and whether it has finished."""
    await conn.execute(
        "UPDATE headrace.runs SET discovered = $3, discovery_done = $4 WHERE job_uid = $1 AND run = $2",
        uid,
        run,
        total,
        done,
    )


def violates_failure_policy(spec: IngestionJobSpec, progress: Progress) -> str | None:
    """Why the run's failures fail the job under spec.failurePolicy, or None when they do not."""
    policy = spec.failure_policy
    if policy.max_failed_documents is not None and progress.failed > policy.max_failed_documents:
        limit = policy.max_failed_documents
        return f"{progress.failed} documents failed, more than failurePolicy.maxFailedDocuments ({limit})"
    if policy.max_failed_percent is not None and progress.total:
        percent = progress.failed * 100 / progress.total
        if percent > policy.max_failed_percent:
            limit = policy.max_failed_percent
            return f"{percent:.1f}% of documents failed, more than failurePolicy.maxFailedPercent ({limit})"
    return None


async def finish_run(pool: Pool, job: JobRecord, run: int) -> RunState | None:
    """Close a drained run exactly once: apply `sync: mirror`, record how it ended, record the event.

    Returns the final state when this call closed the run, None when it was not drained or another
    worker already closed it.
    """
    async with pool.acquire() as conn, conn.transaction():
        if not await queue.is_drained(conn, job.uid):
            return None
        closed = await conn.fetchrow(
            "UPDATE headrace.runs SET finished_at = now() WHERE job_uid = $1 AND run = $2 AND finished_at IS NULL "
            "RETURNING discovery_done, retry_of",
            job.uid,
            run,
        )
        if closed is None:
            return None
        error = None
        if not closed["discovery_done"]:
            failure = await queue.discovery_error(conn, job.uid, run)
            error = f"discovery failed: {failure}" if failure is not None else "discovery did not finish"
        elif job.spec.sync == "mirror" and closed["retry_of"] is None:  # a retry listed nothing: it deletes nothing
            deleted = await history.delete_unseen(conn, job.uid, run)
            await conn.execute(
                "UPDATE headrace.runs SET deleted = $3 WHERE job_uid = $1 AND run = $2", job.uid, run, deleted
            )
        state = await jobs.run_state(conn, job.uid, run)
        assert state is not None
        end_reason = Reason.DISCOVERY_FAILED if error else Reason.RUN_SUCCEEDED
        if error is None and (error := violates_failure_policy(job.spec, state.progress)):
            end_reason = Reason.FAILURE_POLICY_EXCEEDED
        # The run's row is the one owner of how it ended: status, API and stream all read it.
        await conn.execute(
            "UPDATE headrace.runs SET error = $3, end_reason = $4 WHERE job_uid = $1 AND run = $2",
            job.uid,
            run,
            redact(error) if error else None,
            end_reason,
        )
        await jobs.touch(conn, job.uid)
        message = messages.run_finished(run, state.summary)
        if error:
            await jobs.record_event(conn, job.uid, run, "Warning", Reason.RUN_FAILED, f"{message}; {error}")
        else:
            await jobs.record_event(conn, job.uid, run, "Normal", Reason.RUN_SUCCEEDED, message)
        return await jobs.run_state(conn, job.uid, run)


async def close_run(pool: Pool, uid: uuid.UUID, run: int, *, reason: str, message: str) -> bool:
    """Close an open run that cannot drain as failed with `reason` and `message`; False when it was closed
    already (a worker finished it, or an earlier call did). Its unfinished tasks are dropped.

    `reason` is RunInterrupted (a local run stopped by a signal), or the reason of the worker Job's Failed
    condition (BackoffLimitExceeded, DeadlineExceeded, ...), which Kubernetes names, not us."""
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
        await jobs.record_event(conn, uid, run, "Warning", Reason.RUN_FAILED, messages.run_failed(run, message))
    return True


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
        return await start_run(pool, job, reason=f"requested at {value}", request=f"run:{value}")
    return await _start_retry(pool, job, value)


async def failed_uris(pool: Pool, uid: uuid.UUID, run: int) -> list[str]:
    """What a retry of `run` fetches again: its failed documents (an archive entry's archive as a whole)."""
    return sorted({uri.split("!/", 1)[0] for uri, _ in await documents.failures(pool, uid, run)})


async def _start_retry(pool: Pool, job: JobRecord, value: str) -> int:
    last = job.current_run
    uris = await failed_uris(pool, job.uid, last)
    reason = f"retry of the {len(uris)} failed documents of run {last}, requested at {value}"
    return await start_run(pool, job, reason=reason, request=f"retry:{value}", retry=Retry(last, uris))
