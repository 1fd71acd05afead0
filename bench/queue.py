"""Queue benchmark: lease + ack throughput of headrace's Postgres queue beside pgqueuer and procrastinate.

Every system gets the same workload in its own fresh database on the same embedded Postgres:
enqueue N no-op tasks, then drain them with C concurrent consumers in one asyncio process, and
check afterwards that every task was acknowledged exactly once. What a "consumer" is follows each
system's own idiom:

- headrace: C coroutines sharing a pool of C connections, each running the lease path of `headrace worker`
  itself (`headrace.worker.leases.Holding`: prefetch bounded by `workers.batchSize` and the lease time,
  every held task heartbeated, acks batched with `ack_many`) around a no-op handler;
- pgqueuer: C `QueueManager`s, each with its own connection and the library's default batch of 10;
- procrastinate: one worker with `concurrency=C` (its own notion of concurrent consumers).

Also measured for headrace: enqueue throughput, and the cost of rescuing tasks whose lease expired
(their worker died) compared with leasing fresh ones, plus dead-lettering them with `reap_expired`.
"""

import argparse
import asyncio
import logging
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from bench import common
from headrace.model import IngestionJobSpec
from headrace.store import queue
from headrace.store.db import Pool
from headrace.worker.leases import Holding, prefetch_limit
from headrace.worker.store import DirectStore

SYSTEMS = ("headrace", "pgqueuer", "procrastinate")
PEERS = ("pgqueuer", "procrastinate")
BATCH = 10
TARGET_RATIO = 1.5
TARGET_CONSUMERS = 16


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tasks", type=int, default=50_000, help="no-op tasks per run")
    parser.add_argument("--consumers", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=SYSTEMS)
    parser.add_argument("--no-profile", action="store_true", help="skip the pyinstrument profile of headrace")


def _database(dsn: str) -> str:
    return urlsplit(dsn).path.lstrip("/")


def _rates(n: int, enqueue_s: float, used: dict[str, float]) -> dict[str, float]:
    return {
        "enqueue_per_s": n / enqueue_s,
        "per_s": n / used["seconds"],
        "client_cpu_ms_per_1k": used["client_cpu"] * 1e6 / n,
        "server_cpu_ms_per_1k": used["server_cpu"] * 1e6 / n,
    }


class NotExactlyOnce(AssertionError):
    """A run acknowledged some task twice or never."""


def check_exactly_once(system: str, seen: list[Any], expected: int, finished_in_db: int) -> None:
    if len(seen) != expected or len(set(seen)) != expected or finished_in_db != expected:
        raise NotExactlyOnce(
            f"{system}: {len(seen)} acks of {len(set(seen))} distinct tasks, {finished_in_db} finished in the "
            f"database; expected exactly {expected} of each"
        )


# ---------------------------------------------------------------------------------------------- headrace


async def _headrace_drain(pool: Pool, uid: uuid.UUID, consumers: int, *, lease_seconds: float = 30) -> list[int]:
    """C consumers, each holding tasks as `headrace worker` does (`worker.leases.Holding`: prefetch sized by
    the default `workers.batchSize`, one heartbeat for all held tasks, batched acks), running a no-op handler.
    Returns the id of every task handled, once per time it was handled."""
    handled: list[int] = []
    prefetch = prefetch_limit(IngestionJobSpec.model_validate({"source": {"volume": {"path": "."}}}).workers.batch_size)

    async def consume(name: str) -> None:
        holding = Holding(DirectStore(pool, uid), worker=name, lease_seconds=lease_seconds, prefetch=prefetch)
        beat = asyncio.create_task(holding.beat_forever())
        try:
            while await holding.lease() or holding.queued:
                while started := holding.start():
                    handled.append(started[0].id)
                    await holding.done(started[0])
            await holding.flush()
        finally:
            beat.cancel()

    await asyncio.gather(*(consume(f"c{i}") for i in range(consumers)))
    return handled


