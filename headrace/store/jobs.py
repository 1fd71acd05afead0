"""Jobs: the `headrace.jobs` table and the job's event log, and the views the API and the operator read.

Only this module writes a job's row. A run's row is written only by the run service (`store/runs.py`),
which starts, supersedes and closes runs; this module reads runs back (`run_state`, `list_runs`) for the
views, with the job's phase derived by `model.run.phase_of`.
"""

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from headrace.model import IngestionJobSpec, Phase, Progress, RunSummary
from headrace.model.events import Reason
from headrace.model.run import RunState, phase_of
from headrace.redaction import redact
from headrace.store import history, queue
from headrace.store.db import Connection, Pool

EventType = Literal["Normal", "Warning"]


class UnknownTextSearchConfig(ValueError):
    """The spec names a text-search configuration this Postgres does not have."""


class JobGone(Exception):
    """The job's row was deleted (its IngestionJob's finalizer ran) while the caller was working on it."""


@dataclass(frozen=True)
class JobRecord:
    """A job as the store knows it."""

    uid: uuid.UUID
    namespace: str
    name: str
    generation: int
    spec: IngestionJobSpec
    current_run: int
    namespace_uid: uuid.UUID | None = None


END_REASON = f"""
    CASE WHEN r.finished_at IS NOT NULL
         THEN coalesce(r.end_reason,
                       CASE WHEN r.error IS NULL THEN '{Reason.RUN_SUCCEEDED}' ELSE '{Reason.RUN_FAILED}' END)
    END"""
"""How the run `r` ended (`Reason`), NULL while it runs: the one reading of it for status, API and metrics.

Every writer that closes a run sets `end_reason` (and migration 0013 gave it to the superseded runs of
before). A run closed without one, by a release older than that, reads as RunSucceeded or RunFailed by
its `error`."""


async def register_job(
    pool: Pool,
    *,
    uid: uuid.UUID,
    namespace: str,
    name: str,
    generation: int,
    spec: IngestionJobSpec,
    namespace_uid: uuid.UUID | None = None,
) -> JobRecord:
    """Create or update the job row. Idempotent: the same arguments leave the same row.

    `namespace_uid` (the namespace's identity in a cluster; None in local mode) is recorded on the row:
    tenant credentials and adoption go by it, never by the namespace's name alone.

    In one statement (a round trip each, for every job of a burst): the text-search configuration looked
    up by name (none: UnknownTextSearchConfig, nothing written), the row written, and live rows of former
    namespaces of this name retired (`retire_former_namespaces`).
    """
    row = await pool.fetchrow(
        f"""
        WITH config AS (
            -- The config of that name on the search path, else Headrace's own (migration 0011).
            SELECT c.oid FROM pg_ts_config c WHERE c.cfgname = $6::text
            ORDER BY pg_ts_config_is_visible(c.oid) DESC, c.cfgnamespace = 'headrace'::regnamespace DESC LIMIT 1
        ), registered AS (
            INSERT INTO headrace.jobs (uid, namespace, name, generation, spec, text_search_config, namespace_uid)
            SELECT $1, $2, $3, $4, $5, config.oid::regconfig, $7 FROM config
            ON CONFLICT (uid) DO UPDATE
            SET generation = excluded.generation, spec = excluded.spec, spec_error = NULL,
                text_search_config = excluded.text_search_config, updated_at = now(), deleted_at = NULL,
                namespace_uid = coalesce(excluded.namespace_uid, headrace.jobs.namespace_uid)
            RETURNING current_run, namespace_uid
        ), retired AS (
            {_retire_former("$2", "$7")} AND $7::uuid IS NOT NULL AND uid <> $1 AND EXISTS (SELECT 1 FROM config)
        )
        SELECT current_run, namespace_uid FROM registered
        """,
        uid,
        namespace,
        name,
        generation,
        spec.to_wire(),
        spec.text_search_config,
        namespace_uid,
    )
    if row is None:
        raise UnknownTextSearchConfig(
            f"spec.textSearchConfig: Postgres has no text-search configuration {spec.text_search_config!r}"
        )
    return JobRecord(
        uid=uid,
        namespace=namespace,
        name=name,
        generation=generation,
        spec=spec,
        current_run=row["current_run"],
        namespace_uid=row["namespace_uid"],
    )


