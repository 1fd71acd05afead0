"""Jobs and their runs: registration, run lifecycle, progress and events."""

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from headrace.model import IngestionJobSpec, Progress, RunSummary
from headrace.store import queue
from headrace.store.db import Connection, Pool

EventType = Literal["Normal", "Warning"]


class UnknownTextSearchConfig(ValueError):
    """The spec names a text-search configuration this Postgres does not have."""


@dataclass(frozen=True)
class JobRecord:
    """A job as the store knows it."""

    uid: uuid.UUID
    namespace: str
    name: str
    generation: int
    spec: IngestionJobSpec
    current_run: int
    phase: str


@dataclass(frozen=True)
class RunState:
    """Where a run is: its counts and timings."""

    run: int
    progress: Progress
    summary: RunSummary
    discovery_done: bool
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None

    @property
    def finished(self) -> bool:
        return self.finished_at is not None


async def register_job(
    pool: Pool, *, uid: uuid.UUID, namespace: str, name: str, generation: int, spec: IngestionJobSpec
) -> JobRecord:
    """Create or update the job row. Idempotent: the same arguments leave the same row."""
    async with pool.acquire() as conn:
        known = await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_ts_config WHERE cfgname = $1)", spec.text_search_config
        )
        if not known:
            raise UnknownTextSearchConfig(
                f"spec.textSearchConfig: Postgres has no text-search configuration {spec.text_search_config!r}"
            )
        await conn.execute(
            """
            INSERT INTO headrace.jobs (uid, namespace, name, generation, spec, text_search_config)
            VALUES ($1, $2, $3, $4, $5, $6::text::regconfig)
            ON CONFLICT (uid) DO UPDATE
            SET generation = excluded.generation, spec = excluded.spec,
                text_search_config = excluded.text_search_config, updated_at = now(), deleted_at = NULL
            """,
            uid,
            namespace,
            name,
            generation,
            spec.to_wire(),
            spec.text_search_config,
        )
    job = await get_job(pool, uid)
    assert job is not None
    return job


async def get_job(conn: Pool | Connection, uid: uuid.UUID) -> JobRecord | None:
    """The job with this uid, or None."""
    row = await conn.fetchrow(
        "SELECT uid, namespace, name, generation, spec, current_run, phase FROM headrace.jobs WHERE uid = $1",
        uid,
    )
    if row is None:
        return None
    return JobRecord(**{**dict(row), "spec": IngestionJobSpec.model_validate(row["spec"])})


async def start_run(pool: Pool, job: JobRecord, *, reason: str) -> int:
    """Begin a new run: supersede unfinished work of the previous one and enqueue discovery."""
    async with pool.acquire() as conn, conn.transaction():
        run = await conn.fetchval(
            "UPDATE headrace.jobs SET current_run = current_run + 1, phase = 'Running', updated_at = now() "
            "WHERE uid = $1 RETURNING current_run",
            job.uid,
        )
        # Pending work of an older run would be redone by this run's discovery anyway.
        await conn.execute(
            "DELETE FROM headrace.tasks WHERE job_uid = $1 AND run < $2 AND state = 'pending'", job.uid, run
        )
        await conn.execute(
            "UPDATE headrace.runs SET finished_at = now(), error = 'superseded by run ' || $2::int "
            "WHERE job_uid = $1 AND finished_at IS NULL",
            job.uid,
            run,
        )
        await conn.execute(
            "INSERT INTO headrace.runs (job_uid, run, reason, fingerprint) VALUES ($1, $2, $3, $4)",
            job.uid,
            run,
            reason,
            job.spec.run_fingerprint(),
        )
        await queue.enqueue(
            conn,
            job.uid,
            run,
            [queue.NewTask("discover", "discover", {})],
            max_attempts=job.spec.retries.max_attempts,
        )
        await record_event(conn, job.uid, run, "Normal", "RunStarted", f"Started run {run}: {reason}")
    return int(run)


async def ensure_run(pool: Pool, job: JobRecord, *, reason: str) -> int:
    """The current run if it was started for this spec's source and chunking, else a new run."""
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