async def headrace_run(dsn: str, n: int, consumers: int, *, profile_to: Path | None = None) -> dict[str, float]:
    pool, uid = await common.headrace_queue(dsn, consumers)
    try:
        enqueue_s = await common.enqueue_noops(pool, uid, n)
        profiler = _start_profiler() if profile_to else None
        with common.Meter(_database(dsn)) as meter:
            acked = await _headrace_drain(pool, uid, consumers)
            used = meter.stop()
        if profiler is not None and profile_to is not None:
            _stop_profiler(profiler, profile_to)
        done = (await queue.counts(pool, uid))["done"]
        check_exactly_once("headrace", acked, n, done)
        return _rates(n, enqueue_s, used)
    finally:
        await pool.close()


async def _lease_and_die(pool: Pool, uid: uuid.UUID, n: int) -> None:
    """Lease all n tasks once and let the leases lapse, as if their workers died (lapsed through SQL, at
    once: the rescue is what is timed, not a wait for the clock)."""
    held = 0
    while held < n:
        held += len(await queue.lease(pool, uid, worker="dies", lease_seconds=30, limit=500))
    await pool.execute(
        "UPDATE headrace.tasks SET lease_expires_at = now() - interval '1 s' WHERE job_uid = $1 AND state = 'leased'",
        uid,
    )


async def headrace_rescue(dsn: str, n: int, consumers: int) -> dict[str, float]:
    """Lease every task and let the lease lapse (dead workers); then rescue and ack them all.
    Then the same once more with attempts used up, and time `reap_expired` dead-lettering them."""
    pool, uid = await common.headrace_queue(dsn, consumers)
    try:
        await common.enqueue_noops(pool, uid, n)
        started = time.perf_counter()
        fresh = await _headrace_drain(pool, uid, consumers)
        fresh_s = time.perf_counter() - started
        check_exactly_once("headrace", fresh, n, (await queue.counts(pool, uid))["done"])

        run = 2
        await pool.execute("INSERT INTO headrace.runs (job_uid, run, fingerprint) VALUES ($1, $2, '')", uid, run)
        await common.make_current(pool, uid, run)
        await common.enqueue_noops(pool, uid, n, run=run, max_attempts=2)
        await _lease_and_die(pool, uid, n)
        started = time.perf_counter()
        rescued = await _headrace_drain(pool, uid, consumers)
        rescue_s = time.perf_counter() - started
        check_exactly_once("headrace rescue", rescued, n, (await queue.counts(pool, uid))["done"] - n)

        run = 3
        await pool.execute("INSERT INTO headrace.runs (job_uid, run, fingerprint) VALUES ($1, $2, '')", uid, run)
        await common.make_current(pool, uid, run)
        await common.enqueue_noops(pool, uid, n, run=run, max_attempts=1)
        await _lease_and_die(pool, uid, n)
        started = time.perf_counter()
        dead = await queue.reap_expired(pool, uid)
        reap_s = time.perf_counter() - started
        if len(dead) != n:
            raise NotExactlyOnce(f"reap_expired dead-lettered {len(dead)} of {n} expired tasks")
        return {"fresh_per_s": n / fresh_s, "rescue_per_s": n / rescue_s, "reap_per_s": n / reap_s}
    finally:
        await pool.close()


# ---------------------------------------------------------------------------------------------- pgqueuer