async def retire_former_namespaces(conn: Pool | Connection, *, namespace: str, namespace_uid: uuid.UUID) -> int:
    """Stop serving live rows of former namespaces of this name (another UID): their IngestionJobs are gone
    without their finalizer having run (it was bypassed), and a namespace re-created under the name must
    see nothing of them. They become retained data. Returns how many."""
    status = await conn.execute(_retire_former("$1", "$2"), namespace, namespace_uid)
    return int(status.split()[-1])


def _retire_former(namespace: str, namespace_uid: str) -> str:
    """The UPDATE that retires live rows of former namespaces of a name, given the parameters holding the
    name and the namespace's UID (`register_job` runs it inside its own statement)."""
    return (
        "UPDATE headrace.jobs SET deleted_at = now() "
        f"WHERE namespace = {namespace} AND namespace_uid <> {namespace_uid}::uuid AND deleted_at IS NULL"
    )


async def retire_namespace(pool: Pool, namespace_uid: uuid.UUID) -> int:
    """Stop serving the live rows of a deleted namespace (normally none: finalizers retired them first)."""
    status = await pool.execute(
        "UPDATE headrace.jobs SET deleted_at = now() WHERE namespace_uid = $1 AND deleted_at IS NULL", namespace_uid
    )
    return int(status.split()[-1])


async def get_job(conn: Pool | Connection, uid: uuid.UUID) -> JobRecord | None:
    """The job with this uid, or None."""
    row = await conn.fetchrow(
        "SELECT uid, namespace, name, generation, spec, current_run, namespace_uid FROM headrace.jobs WHERE uid = $1",
        uid,
    )
    if row is None:
        return None
    return JobRecord(**{**dict(row), "spec": IngestionJobSpec.model_validate(row["spec"])})


async def local_manifest(conn: Pool | Connection, uid: uuid.UUID) -> str | None:
    """The manifest file the local job `uid` was last run from (absolute), or None: never recorded, or no
    such job."""
    manifest: str | None = await conn.fetchval("SELECT manifest FROM headrace.jobs WHERE uid = $1", uid)
    return manifest


async def record_local_manifest(conn: Pool | Connection, uid: uuid.UUID, manifest: str) -> None:
    """Record the manifest file (absolute) the local job `uid` is run from (migration 0014)."""
    await conn.execute("UPDATE headrace.jobs SET manifest = $2 WHERE uid = $1", uid, manifest)


async def current_run(conn: Pool | Connection, uid: uuid.UUID) -> int | None:
    """The job's current run number (0 before its first run), or None when there is no such job."""
    run = await conn.fetchval("SELECT current_run FROM headrace.jobs WHERE uid = $1", uid)
    return int(run) if run is not None else None


async def advance_run(conn: Connection, uid: uuid.UUID) -> int | None:
    """Make the job's next run its current one and return its number; None when there is no such job.
    Only `runs.start_run` calls it, in the transaction that starts the run."""
    run = await conn.fetchval(
        "UPDATE headrace.jobs SET current_run = current_run + 1, updated_at = now() "
        "WHERE uid = $1 RETURNING current_run",
        uid,
    )
    return None if run is None else int(run)


async def touch(conn: Pool | Connection, uid: uuid.UUID) -> None:
    """Note that the job changed (its run ended): `updatedAt` in the API."""
    await conn.execute("UPDATE headrace.jobs SET updated_at = now() WHERE uid = $1", uid)


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
            await record_event(conn, uid, run, "Warning", Reason.INVALID_SPEC, error)


