"""Totals read from Postgres for the metrics: what no single short-lived worker pod can count.

A worker pod that exits takes its unscraped counters with it, and a run spans many pods. Runs by
outcome, run durations, documents by outcome and tasks by state are facts of the database, so they
are read from it (by the API, into a snapshot it refreshes in the background; see `headrace.api.metrics`).
Each query reads one table's worth of rows through an index, never the chunks.
"""

from dataclasses import dataclass, field
from datetime import datetime

from headrace.model.events import Reason
from headrace.store.db import Pool
from headrace.store.jobs import END_REASON
from headrace.store.search import statistics as search_statistics

RUN_DURATION_BUCKETS = (60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 21600.0, 86400.0)
"""Upper bounds, in seconds, of the run-duration histogram: runs take minutes to hours."""


@dataclass
class JobStats:
    """One job's numbers. Live jobs carry their current run; retained ones only their index totals."""

    namespace: str
    name: str
    live: bool
    ingested: int = 0
    failed: int = 0
    chunks: int = 0
    bytes: int = 0
    tasks: dict[str, int] = field(default_factory=dict)
    """Tasks by state (pending, leased, dead); dead ones of the current run only."""
    run_documents: dict[str, int] = field(default_factory=dict)
    """The current run's documents by outcome (added, updated, unchanged, failed)."""
    runs: dict[str, int] = field(default_factory=dict)
    """Finished runs by outcome (succeeded, failed, superseded; interrupted, local runs only)."""
    active_since: datetime | None = None
    """Start of the current run while it is unfinished and the job not suspended."""
    last_progress: datetime | None = None
    """When the active run last finished a task (its start when none has finished yet)."""
    search_statistics_current: bool = False
    """Whether its search statistics cover its last finished run (headrace/store/search/statistics.py)."""


@dataclass(frozen=True)
class RunDurations:
    """Cumulative histogram of finished runs' durations, per outcome."""

    buckets: dict[str, list[int]]
    """outcome -> count of runs with duration <= each bound of RUN_DURATION_BUCKETS."""
    count: dict[str, int]
    sum: dict[str, float]


@dataclass(frozen=True)
class Stats:
    jobs: list[JobStats]
    run_durations: RunDurations


_RUN_OUTCOME = f"""
    CASE {END_REASON} WHEN '{Reason.RUN_SUCCEEDED}' THEN 'succeeded' WHEN '{Reason.RUN_SUPERSEDED}' THEN 'superseded'
         WHEN '{Reason.RUN_INTERRUPTED}' THEN 'interrupted' ELSE 'failed' END
"""
"""A finished run `r`'s outcome for the metrics, from its end reason."""


async def read(pool: Pool) -> Stats:
    """Every job's numbers and the run-duration histogram, in one repeatable-read snapshot."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        jobs = await conn.fetch(
            f"""
            SELECT j.uid, j.namespace, j.name, j.deleted_at IS NULL AS live, j.current_run,
                   count(d.id) FILTER (WHERE d.state = 'ingested') AS ingested,
                   count(d.id) FILTER (WHERE d.state = 'failed') AS failed,
                   coalesce(sum(d.chunk_count), 0) AS chunks,
                   coalesce(sum(d.bytes), 0) AS bytes,
                   {search_statistics.current("j")} AS statistics
            FROM headrace.jobs j
            LEFT JOIN headrace.documents d ON d.job_uid = j.uid
            GROUP BY j.uid
            """
        )
        tasks = await conn.fetch(
            """
            SELECT t.job_uid, t.state, count(*) AS n
            FROM headrace.tasks t JOIN headrace.jobs j ON j.uid = t.job_uid AND j.deleted_at IS NULL
            WHERE t.state IN ('pending', 'leased') OR (t.state = 'dead' AND t.run = j.current_run)
            GROUP BY t.job_uid, t.state
            """
        )
        outcomes = await conn.fetch(
            """
            SELECT d.job_uid, d.outcome, count(*) AS n
            FROM headrace.jobs j JOIN headrace.documents d ON d.job_uid = j.uid AND d.run = j.current_run
            WHERE j.deleted_at IS NULL
            GROUP BY d.job_uid, d.outcome
            """
        )
        runs = await conn.fetch(
            f"""
            SELECT r.job_uid, {_RUN_OUTCOME} AS outcome, count(*) AS n
            FROM headrace.runs r WHERE r.finished_at IS NOT NULL
            GROUP BY r.job_uid, outcome
            """
        )
        active = await conn.fetch(
            """
            SELECT r.job_uid, r.started_at,
                   greatest(r.started_at, (SELECT max(t.finished_at) FROM headrace.tasks t
                                           WHERE t.job_uid = r.job_uid AND t.run = r.run)) AS last_progress
            FROM headrace.jobs j JOIN headrace.runs r ON r.job_uid = j.uid AND r.run = j.current_run
            WHERE j.deleted_at IS NULL AND r.finished_at IS NULL
              AND coalesce((j.spec->>'suspend')::boolean, false) = false
            """
        )
        durations = await conn.fetch(
            f"""
            WITH finished AS (
                SELECT {_RUN_OUTCOME} AS outcome, extract(epoch FROM r.finished_at - r.started_at) AS seconds
                FROM headrace.runs r WHERE r.finished_at IS NOT NULL
            )
            SELECT f.outcome, count(*) AS n, sum(f.seconds) AS total,
                   array(SELECT count(*) FILTER (WHERE g.seconds <= b) FROM unnest($1::float8[]) WITH ORDINALITY u(b, i)
                         CROSS JOIN finished g WHERE g.outcome = f.outcome GROUP BY i ORDER BY i) AS cumulative
            FROM finished f GROUP BY f.outcome
            """,
            list(RUN_DURATION_BUCKETS),
        )
    by_uid = {
        row["uid"]: JobStats(
            namespace=row["namespace"],
            name=row["name"],
            live=row["live"],
            ingested=row["ingested"],
            failed=row["failed"],
            chunks=row["chunks"],
            bytes=row["bytes"],
            tasks={"pending": 0, "leased": 0, "dead": 0} if row["live"] else {},
            search_statistics_current=row["statistics"],
        )
        for row in jobs
    }
    for row in tasks:
        by_uid[row["job_uid"]].tasks[row["state"]] = row["n"]
    for row in outcomes:
        by_uid[row["job_uid"]].run_documents[row["outcome"]] = row["n"]
    for row in runs:
        by_uid[row["job_uid"]].runs[row["outcome"]] = row["n"]
    for row in active:
        by_uid[row["job_uid"]].active_since = row["started_at"]
        by_uid[row["job_uid"]].last_progress = row["last_progress"]
    return Stats(
        jobs=list(by_uid.values()),
        run_durations=RunDurations(
            buckets={row["outcome"]: list(row["cumulative"]) for row in durations},
            count={row["outcome"]: row["n"] for row in durations},
            sum={row["outcome"]: float(row["total"] or 0.0) for row in durations},
        ),
    )