async def pgqueuer_run(dsn: str, n: int, consumers: int) -> dict[str, float]:
    from pgqueuer import AsyncpgDriver, Queries, QueueManager
    from pgqueuer.models import Job
    from pgqueuer.types import QueueExecutionMode

    admin = await asyncpg.connect(dsn)
    connections: list[asyncpg.Connection[Any]] = []
    try:
        queries = Queries(AsyncpgDriver(admin))
        await queries.install()
        started = time.perf_counter()
        for start in range(0, n, common.ENQUEUE_BATCH):
            size = min(n, start + common.ENQUEUE_BATCH) - start
            await queries.enqueue(["noop"] * size, [None] * size, [0] * size)
        enqueue_s = time.perf_counter() - started

        seen: list[int] = []
        managers = []
        for _ in range(consumers):
            conn = await asyncpg.connect(dsn)
            connections.append(conn)
            manager = QueueManager(Queries(AsyncpgDriver(conn)))

            @manager.entrypoint("noop")
            async def noop(job: Job) -> None:
                seen.append(job.id)

            managers.append(manager)
        with common.Meter(_database(dsn)) as meter:
            await asyncio.gather(*(m.run(mode=QueueExecutionMode.drain, batch_size=BATCH) for m in managers))
            used = meter.stop()
        left = await admin.fetchval("SELECT count(*) FROM pgqueuer")
        logged = await admin.fetchval("SELECT count(*) FROM pgqueuer_log WHERE status = 'successful'")
        check_exactly_once("pgqueuer", seen, n, logged if left == 0 else -left)
        return _rates(n, enqueue_s, used)
    finally:
        for conn in connections:
            if not conn.is_closed():
                await conn.close()
        await admin.close()


# ---------------------------------------------------------------------------------------------- procrastinate


async def procrastinate_run(dsn: str, n: int, consumers: int) -> dict[str, float]:
    import procrastinate

    conninfo = dsn.replace("postgresql+psycopg://", "postgresql://")
    app = procrastinate.App(
        connector=procrastinate.PsycopgConnector(conninfo=conninfo, min_size=2, max_size=consumers + 4)
    )
    seen: list[int] = []

    @app.task(name="noop")
    async def noop(i: int) -> None:
        seen.append(i)

    async with app.open_async():
        await app.schema_manager.apply_schema_async()
        started = time.perf_counter()
        for start in range(0, n, common.ENQUEUE_BATCH):
            await noop.batch_defer_async(*({"i": i} for i in range(start, min(n, start + common.ENQUEUE_BATCH))))
        enqueue_s = time.perf_counter() - started
        with common.Meter(_database(dsn)) as meter:
            await app.run_worker_async(concurrency=consumers, wait=False, install_signal_handlers=False)
            used = meter.stop()
    conn = await asyncpg.connect(dsn)
    try:
        succeeded = await conn.fetchval("SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'")
    finally:
        await conn.close()
    check_exactly_once("procrastinate", seen, n, succeeded)
    return _rates(n, enqueue_s, used)


RUNNERS = {
    "headrace": headrace_run,
    "pgqueuer": pgqueuer_run,
    "procrastinate": procrastinate_run,
}


# ---------------------------------------------------------------------------------------------- profiling


def _start_profiler() -> Any:
    from pyinstrument import Profiler

    profiler = Profiler(async_mode="disabled")
    profiler.start()
    return profiler


def _stop_profiler(profiler: Any, path: Path) -> None:
    profiler.stop()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(profiler.output_text(unicode=True, color=False, show_all=False))


# ---------------------------------------------------------------------------------------------- main