async def run_state(conn: Pool | Connection, uid: uuid.UUID, run: int | None = None) -> RunState | None:
    """Counts and timings of a run (the current one by default)."""
    row = await conn.fetchrow(
        f"""
        SELECT r.run, r.discovered, r.discovery_done, r.deleted, r.started_at, r.finished_at, r.error,
               {END_REASON} AS end_reason,
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
        end_reason=row["end_reason"],
    )


async def record_event(
    conn: Pool | Connection, uid: uuid.UUID, run: int, type_: EventType, reason: str, message: str
) -> None:
    """Append to the job's event log."""
    await conn.execute(
        insert_events("VALUES ($1, $2, $3, $4, $5)"),
        uid,
        run,
        type_,
        reason,
        redact(message),
    )


def insert_events(rows: str) -> str:
    """The INSERT that appends to a job's event log, given its rows' (job_uid, run, type, reason, message):
    `record_event` and `record_events` run it, `runs.start_run` inside a first run's one statement."""
    return f"INSERT INTO headrace.job_events (job_uid, run, type, reason, message) {rows}"


async def record_events(
    conn: Pool | Connection, uid: uuid.UUID, run: int, events: Sequence[tuple[EventType, str, str]]
) -> bool:
    """Append (type, reason, message) entries to the job's event log in one round trip; False, writing
    nothing, when the job was deleted or retained (its IngestionJob is gone).

    The operator's timer reads the job, talks to Kubernetes, then writes here: the finalizer may have
    deleted or retained the job in between. The job's row is locked FOR SHARE in the same statement, so
    a finalizer still in flight is waited for and its outcome seen (a deleted row is skipped, a retained
    one fails `deleted_at IS NULL` when re-checked), instead of a foreign-key error.
    """
    if not events:
        return True
    found = await conn.fetchval(
        f"""
        WITH job AS (SELECT uid FROM headrace.jobs WHERE uid = $1 AND deleted_at IS NULL FOR SHARE),
             written AS (
                 {insert_events("SELECT job.uid, $2, e.type, e.reason, e.message")}
                 FROM job, unnest($3::text[], $4::text[], $5::text[]) WITH ORDINALITY AS e(type, reason, message, n)
                 ORDER BY e.n
                 RETURNING 1
             )
        SELECT EXISTS (SELECT 1 FROM job)
        """,
        uid,
        run,
        [type_ for type_, _, _ in events],
        [reason for _, reason, _ in events],
        [redact(message) for _, _, message in events],
    )
    return bool(found)


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
    """Remove the job with its runs, tasks, documents, chunks and events (retention: Delete), in batches."""
    await history.delete_job(pool, uid)


async def retain_job_data(pool: Pool, uid: uuid.UUID) -> None:
    """Keep the job's documents after its IngestionJob is gone (retention: Retain), unserved: neither
    search nor the API shows them until a new IngestionJob of the same namespace and name adopts them."""
    async with pool.acquire() as conn, conn.transaction():
        await queue.drop_open(conn, uid)
        await conn.execute("UPDATE headrace.jobs SET deleted_at = now() WHERE uid = $1", uid)


async def adopt_retained(pool: Pool, *, uid: uuid.UUID, namespace_uid: uuid.UUID, name: str) -> uuid.UUID | None:
    """Hand the data kept for an IngestionJob of this namespace (by UID) and name to the new one, `uid`.

    A row of the same namespace and name under another uid belongs to an IngestionJob that no longer
    exists (a name is unique in its namespace), typically deleted with `retention: Retain` or lost with
    a cluster rebuilt from Git. Its documents, chunks, runs and events move to `uid`, so the new job's
    first run skips unchanged documents by hash instead of starting empty. Returns the old uid, or None
    when there was nothing to adopt (or `uid` is already registered).

    The current run's fingerprint is marked, so the next `ensure_run` starts a run even if the operator
    stops between this and starting it.
    """
    # One read answers the common case (nothing to adopt, or `uid` registered already); only a move needs a
    # transaction, where the same is asked again under the row lock.
    candidate = await pool.fetchval(
        "SELECT uid FROM headrace.jobs WHERE namespace_uid = $1 AND name = $2 AND uid <> $3 "
        "AND NOT EXISTS (SELECT 1 FROM headrace.jobs WHERE uid = $3) LIMIT 1",
        namespace_uid,
        name,
        uid,
    )
    if candidate is None:
        return None
    async with pool.acquire() as conn, conn.transaction():
        if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM headrace.jobs WHERE uid = $1)", uid):
            return None
        old = await conn.fetchval(
            "SELECT uid FROM headrace.jobs WHERE namespace_uid = $1 AND name = $2 AND uid <> $3 "
            "ORDER BY updated_at DESC LIMIT 1 FOR UPDATE",
            namespace_uid,
            name,
            uid,
        )
        if old is None:
            return None
        await conn.execute("SELECT headrace.move_job($1, $2)", old, uid)
        await conn.execute(
            "UPDATE headrace.runs r SET fingerprint = 'adopted:' || r.fingerprint FROM headrace.jobs j "
            "WHERE j.uid = $1 AND r.job_uid = j.uid AND r.run = j.current_run",
            uid,
        )
        await queue.drop_open(conn, uid)
        return uuid.UUID(str(old))