async def run_state(conn: Pool | Connection, uid: uuid.UUID, run: int | None = None) -> RunState | None:
    """Counts and timings of a run (the current one by default)."""
    row = await conn.fetchrow(
        """
        SELECT r.run, r.discovered, r.discovery_done, r.deleted, r.started_at, r.finished_at, r.error,
               count(d.id) FILTER (WHERE d.outcome = 'added') AS added,
               count(d.id) FILTER (WHERE d.outcome = 'updated') AS updated,
               count(d.id) FILTER (WHERE d.outcome = 'unchanged') AS unchanged,
               count(d.id) FILTER (WHERE d.outcome = 'failed') AS failed
        FROM headrace.runs r
        LEFT JOIN headrace.documents d ON d.job_uid = r.job_uid AND d.run = r.run
        WHERE r.job_uid = $1
          AND r.run = coalesce($2, (SELECT current_run FROM headrace.jobs WHERE uid = $1))
        GROUP BY r.job_uid, r.run
        """,
        uid,
        run,
    )
    if row is None:
        return None
    summary = RunSummary(
        added=row["added"],
        updated=row["updated"],
        unchanged=row["unchanged"],
        deleted=row["deleted"],
        failed=row["failed"],
    )
    succeeded = summary.added + summary.updated + summary.unchanged
    total = max(row["discovered"], succeeded + summary.failed)
    processed = succeeded + summary.failed
    percent = 100 if row["finished_at"] and total == processed else (processed * 100 // total if total else 0)
    progress = Progress(
        total=total,
        succeeded=succeeded,
        failed=summary.failed,
        pending=total - processed,
        percent=min(percent, 100),
    )
    return RunState(
        run=row["run"],
        progress=progress,
        summary=summary,
        discovery_done=row["discovery_done"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        error=row["error"],
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
    """Close a drained run exactly once: apply `sync: mirror`, settle the phase, record the event.

    Returns the final state when this call closed the run, None when it was not drained or another
    worker already closed it.
    """
    async with pool.acquire() as conn, conn.transaction():
        if not await queue.is_drained(conn, job.uid):
            return None
        closed = await conn.fetchrow(
            "UPDATE headrace.runs SET finished_at = now() WHERE job_uid = $1 AND run = $2 AND finished_at IS NULL "
            "RETURNING discovery_done",
            job.uid,
            run,
        )
        if closed is None:
            return None
        error = None
        if not closed["discovery_done"]:
            error = (
                await conn.fetchval(
                    "SELECT 'discovery failed: ' || coalesce(last_error, 'unknown error') FROM headrace.tasks "
                    "WHERE job_uid = $1 AND run = $2 AND kind = 'discover' AND state = 'dead'",
                    job.uid,
                    run,
                )
                or "discovery did not finish"
            )
        elif job.spec.sync == "mirror":
            deleted = await conn.fetchval(
                "WITH gone AS (DELETE FROM headrace.documents WHERE job_uid = $1 AND run < $2 RETURNING 1) "
                "SELECT count(*) FROM gone",
                job.uid,
                run,
            )
            await conn.execute(
                "UPDATE headrace.runs SET deleted = $3 WHERE job_uid = $1 AND run = $2", job.uid, run, deleted
            )
        state = await run_state(conn, job.uid, run)
        assert state is not None
        error = error or violates_failure_policy(job.spec, state.progress)
        phase = "Failed" if error else "Succeeded"
        if error:
            await conn.execute(
                "UPDATE headrace.runs SET error = $3 WHERE job_uid = $1 AND run = $2", job.uid, run, error
            )
        await conn.execute(
            "UPDATE headrace.jobs SET phase = $2, updated_at = now() WHERE uid = $1 AND current_run = $3",
            job.uid,
            phase,
            run,
        )
        s = state.summary
        message = (
            f"Run {run} finished: {s.added} added, {s.updated} updated, {s.unchanged} unchanged, "
            f"{s.deleted} deleted, {s.failed} failed"
        )
        if error:
            await record_event(conn, job.uid, run, "Warning", "RunFailed", f"{message}; {error}")
        else:
            await record_event(conn, job.uid, run, "Normal", "RunSucceeded", message)
        return await run_state(conn, job.uid, run)


async def record_event(
    conn: Pool | Connection, uid: uuid.UUID, run: int, type_: EventType, reason: str, message: str
) -> None:
    """Append to the job's event log."""
    await conn.execute(
        "INSERT INTO headrace.job_events (job_uid, run, type, reason, message) VALUES ($1, $2, $3, $4, $5)",
        uid,
        run,
        type_,
        reason,
        message,
    )


async def has_event(pool: Pool, uid: uuid.UUID, run: int, reason: str) -> bool:
    """Whether the job's log already holds an event of this reason for this run."""
    return bool(
        await pool.fetchval(
            "SELECT EXISTS (SELECT 1 FROM headrace.job_events WHERE job_uid = $1 AND run = $2 AND reason = $3)",
            uid,
            run,
            reason,
        )
    )


async def events(pool: Pool, uid: uuid.UUID, *, after: int = 0, limit: int = 100) -> list[dict[str, Any]]:
    """The job's events with id greater than `after`, oldest first."""
    rows = await pool.fetch(
        "SELECT id, run, type, reason, message, created_at FROM headrace.job_events "
        "WHERE job_uid = $1 AND id > $2 ORDER BY id LIMIT $3",
        uid,
        after,
        limit,
    )
    return [dict(row) for row in rows]


async def delete_job_data(pool: Pool, uid: uuid.UUID) -> None:
    """Remove the job with its runs, tasks, documents, chunks and events (retention: Delete)."""
    await pool.execute("DELETE FROM headrace.jobs WHERE uid = $1", uid)


async def retain_job_data(pool: Pool, uid: uuid.UUID) -> None:
    """Keep the job's documents searchable after its IngestionJob is gone (retention: Retain)."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("DELETE FROM headrace.tasks WHERE job_uid = $1 AND state IN ('pending', 'leased')", uid)
        await conn.execute("UPDATE headrace.jobs SET deleted_at = now() WHERE uid = $1", uid)


@dataclass(frozen=True)
class JobView:
    """A live job as the API shows it: its row with the state of its current run."""

    job: JobRecord
    created_at: datetime
    updated_at: datetime
    state: RunState | None


@dataclass(frozen=True)
class RunRecord:
    """One run of a job, for the run history."""

    run: int
    reason: str
    started_at: datetime
    finished_at: datetime | None
    error: str | None


_JOB_COLUMNS = "uid, namespace, name, generation, spec, current_run, phase, created_at, updated_at"


async def _view(conn: Pool | Connection, row: Any) -> JobView:
    record = JobRecord(
        uid=row["uid"],
        namespace=row["namespace"],
        name=row["name"],
        generation=row["generation"],
        spec=IngestionJobSpec.model_validate(row["spec"]),
        current_run=row["current_run"],
        phase=row["phase"],
    )
    state = await run_state(conn, record.uid) if record.current_run else None
    return JobView(record, row["created_at"], row["updated_at"], state)


async def find_job(pool: Pool, namespace: str, name: str) -> JobView | None:
    """The live job (its IngestionJob not deleted) with this namespace and name, or None."""
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            f"SELECT {_JOB_COLUMNS} FROM headrace.jobs WHERE namespace = $1 AND name = $2 AND deleted_at IS NULL "
            "ORDER BY created_at DESC LIMIT 1",
            namespace,
            name,
        )
        return await _view(conn, row) if row is not None else None


async def list_jobs(pool: Pool, namespace: str, *, after_name: str | None = None, limit: int = 50) -> list[JobView]:
    """Live jobs of a namespace in name order, starting after `after_name` (keyset paging)."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            f"SELECT {_JOB_COLUMNS} FROM headrace.jobs WHERE namespace = $1 AND deleted_at IS NULL "
            "AND ($2::text IS NULL OR name > $2) ORDER BY name LIMIT $3",
            namespace,
            after_name,
            limit,
        )
        return [await _view(conn, row) for row in rows]


async def list_runs(pool: Pool, uid: uuid.UUID, *, limit: int = 10) -> list[RunRecord]:
    """The job's most recent runs, newest first."""
    rows = await pool.fetch(
        "SELECT run, reason, started_at, finished_at, error FROM headrace.runs WHERE job_uid = $1 "
        "ORDER BY run DESC LIMIT $2",
        uid,
        limit,
    )
    return [RunRecord(**dict(row)) for row in rows]


async def job_phase(pool: Pool, uid: uuid.UUID) -> tuple[str, int] | None:
    """The job's phase and current run, or None when it is gone."""
    row = await pool.fetchrow("SELECT phase, current_run FROM headrace.jobs WHERE uid = $1", uid)
    return (row["phase"], row["current_run"]) if row is not None else None


async def namespaces(pool: Pool) -> list[str]:
    """Every namespace that has indexed data, live or retained."""
    rows = await pool.fetch("SELECT DISTINCT namespace FROM headrace.jobs ORDER BY namespace")
    return [row["namespace"] for row in rows]