async def main() -> None:
    opts = common.parse_options("queue", __doc__.splitlines()[0], repeat=2, configure=configure)
    n = 300 if opts.smoke else opts.extra.tasks
    consumer_counts = [1, 4] if opts.smoke else opts.extra.consumers
    systems: list[str] = opts.extra.systems
    logging.getLogger().setLevel(logging.WARNING)
    logging.getLogger("pgqueuer").setLevel(logging.ERROR)
    logging.getLogger("procrastinate").setLevel(logging.ERROR)

    report = common.Report(
        "queue", "Queue: lease + ack throughput", opts, common.machine(["pgqueuer", "procrastinate", "psycopg"])
    )
    metrics = ("per_s", "client_cpu_ms_per_1k", "server_cpu_ms_per_1k")
    results: dict[str, dict[int, dict[str, common.Summary]]] = {s: {} for s in systems}
    enqueue: dict[str, list[float]] = {s: [] for s in systems}
    with common.embedded_postgres() as admin:
        report.machine["versions"]["postgres"] = await common.postgres_version(admin)
        counter = 0
        for consumers in consumer_counts:
            samples: dict[str, dict[str, list[float]]] = {s: {m: [] for m in metrics} for s in systems}
            for r in range(opts.repeat):
                for system in systems:  # interleaved, so drift in machine load hits every system alike
                    counter += 1
                    async with common.fresh_database(admin, f"q_{system.replace('-', '_')}_{counter}") as dsn:
                        result = await RUNNERS[system](dsn, n, consumers)
                    for m in metrics:
                        samples[system][m].append(result[m])
                    enqueue[system].append(result["enqueue_per_s"])
                    print(
                        f"{system:>14} consumers={consumers:<3} repeat={r} {result['per_s']:,.0f} tasks/s "
                        f"client {result['client_cpu_ms_per_1k']:.0f} ms/1k server {result['server_cpu_ms_per_1k']:.0f}"
                        " ms/1k",
                        flush=True,
                    )
            for system in systems:
                results[system][consumers] = {m: common.Summary.of(samples[system][m]) for m in metrics}

        rescue_n = 200 if opts.smoke else min(n, 10_000)
        rescue_consumers = 4 if opts.smoke else TARGET_CONSUMERS
        rescue: dict[str, list[float]] = {"fresh_per_s": [], "rescue_per_s": [], "reap_per_s": []}
        for r in range(opts.repeat):
            counter += 1
            async with common.fresh_database(admin, f"q_rescue_{counter}") as dsn:
                for key, value in (await headrace_rescue(dsn, rescue_n, rescue_consumers)).items():
                    rescue[key].append(value)
            print(f"rescue repeat={r} {rescue['rescue_per_s'][-1]:,.0f} tasks/s", flush=True)

        profile_path = None
        if not opts.smoke and not opts.extra.no_profile and "headrace" in systems:
            profile_path = opts.out / f"queue-profile-{report.stamp}.txt"
            counter += 1
            async with common.fresh_database(admin, f"q_profile_{counter}") as dsn:
                await headrace_run(dsn, n, TARGET_CONSUMERS, profile_to=profile_path)

    report.results = {
        "tasks": n,
        "by_consumers": {s: {str(c): v for c, v in by_c.items()} for s, by_c in results.items()},
        "enqueue_per_s": {s: common.Summary.of(v) for s, v in enqueue.items()},
        "rescue": {
            "tasks": rescue_n,
            "consumers": rescue_consumers,
            **{k: common.Summary.of(v) for k, v in rescue.items()},
        },
        "profile": profile_path,
    }
    throughput = {s: {c: v["per_s"] for c, v in by_c.items()} for s, by_c in results.items()}
    _write_section(report, results, enqueue, rescue, n, consumer_counts, rescue_n, rescue_consumers)
    _plot(report, throughput)
    report.write()