@dataclass(frozen=True)
class RetainedJob:
    """Data kept for an IngestionJob that is gone, as `headrace adopt` lists it."""

    uid: uuid.UUID
    namespace: str
    namespace_uid: uuid.UUID | None
    name: str
    documents: int
    deleted_at: datetime | None


async def adopt_namespace(
    pool: Pool, namespace: str, namespace_uid: uuid.UUID, *, dry_run: bool = False
) -> list[RetainedJob]:
    """An admin's adoption: the retained data of former namespaces named `namespace` (another UID, or
    none recorded) becomes the namespace `namespace_uid`'s, for its IngestionJobs of the same names to
    adopt. Returns what was (or, with `dry_run`, would be) adopted."""
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(
            """
            SELECT j.uid, j.namespace, j.namespace_uid, j.name, j.deleted_at,
                   (SELECT count(*) FROM headrace.documents d WHERE d.job_uid = j.uid) AS documents
            FROM headrace.jobs j
            WHERE j.namespace = $1 AND j.namespace_uid IS DISTINCT FROM $2
            ORDER BY j.name, j.updated_at DESC
            FOR UPDATE OF j
            """,
            namespace,
            namespace_uid,
        )
        if not dry_run and rows:
            await conn.execute(
                # Rows still live in a restored backup belong to IngestionJobs of the old cluster: they wait,
                # unserved, for this namespace's IngestionJobs of the same names, like retained data.
                "UPDATE headrace.jobs SET namespace_uid = $2, deleted_at = coalesce(deleted_at, now()) "
                "WHERE uid = ANY($1::uuid[])",
                [r["uid"] for r in rows],
                namespace_uid,
            )
        return [RetainedJob(**dict(row)) for row in rows]


@dataclass(frozen=True)
class JobView:
    """A live job as the API shows it: its row with the state of its current run. The spec stays
    unparsed: a job whose spec the operator refused is shown too, with `spec_error`."""

    uid: uuid.UUID
    namespace: str
    name: str
    current_run: int
    suspended: bool
    spec_error: str | None
    created_at: datetime
    updated_at: datetime
    state: RunState | None

    @property
    def phase(self) -> Phase:
        return phase_of(self.state, suspended=self.suspended, spec_error=self.spec_error)


@dataclass(frozen=True)
class RunRecord:
    """One run of a job, for the run history."""

    run: int
    reason: str
    started_at: datetime
    finished_at: datetime | None
    error: str | None
    end_reason: str | None


_JOB_COLUMNS = (
    "uid, namespace, name, current_run, coalesce((spec->>'suspend')::boolean, false) AS suspended, spec_error, "
    "created_at, updated_at"
)


async def _view(conn: Pool | Connection, row: Any) -> JobView:
    state = await run_state(conn, row["uid"], row["current_run"]) if row["current_run"] else None
    return JobView(**dict(row), state=state)


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
        f"SELECT r.run, r.reason, r.started_at, r.finished_at, r.error, {END_REASON} AS end_reason "
        "FROM headrace.runs r WHERE r.job_uid = $1 ORDER BY r.run DESC LIMIT $2",
        uid,
        limit,
    )
    return [RunRecord(**dict(row)) for row in rows]


async def job_phase(pool: Pool, uid: uuid.UUID) -> tuple[Phase, int] | None:
    """The job's phase (derived from its current run, as everywhere) and current run, or None when it is gone
    (deleted, or only its data retained)."""
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            f"SELECT {_JOB_COLUMNS} FROM headrace.jobs WHERE uid = $1 AND deleted_at IS NULL", uid
        )
        if row is None:
            return None
        view = await _view(conn, row)
    return view.phase, view.current_run


async def namespaces(pool: Pool) -> list[str]:
    """Every namespace with a live job: the only data served (retained data waits for adoption)."""
    rows = await pool.fetch("SELECT DISTINCT namespace FROM headrace.jobs WHERE deleted_at IS NULL ORDER BY namespace")
    return [row["namespace"] for row in rows]