def _write_section(
    report: common.Report,
    results: dict[str, dict[int, dict[str, common.Summary]]],
    enqueue: dict[str, list[float]],
    rescue: dict[str, list[float]],
    n: int,
    consumer_counts: list[int],
    rescue_n: int,
    rescue_consumers: int,
) -> None:
    systems = list(results)
    ours = [s for s in systems if s.startswith("headrace")]
    peers = [s for s in systems if s in PEERS]
    lines = [
        f"Lease + ack of {n:,} no-op tasks, in tasks/s, median (min-max) of {report.options.repeat} runs, all in "
        "one asyncio process beside the embedded Postgres. Every run checked that each task was acknowledged "
        f"exactly once. `headrace` runs the lease path of `headrace worker` itself (`worker.leases.Holding`: "
        "prefetch from `workers.batchSize` and the lease time, one heartbeat for every held task, acks batched "
        f"with `ack_many`); pgqueuer dequeues its default batch of {BATCH}.",
        "",
    ]
    header = ["consumers", *systems, *(f"{s} ÷ best peer" for s in ours if peers)]
    rows = []
    for c in consumer_counts:
        row: list[object] = [c, *(results[s][c]["per_s"].fmt() for s in systems)]
        if peers:
            best = max(results[s][c]["per_s"].median for s in peers)
            row += [f"{results[s][c]['per_s'].median / best:.2f}×" for s in ours]
        rows.append(row)
    lines += common.table(header, rows)
    lines += [
        "CPU time per 1,000 tasks (ms), client process and Postgres backends, at each consumer count — less "
        "sensitive than throughput to what else the shared machine is running:",
        "",
    ]
    lines += common.table(
        ["consumers", *(f"{s} client / server" for s in systems)],
        [
            [
                c,
                *(
                    f"{results[s][c]['client_cpu_ms_per_1k'].median:,.0f} / "
                    f"{results[s][c]['server_cpu_ms_per_1k'].median:,.0f}"
                    for s in systems
                ),
            ]
            for c in consumer_counts
        ],
    )
    lines += common.table(
        ["enqueue (batches of 1,000)", *systems], [["tasks/s", *(common.Summary.of(enqueue[s]).fmt() for s in systems)]]
    )
    fresh, rescued, reap = (common.Summary.of(rescue[k]) for k in ("fresh_per_s", "rescue_per_s", "reap_per_s"))
    lines += [
        f"Lease expiry and rescue (headrace, {rescue_n:,} tasks, {rescue_consumers} consumers): leasing tasks whose "
        f"lease lapsed runs at {rescued.fmt()} tasks/s against {fresh.fmt()} tasks/s for fresh ones "
        f"(**{rescued.median / fresh.median:.2f}×**); `reap_expired` dead-letters {reap.fmt()} tasks/s.",
        "",
    ]
    if peers and TARGET_CONSUMERS in consumer_counts:
        best_peer = max(peers, key=lambda s: results[s][TARGET_CONSUMERS]["per_s"].median)
        best = results[best_peer][TARGET_CONSUMERS]["per_s"].median
        report.results["target"] = {}
        for s in ours:
            ratio = results[s][TARGET_CONSUMERS]["per_s"].median / best
            report.results["target"][s] = {"ratio": ratio, "best_peer": best_peer, "met": ratio >= TARGET_RATIO}
            lines += [
                f"- **Target** ≥ {TARGET_RATIO}× the best peer at {TARGET_CONSUMERS} consumers, `{s}`: {ratio:.2f}× "
                f"{best_peer} — {common.verdict(ratio >= TARGET_RATIO)}."
            ]
        lines.append("")
    profile = report.results.get("profile")
    if profile is not None and Path(profile).exists():
        text = Path(profile).read_text().splitlines()
        lines += [
            f"<details><summary>pyinstrument profile of the client process, headrace at {TARGET_CONSUMERS} "
            "consumers (top of the call tree)</summary>",
            "",
            "```",
            *text[:60],
            "```",
            "</details>",
            "",
        ]
    lines += [f"![queue throughput](benchmarks/{report.plot_path().name})", ""]
    report.lines += lines


def _plot(report: common.Report, throughput: dict[str, dict[int, common.Summary]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for system, by_c in throughput.items():
        xs = sorted(by_c)
        ys = [by_c[c].median for c in xs]
        err = [[by_c[c].median - by_c[c].low for c in xs], [by_c[c].high - by_c[c].median for c in xs]]
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=system)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(next(iter(throughput.values()))))
    ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.set_xlabel("concurrent consumers")
    ax.set_ylabel("lease + ack, tasks/s")
    ax.set_title("Queue throughput (median, min-max bars)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(report.plot_path(), dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    common.run(main)
